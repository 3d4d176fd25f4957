"""Flax linen layers over jaxreg's core ops: ``from jaxreg import linen as jnn``.

``jnn.Dropout`` has ``flax.linen.Dropout``'s constructor and call signature and returns
exactly what it returns for the same ``rngs``, also inside a model with several dropout
layers (the rng stream is consumed call for call as flax does: nothing is drawn when
deterministic or at a Python rate of 0 or 1). Unlike flax's, ``rate`` may be a JAX
array, so a model's ``apply`` vmapped over rates is one compiled program.

Every layer is called as ``layer(inputs, deterministic=None, rng=None)``:
``deterministic`` overrides the attribute (``nn.merge_param``: exactly one of the two
is set) and True returns ``inputs`` unchanged (``DropConnectDense``: its inference
output); ``rng`` is an optional key, by default ``make_rng(rng_collection)``.

Every layer is flax's plumbing (``nn.merge_param`` for ``deterministic``, ``make_rng``
for the key) around one call of a public core op; the masks are the core's. Importing
this module imports flax; ``import jaxreg`` does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

import jaxreg
from jaxreg import _flax_common as common

__all__ = [
    "AlphaDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "SpatialDropout",
    "VariationalDropout",
]

Array = jax.Array
Rate = float | Array


def _key(module: nn.Module, deterministic: bool | None, rng: Any, draw_anyway: bool = False):
    """``(deterministic, key)`` for a call; the key is None where nothing is drawn.

    ``deterministic`` is merged flax's way; ``make_rng`` is called only when the layer
    draws (or ``draw_anyway``, for a sampled inference), never for a Python rate of 0
    or 1, so later layers get the keys they get under flax.
    """
    layer = f"linen.{type(module).__name__}"
    deterministic = nn.merge_param("deterministic", module.deterministic, deterministic)
    if not common.draws(layer, module.rate, False if draw_anyway else deterministic):
        return deterministic, None
    if rng is not None:
        return deterministic, rng
    collection = module.rng_collection
    if not (module.has_rng(collection) or module.has_rng("params")):
        how = f"rngs={{{collection!r}: key}} to apply (or init)"
        raise common.missing_rng(layer, collection, how)
    return deterministic, module.make_rng(collection)


def _apply(module: nn.Module, op: Callable[..., Array], inputs, deterministic, rng, **options):
    """The body of every dropout-like layer: ``inputs`` if deterministic, else the op."""
    deterministic, key = _key(module, deterministic, rng)
    if deterministic:
        return inputs
    with common.named_errors(f"linen.{type(module).__name__}"):
        return op(key, inputs, rate=module.rate, **options)


class Dropout(nn.Module):
    """Dropout as ``flax.linen.Dropout``, same masks, with a rate that may be traced.

    Attributes:
      rate: probability of dropping a unit (not the keep probability): a Python number
        in [0, 1] or a scalar JAX array (traced under ``jit``/``vmap``).
      broadcast_dims: axes that share one mask value.
      deterministic: if True, inputs are returned as they are (see ``__call__``).
      rng_collection: the rng stream the key comes from (``'dropout'``).
      sampler: ``"exact"`` (flax's masks) or ``"fast"`` (see ``jaxreg.dropout``).

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: A Simple Way
      to Prevent Neural Networks from Overfitting." JMLR 15, 2014.
    """

    rate: Rate
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    sampler: str = "exact"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(
            self,
            jaxreg.dropout,
            inputs,
            deterministic,
            rng,
            broadcast_dims=self.broadcast_dims,
            sampler=self.sampler,
        )


class SpatialDropout(nn.Module):
    """Drops whole feature maps (``jaxreg.spatial_dropout``), channels-last by default.

    Attributes:
      rate: probability of dropping a feature map; Python number or (traced) array.
      channel_axis: the channel axis of ``(batch, *spatial, channels)`` inputs.
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.
      sampler: ``"exact"`` or ``"fast"``.

    References:
      Tompson, Goroshin, Jain, LeCun, Bregler. "Efficient Object Localization Using
      Convolutional Networks." CVPR 2015.
    """

    rate: Rate
    channel_axis: int = -1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    sampler: str = "exact"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(
            self,
            jaxreg.spatial_dropout,
            inputs,
            deterministic,
            rng,
            channel_axis=self.channel_axis,
            sampler=self.sampler,
        )


class VariationalDropout(nn.Module):
    """One dropout mask per sequence, shared over time (``jaxreg.variational_dropout``).

    Attributes:
      rate: probability of dropping a unit; Python number or (traced) array.
      time_axis: the axis the mask is shared along.
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.
      sampler: ``"exact"`` or ``"fast"``.

    References:
      Gal, Ghahramani. "A Theoretically Grounded Application of Dropout in Recurrent
      Neural Networks." NeurIPS 2016.
    """

    rate: Rate
    time_axis: int = 1
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    sampler: str = "exact"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(
            self,
            jaxreg.variational_dropout,
            inputs,
            deterministic,
            rng,
            time_axis=self.time_axis,
            sampler=self.sampler,
        )


class GaussianDropout(nn.Module):
    """Multiplicative ``N(1, rate / (1 - rate))`` noise (``jaxreg.gaussian_dropout``).

    Attributes:
      rate: the equivalent drop probability; Python number or (traced) array.
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014, section 10.
    """

    rate: Rate
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(self, jaxreg.gaussian_dropout, inputs, deterministic, rng)


class AlphaDropout(nn.Module):
    """Dropout for SELU networks, keeping zero mean and unit variance (``alpha_dropout``).

    Attributes:
      rate: probability of dropping a unit; Python number or (traced) array.
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.

    References:
      Klambauer, Unterthiner, Mayr, Hochreiter. "Self-Normalizing Neural Networks."
      NeurIPS 2017.
    """

    rate: Rate
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(self, jaxreg.alpha_dropout, inputs, deterministic, rng)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per example (``jaxreg.drop_path``).

    Use it on the branch: ``x + DropPath(rate)(branch(x), deterministic=...)``.

    Attributes:
      rate: probability of dropping the branch; Python number or (traced) array.
      mode: ``"row"`` (one draw per example, axis 0) or ``"batch"`` (one for all).
      inverted: scale kept branches by 1/(1 - rate).
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.

    References:
      Huang, Sun, Liu, Sedra, Weinberger. "Deep Networks with Stochastic Depth."
      ECCV 2016.
    """

    rate: Rate
    mode: str = "row"
    inverted: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(
            self,
            jaxreg.drop_path,
            inputs,
            deterministic,
            rng,
            mode=self.mode,
            inverted=self.inverted,
        )


class DropBlock(nn.Module):
    """Drops contiguous blocks of feature maps (``jaxreg.dropblock``).

    Attributes:
      rate: target drop fraction; Python number or (traced) array.
      block_size: block width, one int or one per spatial axis.
      channel_axis: the channel axis (channels-last by default).
      shared_channels: one block pattern for all channels of an example.
      deterministic: if True, inputs are returned as they are.
      rng_collection: the rng stream the key comes from.

    References:
      Ghiasi, Lin, Le. "DropBlock: A regularization method for convolutional
      networks." NeurIPS 2018.
    """

    rate: Rate
    block_size: int | Sequence[int]
    channel_axis: int = -1
    shared_channels: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        return _apply(
            self,
            jaxreg.dropblock,
            inputs,
            deterministic,
            rng,
            block_size=self.block_size,
            channel_axis=self.channel_axis,
            shared_channels=self.shared_channels,
        )


class DropConnectDense(nn.Module):
    """``nn.Dense`` with DropConnect on its kernel (``jaxreg.drop_connect_dense``).

    Same fields, parameter names, shapes and initialisers as ``flax.linen.Dense``, so
    an ``nn.Dense`` checkpoint loads (linen names modules after their class: name the
    layer, e.g. ``DropConnectDense(..., name="Dense_0")``, to reuse an auto-named
    checkpoint). When deterministic it is that ``nn.Dense`` (``inference="scale"``,
    exact for the inverted masks it trains with), or the paper's Gaussian moment
    matching (``inference="moments"``, ``jaxreg.drop_connect_inference``), which
    averages ``activation`` over samples and so needs ``activation`` and a key.

    Attributes:
      features: number of output features.
      use_bias: whether to add a bias (never dropped).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: dtype of the parameters.
      precision: matmul precision (``jax.lax.Precision``).
      kernel_init: kernel initializer (flax's default, LeCun normal).
      bias_init: bias initializer (zeros).
      dot_general: optional ``jax.lax.dot_general`` replacement (shared mask only).
      rate: probability of dropping a weight; Python number or (traced) array.
      per_example: one mask per example (True) or one per batch (False).
      inference: ``"scale"`` (plain Dense) or ``"moments"``.
      activation: optional elementwise activation applied to the output in every mode;
        required for ``inference="moments"``.
      num_samples: samples per unit for ``inference="moments"``.
      deterministic: if True, the inference computation is used (see above).
      rng_collection: the rng stream the key comes from.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013.
    """

    features: int
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    dot_general: Callable[..., Array] | None = None
    rate: Rate = 0.5
    per_example: bool = False
    inference: str = "scale"
    activation: Callable[[Array], Array] | None = None
    num_samples: int = 1000
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic (arguments: see the module docstring)."""
        shape = (jnp.shape(inputs)[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        layer = f"linen.{type(self).__name__}"
        moments = common.check_inference(layer, self.inference, self.activation)
        deterministic, key = _key(self, deterministic, rng, draw_anyway=moments)
        matmul = {"precision": self.precision, "dot_general": self.dot_general}
        with common.named_errors(layer):
            return common.dense(
                key,
                inputs,
                kernel,
                bias,
                rate=self.rate,
                deterministic=deterministic,
                moments=moments,
                activation=self.activation,
                num_samples=self.num_samples,
                per_example=self.per_example,
                **matmul,
            )


from jaxreg._linen_learned import ConcreteDropout, L0Dense  # noqa: E402, F401

__all__ = sorted([*__all__, "ConcreteDropout", "L0Dense"])
