"""Flax linen layers that learn their regularization: ``ConcreteDropout`` and ``L0Dense``.

Re-exported by ``jaxreg.linen``. Both layers hold their regularization as parameters
(a dropout rate's logit, the gates' ``log_alpha``) that the optimizer updates with the
weights, and both report a penalty that must be added to the loss. The penalty depends
on the parameters only, and is collected linen's way: each call ``sow``s it into the
``"losses"`` collection (``loss_collection``), one scalar per layer, replaced (not
appended) at every call, so a layer called twice is counted once::

    y, state = model.apply(variables, x, rngs={"dropout": key}, mutable=["losses"])
    loss = data_loss(y) + sum(jax.tree.leaves(state["losses"]))

Without ``mutable=["losses"]`` nothing is collected (flax's ``sow`` rule). At
initialisation ``model.init`` returns the collection too; drop it from the variables
you train (``variables = {"params": variables["params"]}``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

import jaxreg
from jaxreg import _flax_common as common
from jaxreg._checks import check_choice, errors_named, fail, is_python_number

Array = jax.Array
GATES = ("units", "weights")
# The authors' initialisation (droprate_init=0.5): log_alpha ~ N(0, 0.01**2).
DEFAULT_LOG_ALPHA_INIT = nn.initializers.normal(0.01)


def check_initial_rate(layer: str, rate: Any) -> float:
    """A Python number strictly between 0 and 1 (a logit must exist)."""
    if not is_python_number(rate) or not 0.0 < float(rate) < 1.0:
        raise fail(layer, f"initial_rate must be a Python number in (0, 1), got {rate!r}.")
    return float(rate)


def rate_logit_init(rate: float) -> Callable[..., Array]:
    """An initializer filling ``log(rate) - log(1 - rate)``."""
    logit = math.log(rate) - math.log1p(-rate)
    return lambda key, shape, dtype=jnp.float32: jnp.full(shape, logit, dtype)


def check_deterministic(layer: str, deterministic: Any) -> bool:
    """``deterministic`` decides whether noise is drawn: a Python bool only."""
    if not isinstance(deterministic, bool):
        raise fail(
            layer,
            f"deterministic must be a Python bool, got {deterministic!r} "
            f"(a {type(deterministic).__name__}): it decides whether noise is drawn.",
            exc=TypeError,
        )
    return deterministic


def _replace(_: Any, new: Array) -> Array:
    return new


def _key(module: nn.Module, rng: Any) -> Any:
    """The call's key: ``rng`` if given, else ``make_rng(rng_collection)``."""
    if rng is not None:
        return rng
    collection = module.rng_collection
    if not (module.has_rng(collection) or module.has_rng("params")):
        layer = f"linen.{type(module).__name__}"
        how = f"rngs={{{collection!r}: key}} to apply (or init)"
        raise common.missing_rng(layer, collection, how)
    return module.make_rng(collection)


class ConcreteDropout(nn.Module):
    """Concrete dropout with a learned rate on the inputs of ``layer``, and its penalty.

    The call drops the inputs with ``jaxreg.concrete_dropout`` at rate
    ``sigmoid(rate_logit)`` (a parameter of this module), applies ``layer``, and sows
    ``jaxreg.concrete_dropout_penalty(layer's kernel, rate=...)`` into
    ``loss_collection`` under the name ``"concrete_dropout"``. The layer wraps the one
    it regularizes (as the authors' Keras and PyTorch wrappers) because the penalty
    needs that layer's kernel. When deterministic the inputs go to ``layer``
    unchanged (inverted scaling: no rescaling at inference); MC dropout keeps
    ``deterministic=False`` at test time. The rate is ``jax.nn.sigmoid(params[...]
    ["rate_logit"])``.

    Attributes:
      layer: the layer receiving the dropped inputs, with a ``kernel`` parameter whose
        axis -2 is its input features (``nn.Dense``, ``nn.Conv``). Its parameters
        live where linen puts them: under the module that constructs it (``Dense_0``
        of the parent when built inside the parent's ``compact`` method; ``layer``
        of this module when built outside one). The penalty's weight term is its
        weight decay: add no L2 penalty on it too.
      num_examples: ``N``, the number of training examples (see the penalty).
      length_scale: the prior length-scale ``l``.
      precision: ``tau`` for a mean-squared-error loss, None for a log-likelihood loss.
      initial_rate: the rate at initialisation, in (0, 1) (the authors use 0.1).
      per_unit: one rate per input feature (``inputs.shape[-1]``) instead of one.
      temperature: the relaxation's temperature (0.1 in the paper).
      broadcast_dims: axes sharing one mask value, e.g. ``(1, 2)`` for NHWC maps
        before a conv (the authors' spatial concrete dropout).
      deterministic: if True, no dropout (``nn.merge_param`` with the call's).
      rng_collection: the rng stream of the noise (``"dropout"``).
      loss_collection: the collection the penalty is sown into (``"losses"``).

    References:
      Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017,
      https://arxiv.org/abs/1705.07832.
    """

    layer: nn.Module
    num_examples: int | float | Array
    length_scale: float | Array
    precision: float | Array | None = None
    initial_rate: float = 0.1
    per_unit: bool = False
    temperature: float | Array = 0.1
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    loss_collection: str = "losses"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Drops ``inputs`` (unless deterministic), applies ``layer``, sows the penalty."""
        name = f"linen.{type(self).__name__}"
        init = rate_logit_init(check_initial_rate(name, self.initial_rate))
        shape = (jnp.shape(inputs)[-1],) if self.per_unit else ()
        rate = jax.nn.sigmoid(self.param("rate_logit", init, shape, jnp.float32))
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if not check_deterministic(name, deterministic):
            with errors_named(name):
                inputs = jaxreg.concrete_dropout(
                    _key(self, rng),
                    inputs,
                    rate=rate,
                    temperature=self.temperature,
                    broadcast_dims=self.broadcast_dims,
                )
        outputs = self.layer(inputs)
        kernel = self.layer.variables.get("params", {}).get("kernel")
        if kernel is None:
            raise fail(
                name,
                f"layer must have a 'kernel' parameter (nn.Dense, nn.Conv), got "
                f"{type(self.layer).__name__} with parameters "
                f"{sorted(self.layer.variables.get('params', {}))}.",
                exc=TypeError,
            )
        with errors_named(name):
            penalty = jaxreg.concrete_dropout_penalty(
                kernel,
                rate=rate,
                num_examples=self.num_examples,
                length_scale=self.length_scale,
                precision=self.precision,
            )
        self.sow(
            self.loss_collection, "concrete_dropout", penalty, reduce_fn=_replace, init_fn=float
        )
        return outputs


class L0Dense(nn.Module):
    """``nn.Dense`` with hard-concrete gates on its output units or weights (L0).

    Training multiplies each output unit (``gate="units"``: structured pruning, bias
    included) or each weight (``gate="weights"``) by a gate from
    ``jaxreg.hard_concrete_gate``; when deterministic it uses
    ``jaxreg.hard_concrete_gate_inference``, which is exactly 0 for pruned gates. Each
    call sows ``jaxreg.l0_penalty(log_alpha, strength=strength, ...)`` (the expected
    number of non-zero gates times ``strength``) into ``loss_collection`` under the
    name ``"l0"``. ``kernel`` and ``bias`` are ``nn.Dense``'s; the gates' parameter is
    ``log_alpha``, of shape ``(features,)`` or ``(in, features)``. The number of
    gates kept at test time: ``num_kept`` (bound), or from the params
    ``jnp.sum(jaxreg.hard_concrete_gate_inference(params["log_alpha"]) > 0)``.

    Attributes:
      features: number of output features.
      gate: ``"units"`` (one gate per output unit) or ``"weights"`` (one per weight).
      use_bias: whether to add a bias (gated with its unit for ``gate="units"``).
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: dtype of the parameters.
      precision: matmul precision.
      kernel_init: kernel initializer (LeCun normal, as ``nn.Dense``).
      bias_init: bias initializer (zeros).
      log_alpha_init: initializer of ``log_alpha``; the default ``normal(0.01)`` is the
        authors' (``droprate_init=0.5``): test-time gates start near 0.5.
      beta: the gates' temperature (2/3 in the paper).
      limits: ``(gamma, zeta)``, the stretch interval (``(-0.1, 1.1)``).
      strength: the L0 coefficient ``lambda`` of the sown penalty (the paper's is
        added to the mean loss; e.g. 0.1 / N).
      per_example: for ``gate="units"``, one gate per example instead of one per batch
        (the authors' ``local_rep``); not available for ``gate="weights"``.
      deterministic: if True, the test-time gates are used.
      rng_collection: the rng stream of the gates' noise (``"dropout"``).
      loss_collection: the collection the penalty is sown into (``"losses"``).

    References:
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018, https://arxiv.org/abs/1712.01312.
    """

    features: int
    gate: str = "units"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    log_alpha_init: Callable[..., Array] = DEFAULT_LOG_ALPHA_INIT
    beta: float | Array = 2 / 3
    limits: tuple[float, float] = (-0.1, 1.1)
    strength: float | Array = 1.0
    per_example: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    loss_collection: str = "losses"

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """The gated dense layer; sows the L0 penalty."""
        name = f"linen.{type(self).__name__}"
        check_choice(name, "gate", self.gate, GATES)
        units = self.gate == "units"
        if self.per_example and not units:
            raise fail(
                name,
                "per_example=True needs gate='units' (a gate per weight and "
                "example would be a (batch, in, out) array).",
            )
        n_in = jnp.shape(inputs)[-1]
        kernel = self.param("kernel", self.kernel_init, (n_in, self.features), self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        shape = (self.features,) if units else (n_in, self.features)
        log_alpha = self.param("log_alpha", self.log_alpha_init, shape, self.param_dtype)
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        with errors_named(name):
            if check_deterministic(name, deterministic):
                z = jaxreg.hard_concrete_gate_inference(log_alpha, limits=self.limits)
            else:
                draw = (*jnp.shape(inputs)[:-1], self.features) if self.per_example else shape
                z = jaxreg.hard_concrete_gate(
                    _key(self, rng), log_alpha, beta=self.beta, limits=self.limits, shape=draw
                )
            penalty = jaxreg.l0_penalty(
                log_alpha, strength=self.strength, beta=self.beta, limits=self.limits
            )
        self.sow(self.loss_collection, "l0", penalty, reduce_fn=_replace, init_fn=float)
        inputs, kernel, bias, z = promote_dtype(inputs, kernel, bias, z, dtype=self.dtype)
        if not units:
            kernel = kernel * z
        dims = (((inputs.ndim - 1,), (0,)), ((), ()))
        y = lax.dot_general(inputs, kernel, dims, precision=self.precision)
        if bias is not None:
            y = y + bias
        return y * z if units else y

    def num_kept(self) -> Array:
        """How many gates (units or weights) are non-zero at test time; needs bound params."""
        log_alpha = self.get_variable("params", "log_alpha")
        return jnp.sum(jaxreg.hard_concrete_gate_inference(log_alpha, limits=self.limits) > 0)
