"""Flax NNX layers over jaxreg's core ops: ``from jaxreg import nnx as jnnx``.

``jnnx.Dropout`` follows ``flax.nnx.Dropout``: ``rngs=nnx.Rngs(dropout=...)`` at
construction (the layer forks its own stream, as flax's does), an optional call-time
``rngs=`` (an ``nnx.Rngs``, an ``RngStream`` or a key) that takes precedence,
``deterministic`` at construction or call, ``model.train()`` / ``model.eval()`` and
``nnx.view(model, deterministic=...)``. For the same ``Rngs`` it returns exactly what
``nnx.Dropout`` returns, also in a model with several dropout layers. ``rate`` may be a
JAX array or an ``nnx.Variable`` holding one: it is then model state, traced under
``nnx.jit`` and ``nnx.vmap`` (an ensemble whose members have different rates).

Every layer is called as ``layer(inputs, *, deterministic=None, rngs=None)``; True
returns ``inputs`` unchanged (``DropConnectLinear``: its inference output). Each is
NNX's plumbing around one call of a public core op. Importing this module imports
flax; ``import jaxreg`` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes
from flax.nnx.nn.linear import default_bias_init, default_kernel_init
from jax import lax

import jaxreg
from jaxreg import _flax_common as common

__all__ = [
    "AlphaDropout",
    "DropBlock",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "SpatialDropout",
    "VariationalDropout",
]

Array = jax.Array
Rate = float | Array | nnx.Variable
RngsLike = nnx.Rngs | nnx.RngStream | Array | None


class _Layer(nnx.Module):
    """NNX plumbing shared by the layers: rate, deterministic, rng stream, key fetch."""

    def __init__(self, rate: Rate, deterministic: bool | None, rng_collection: str, rngs):
        self.rate = rate
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        common.draws(self._name(), self._rate(), False)  # validates a concrete rate now
        if isinstance(rngs, nnx.Rngs):
            self.rngs = self._stream(rngs).fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise common.fail(
                self._name(),
                f"rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}.",
                exc=TypeError,
            )

    def _name(self) -> str:
        return f"nnx.{type(self).__name__}"

    def _missing(self) -> Exception:
        how = f"rngs=nnx.Rngs({self.rng_collection}=seed) to the layer or to the call"
        return common.missing_rng(self._name(), self.rng_collection, how)

    def _stream(self, rngs: nnx.Rngs) -> nnx.RngStream:
        """The layer's stream in ``rngs`` (``'default'`` if absent, as in flax)."""
        if self.rng_collection not in rngs and "default" not in rngs:
            raise self._missing()
        return rngs[self.rng_collection]

    def _rate(self) -> float | Array:
        return self.rate[...] if isinstance(self.rate, nnx.Variable) else self.rate

    def _key(self, deterministic: bool | None, rngs: RngsLike, draw_anyway: bool = False):
        """``(deterministic, key)``; a key is taken from a stream only if the call draws."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise common.fail(
                self._name(),
                "deterministic is None both in the layer and in the call. Pass "
                "deterministic=True/False to either, or use model.train() / model.eval() "
                "or nnx.view(model, deterministic=...).",
            )
        if not common.draws(self._name(), self._rate(), False if draw_anyway else deterministic):
            return deterministic, None
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            return deterministic, self._stream(rngs)()
        if isinstance(rngs, nnx.RngStream):
            return deterministic, rngs()
        if rngs is None:
            raise self._missing()
        return deterministic, rngs  # a key (the core validates it)

    def _apply(self, op: Callable[..., Array], inputs, deterministic, rngs, **options):
        """The body of every dropout-like layer: ``inputs`` if deterministic, else the op."""
        deterministic, key = self._key(deterministic, rngs)
        if deterministic:
            return inputs
        with common.named_errors(self._name()):
            return op(key, inputs, rate=self._rate(), **options)

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the layer returns its inputs (inference).
        """
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Layer):
    """Dropout as ``flax.nnx.Dropout``, same masks, with a rate that may be traced.

    Args:
      rate: probability of dropping a unit (not the keep probability): a Python number
        in [0, 1], a scalar JAX array or an ``nnx.Variable`` holding one.
      broadcast_dims: axes that share one mask value.
      sampler: ``"exact"`` (flax's masks) or ``"fast"`` (see ``jaxreg.dropout``).
      deterministic: if True, inputs are returned as they are; ``model.train()`` sets
        it False, ``model.eval()`` True.
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` the layer forks its stream from, or None
        (then pass ``rngs=`` at call time).

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: A Simple Way
      to Prevent Neural Networks from Overfitting." JMLR 15, 2014.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        broadcast_dims: Sequence[int] = (),
        sampler: str = "exact",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)
        self.broadcast_dims = broadcast_dims
        self.sampler = sampler

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(
            jaxreg.dropout,
            inputs,
            deterministic,
            rngs,
            broadcast_dims=self.broadcast_dims,
            sampler=self.sampler,
        )


class SpatialDropout(_Layer):
    """Drops whole feature maps (``jaxreg.spatial_dropout``), channels-last by default.

    Args:
      rate: probability of dropping a feature map; number, array or ``nnx.Variable``.
      channel_axis: the channel axis of ``(batch, *spatial, channels)`` inputs.
      sampler: ``"exact"`` or ``"fast"``.
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Tompson, Goroshin, Jain, LeCun, Bregler. "Efficient Object Localization Using
      Convolutional Networks." CVPR 2015.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        channel_axis: int = -1,
        sampler: str = "exact",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)
        self.channel_axis = channel_axis
        self.sampler = sampler

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(
            jaxreg.spatial_dropout,
            inputs,
            deterministic,
            rngs,
            channel_axis=self.channel_axis,
            sampler=self.sampler,
        )


class VariationalDropout(_Layer):
    """One dropout mask per sequence, shared over time (``jaxreg.variational_dropout``).

    Args:
      rate: probability of dropping a unit; number, array or ``nnx.Variable``.
      time_axis: the axis the mask is shared along.
      sampler: ``"exact"`` or ``"fast"``.
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Gal, Ghahramani. "A Theoretically Grounded Application of Dropout in Recurrent
      Neural Networks." NeurIPS 2016.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        time_axis: int = 1,
        sampler: str = "exact",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)
        self.time_axis = time_axis
        self.sampler = sampler

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(
            jaxreg.variational_dropout,
            inputs,
            deterministic,
            rngs,
            time_axis=self.time_axis,
            sampler=self.sampler,
        )


class GaussianDropout(_Layer):
    """Multiplicative ``N(1, rate / (1 - rate))`` noise (``jaxreg.gaussian_dropout``).

    Args:
      rate: the equivalent drop probability; number, array or ``nnx.Variable``.
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014, section 10.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(jaxreg.gaussian_dropout, inputs, deterministic, rngs)


class AlphaDropout(_Layer):
    """Dropout for SELU networks, keeping zero mean and unit variance (``alpha_dropout``).

    Args:
      rate: probability of dropping a unit; number, array or ``nnx.Variable``.
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Klambauer, Unterthiner, Mayr, Hochreiter. "Self-Normalizing Neural Networks."
      NeurIPS 2017.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(jaxreg.alpha_dropout, inputs, deterministic, rngs)


class DropPath(_Layer):
    """Stochastic depth: drops a residual branch per example (``jaxreg.drop_path``).

    Use it on the branch: ``x + self.drop_path(branch(x))``.

    Args:
      rate: probability of dropping the branch; number, array or ``nnx.Variable``.
      mode: ``"row"`` (one draw per example, axis 0) or ``"batch"`` (one for all).
      inverted: scale kept branches by 1/(1 - rate).
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Huang, Sun, Liu, Sedra, Weinberger. "Deep Networks with Stochastic Depth."
      ECCV 2016.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        mode: str = "row",
        inverted: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)
        self.mode = mode
        self.inverted = inverted

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(
            jaxreg.drop_path, inputs, deterministic, rngs, mode=self.mode, inverted=self.inverted
        )


class DropBlock(_Layer):
    """Drops contiguous blocks of feature maps (``jaxreg.dropblock``).

    Args:
      rate: target drop fraction; number, array or ``nnx.Variable``.
      block_size: block width, one int or one per spatial axis.
      channel_axis: the channel axis (channels-last by default).
      shared_channels: one block pattern for all channels of an example.
      deterministic: if True, inputs are returned as they are (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork from, or None (pass at call).

    References:
      Ghiasi, Lin, Le. "DropBlock: A regularization method for convolutional
      networks." NeurIPS 2018.
    """

    def __init__(
        self,
        rate: Rate,
        *,
        block_size: int | Sequence[int],
        channel_axis: int = -1,
        shared_channels: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        super().__init__(rate, deterministic, rng_collection, rngs)
        self.block_size = block_size
        self.channel_axis = channel_axis
        self.shared_channels = shared_channels

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return self._apply(
            jaxreg.dropblock,
            inputs,
            deterministic,
            rngs,
            block_size=self.block_size,
            channel_axis=self.channel_axis,
            shared_channels=self.shared_channels,
        )


class DropConnectLinear(_Layer):
    """``nnx.Linear`` with DropConnect on its kernel (``jaxreg.drop_connect_dense``).

    Same arguments, parameters (``kernel``, ``bias``), shapes and initialisers as
    ``flax.nnx.Linear``, drawing the same keys from ``rngs.params``, so its state loads
    an ``nnx.Linear``'s. When deterministic it is that ``nnx.Linear``
    (``inference="scale"``, exact for the inverted masks it trains with), or the paper's
    Gaussian moment matching (``inference="moments"``,
    ``jaxreg.drop_connect_inference``), which averages ``activation`` over samples.

    Args:
      in_features: number of input features.
      out_features: number of output features.
      use_bias: whether to add a bias (never dropped).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: dtype of the parameters.
      precision: matmul precision (``jax.lax.Precision``).
      kernel_init: kernel initializer (nnx.Linear's default).
      bias_init: bias initializer (zeros).
      dot_general: ``jax.lax.dot_general`` or a replacement (shared mask only).
      rate: probability of dropping a weight; number, array or ``nnx.Variable``.
      per_example: one mask per example (True) or one per batch (False).
      inference: ``"scale"`` (plain Linear) or ``"moments"``.
      activation: optional elementwise activation applied to the output in every mode;
        required for ``inference="moments"``.
      num_samples: samples per unit for ``inference="moments"``.
      deterministic: if True, the inference computation is used (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` for the masks (``'dropout'``).
      rngs: ``nnx.Rngs`` with a ``params`` (or ``default``) stream for the
        initialisers and a ``dropout`` (or ``default``) stream for the masks.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        dot_general: Callable[..., Array] = lax.dot_general,
        rate: Rate = 0.5,
        per_example: bool = False,
        inference: str = "scale",
        activation: Callable[[Array], Array] | None = None,
        num_samples: int = 1000,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias = nnx.data(None)
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        super().__init__(rate, deterministic, rng_collection, rngs)
        common.check_inference(self._name(), inference, activation)
        self.in_features, self.out_features = in_features, out_features
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.precision, self.dot_general = precision, dot_general
        self.per_example, self.inference = per_example, inference
        self.activation, self.num_samples = activation, num_samples

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer (arguments: see the module docstring)."""
        bias = None if self.bias is None else self.bias[...]
        inputs, kernel, bias = dtypes.promote_dtype(
            (inputs, self.kernel[...], bias), dtype=self.dtype
        )
        moments = common.check_inference(self._name(), self.inference, self.activation)
        deterministic, key = self._key(deterministic, rngs, draw_anyway=moments)
        with common.named_errors(self._name()):
            return common.dense(
                key,
                inputs,
                kernel,
                bias,
                rate=self._rate(),
                deterministic=deterministic,
                moments=moments,
                activation=self.activation,
                num_samples=self.num_samples,
                per_example=self.per_example,
                precision=self.precision,
                dot_general=self.dot_general,
            )


from jaxreg._nnx_learned import ConcreteDropout, L0Linear, total_penalty  # noqa: E402, F401

__all__ = sorted([*__all__, "ConcreteDropout", "L0Linear", "total_penalty"])
