"""Flax NNX layers that learn their regularization: ``ConcreteDropout`` and ``L0Linear``.

Re-exported by ``jaxreg.nnx``. Both layers hold their regularization as ``nnx.Param``
state (a dropout rate's logit, the gates' ``log_alpha``) that the optimizer updates
with the weights. Their penalty depends on the parameters only, so NNX collects it
with a method rather than state written during the call: ``layer.penalty()``, and
``total_penalty(model)`` sums it over every such layer inside a model::

    def loss_fn(model):
        return data_loss(model(x)) + jaxreg.nnx.total_penalty(model)

Nothing is stored by the forward pass, so the penalty is the same under ``nnx.jit``,
``nnx.vmap`` and ``nnx.grad`` whatever was called before. ``deterministic`` follows
``nnx.Dropout``: at construction or call, ``model.train()`` / ``model.eval()`` and
``nnx.view(model, deterministic=...)``; keys come from the ``rngs`` given at
construction (the layer forks its stream) or at the call.
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
from jaxreg._checks import check_choice, errors_named, fail
from jaxreg._linen_learned import (
    DEFAULT_LOG_ALPHA_INIT,
    GATES,
    check_deterministic,
    check_initial_rate,
    rate_logit_init,
)

Array = jax.Array
RngsLike = nnx.Rngs | nnx.RngStream | Array | None


class _Noisy(nnx.Module):
    """The NNX plumbing of a layer that draws noise: deterministic flag, stream, key."""

    def _init_noise(self, deterministic: bool | None, rng_collection: str, rngs: Any) -> None:
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, nnx.Rngs):
            self.rngs = self._stream(rngs).fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise fail(
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
        if self.rng_collection not in rngs and "default" not in rngs:
            raise self._missing()
        return rngs[self.rng_collection]

    def _deterministic(self, deterministic: bool | None) -> bool:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise fail(
                self._name(),
                "deterministic is None both in the layer and in the call. Pass "
                "deterministic=True/False to either, or use model.train() / model.eval() "
                "or nnx.view(model, deterministic=...).",
            )
        return check_deterministic(self._name(), deterministic)

    def _key(self, rngs: RngsLike) -> Any:
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            return self._stream(rngs)()
        if isinstance(rngs, nnx.RngStream):
            return rngs()
        if rngs is None:
            raise self._missing()
        return rngs  # a key (the core validates it)

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the layer uses its inference computation.
        """
        if deterministic is not None:
            self.deterministic = deterministic


class ConcreteDropout(_Noisy):
    """Concrete dropout with a learned rate on the inputs of ``layer``, and its penalty.

    The call drops the inputs with ``jaxreg.concrete_dropout`` at rate
    ``sigmoid(rate_logit)`` (an ``nnx.Param``) and applies ``layer``; ``penalty()`` is
    ``jaxreg.concrete_dropout_penalty(layer.kernel, rate=...)``. The layer wraps the
    one it regularizes (as the authors' Keras and PyTorch wrappers) because the
    penalty needs that layer's kernel, whose weight decay it is: add no L2 penalty on
    it too. When deterministic the inputs go to ``layer`` unchanged (inverted scaling);
    MC dropout keeps ``deterministic=False`` at test time.

    Args:
      layer: the layer receiving the dropped inputs, with a ``kernel`` parameter whose
        axis -2 is its input features (``nnx.Linear``, ``nnx.Conv``).
      num_examples: ``N``, the number of training examples (see the penalty).
      length_scale: the prior length-scale ``l``.
      precision: ``tau`` for a mean-squared-error loss, None for a log-likelihood loss.
      initial_rate: the rate at initialisation, in (0, 1) (the authors use 0.1).
      per_unit: one rate per input feature (``kernel.shape[-2]``) instead of one.
      temperature: the relaxation's temperature (0.1 in the paper).
      broadcast_dims: axes sharing one mask value (``(1, 2)`` for NHWC maps).
      deterministic: if True, no dropout; ``model.train()`` sets it False.
      rng_collection: the stream forked from ``rngs`` (``'dropout'``).
      rngs: ``nnx.Rngs`` or ``nnx.RngStream`` to fork the noise stream from, or None
        (then pass ``rngs=`` at call time).

    References:
      Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017,
      https://arxiv.org/abs/1705.07832.
    """

    def __init__(
        self,
        layer: nnx.Module,
        *,
        num_examples: int | float | Array,
        length_scale: float | Array,
        precision: float | Array | None = None,
        initial_rate: float = 0.1,
        per_unit: bool = False,
        temperature: float | Array = 0.1,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self._init_noise(deterministic, rng_collection, rngs)
        kernel = getattr(layer, "kernel", None)
        if not isinstance(kernel, nnx.Variable) or kernel.ndim < 2:
            raise fail(
                self._name(),
                f"layer must have a kernel parameter of rank >= 2 (nnx.Linear, nnx.Conv), "
                f"got {type(layer).__name__}.",
                exc=TypeError,
            )
        rate = check_initial_rate(self._name(), initial_rate)
        shape = (kernel.shape[-2],) if per_unit else ()
        self.layer = layer
        self.rate_logit = nnx.Param(rate_logit_init(rate)(None, shape))
        self.num_examples, self.length_scale, self.precision = (
            num_examples,
            length_scale,
            precision,
        )
        self.temperature, self.broadcast_dims = temperature, tuple(broadcast_dims)
        with errors_named(self._name()):  # checks the hyperparameters now
            self.penalty()

    @property
    def rate(self) -> Array:
        """The current drop rate ``sigmoid(rate_logit)``: a scalar or one per input."""
        return jax.nn.sigmoid(self.rate_logit[...])

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Drops ``inputs`` unless deterministic, then applies ``layer``."""
        if not self._deterministic(deterministic):
            with errors_named(self._name()):
                inputs = jaxreg.concrete_dropout(
                    self._key(rngs),
                    inputs,
                    rate=self.rate,
                    temperature=self.temperature,
                    broadcast_dims=self.broadcast_dims,
                )
        return self.layer(inputs)

    def penalty(self) -> Array:
        """``jaxreg.concrete_dropout_penalty`` of ``layer.kernel`` at the current rate."""
        with errors_named(self._name()):
            return jaxreg.concrete_dropout_penalty(
                self.layer.kernel[...],
                rate=self.rate,
                num_examples=self.num_examples,
                length_scale=self.length_scale,
                precision=self.precision,
            )


class L0Linear(_Noisy):
    """``nnx.Linear`` with hard-concrete gates on its output units or weights (L0).

    Training multiplies each output unit (``gate="units"``: structured pruning, bias
    included) or each weight (``gate="weights"``) by a gate from
    ``jaxreg.hard_concrete_gate``; when deterministic it uses
    ``jaxreg.hard_concrete_gate_inference``, exactly 0 for pruned gates. ``penalty()``
    is ``jaxreg.l0_penalty(log_alpha, strength=strength, ...)``, the expected number
    of non-zero gates times ``strength``; ``num_kept()`` counts the gates that are
    non-zero at test time. ``kernel`` and ``bias`` are ``nnx.Linear``'s (same
    initialisers and keys from ``rngs.params``); ``log_alpha`` has shape
    ``(out_features,)`` or ``(in_features, out_features)``.

    Args:
      in_features: number of input features.
      out_features: number of output features.
      gate: ``"units"`` (one gate per output unit) or ``"weights"`` (one per weight).
      use_bias: whether to add a bias (gated with its unit for ``gate="units"``).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: dtype of the parameters.
      precision: matmul precision.
      kernel_init: kernel initializer (nnx.Linear's default).
      bias_init: bias initializer (zeros).
      log_alpha_init: initializer of ``log_alpha``; the default ``normal(0.01)`` is the
        authors' (``droprate_init=0.5``): test-time gates start near 0.5.
      beta: the gates' temperature (2/3 in the paper).
      limits: ``(gamma, zeta)``, the stretch interval (``(-0.1, 1.1)``).
      strength: the L0 coefficient ``lambda`` of ``penalty()`` (e.g. 0.1 / N).
      per_example: for ``gate="units"``, one gate per example instead of one per batch.
      deterministic: if True, the test-time gates are used (``model.eval()``).
      rng_collection: the stream forked from ``rngs`` for the gates (``'dropout'``).
      rngs: ``nnx.Rngs`` with a ``params`` (or ``default``) stream for the
        initialisers and a ``dropout`` (or ``default``) stream for the gates.

    References:
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018, https://arxiv.org/abs/1712.01312.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gate: str = "units",
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        log_alpha_init: Callable[..., Array] = DEFAULT_LOG_ALPHA_INIT,
        beta: float | Array = 2 / 3,
        limits: tuple[float, float] = (-0.1, 1.1),
        strength: float | Array = 1.0,
        per_example: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        name = f"nnx.{type(self).__name__}"
        check_choice(name, "gate", gate, GATES)
        if per_example and gate != "units":
            raise fail(name, "per_example=True needs gate='units'.")
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias = nnx.data(None)
        if use_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
        shape = (out_features,) if gate == "units" else (in_features, out_features)
        self.log_alpha = nnx.Param(log_alpha_init(rngs.params(), shape, param_dtype))
        self._init_noise(deterministic, rng_collection, rngs)
        self.in_features, self.out_features, self.gate = in_features, out_features, gate
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.precision, self.per_example = precision, per_example
        self.beta, self.limits, self.strength = beta, tuple(limits), strength
        with errors_named(self._name()):  # checks the hyperparameters now
            self.penalty()

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """The gated linear layer."""
        log_alpha = self.log_alpha[...]
        units = self.gate == "units"
        with errors_named(self._name()):
            if self._deterministic(deterministic):
                z = jaxreg.hard_concrete_gate_inference(log_alpha, limits=self.limits)
            else:
                shape = log_alpha.shape
                if self.per_example:
                    shape = (*jnp.shape(inputs)[:-1], self.out_features)
                z = jaxreg.hard_concrete_gate(
                    self._key(rngs), log_alpha, beta=self.beta, limits=self.limits, shape=shape
                )
        bias = None if self.bias is None else self.bias[...]
        inputs, kernel, bias, z = dtypes.promote_dtype(
            (inputs, self.kernel[...], bias, z), dtype=self.dtype
        )
        if not units:
            kernel = kernel * z
        dims = (((inputs.ndim - 1,), (0,)), ((), ()))
        y = lax.dot_general(inputs, kernel, dims, precision=self.precision)
        if bias is not None:
            y = y + bias
        return y * z if units else y

    def penalty(self) -> Array:
        """``jaxreg.l0_penalty`` of ``log_alpha``: ``strength`` times the expected L0."""
        with errors_named(self._name()):
            return jaxreg.l0_penalty(
                self.log_alpha[...], strength=self.strength, beta=self.beta, limits=self.limits
            )

    def num_kept(self) -> Array:
        """How many gates (units or weights) are non-zero at test time."""
        gates = jaxreg.hard_concrete_gate_inference(self.log_alpha[...], limits=self.limits)
        return jnp.sum(gates > 0)


def total_penalty(model: nnx.Module) -> Array:
    """The sum of ``penalty()`` over every ``ConcreteDropout`` and ``L0Linear`` in ``model``.

    Add it to the mean training loss. A model without such layers gives 0.

    Args:
      model: an NNX module (the layers may be nested anywhere inside it).

    Returns:
      A float32 scalar.

    References:
      Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017.
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018.
    """
    total = jnp.zeros((), jnp.float32)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, (ConcreteDropout, L0Linear)):
            total = total + node.penalty()
    return total
