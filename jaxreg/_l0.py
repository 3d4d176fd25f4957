"""L0 regularization with hard-concrete gates: stochastic gates, test-time gates, penalty.

A gate ``z`` in [0, 1] multiplies a unit or a weight; its parameter ``log_alpha`` is
learned. In training, ``s = sigmoid((log(u) - log(1 - u) + log_alpha) / beta)`` is a
binary Concrete sample, stretched to ``(gamma, zeta) = limits`` and clipped to [0, 1]:
``z = min(1, max(0, s * (zeta - gamma) + gamma))``. With ``gamma < 0 < 1 < zeta`` the
gate is exactly 0 with probability ``sigmoid(beta * log(-gamma / zeta) - log_alpha)``,
exactly 1 with some probability, and differentiable in ``log_alpha`` in between. The
expected number of non-zero gates is therefore a closed-form, differentiable function
of ``log_alpha`` (``l0_penalty``), and ``log_alpha -> -inf`` prunes a gate for good.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import (
    check_float_array,
    check_has_arrays,
    check_key,
    check_key_first,
    check_scalar_nonnegative,
    check_shape,
    describe,
    fail,
    is_python_number,
    valid_nonnegative,
)
from jaxreg._concrete import check_positive, logistic_noise, poison_nonpositive
from jaxreg._filters import Where, resolve_where
from jaxreg._numerics import nan_unless
from jaxreg._types import Array, PyTree, Strength

DEFAULT_LIMITS = (-0.1, 1.1)


def check_limits(fn: str, limits: Any) -> tuple[float, float]:
    """``(gamma, zeta)``: two Python numbers with ``gamma < 0`` and ``zeta > 1``."""
    ok = isinstance(limits, Sequence) and not isinstance(limits, str) and len(limits) == 2
    if not ok or not all(is_python_number(v) for v in limits):
        raise fail(
            fn,
            f"limits must be a pair of Python numbers (gamma, zeta), got {describe(limits)}. "
            "The paper uses limits=(-0.1, 1.1).",
            exc=TypeError,
        )
    gamma, zeta = float(limits[0]), float(limits[1])
    if not (math.isfinite(gamma) and math.isfinite(zeta) and gamma < 0.0 and zeta > 1.0):
        raise fail(
            fn,
            f"limits must satisfy gamma < 0 < 1 < zeta (finite), got {(gamma, zeta)}: the "
            "stretched interval must cover [0, 1] strictly for gates to be exactly 0 or 1.",
        )
    return gamma, zeta


def _gate_args(fn: str, log_alpha: Any, beta: Any, limits: Any):
    log_alpha = check_float_array(fn, "log_alpha", log_alpha)
    gamma, zeta = check_limits(fn, limits)
    beta = check_positive(fn, "beta", beta) if beta is not None else None
    return log_alpha, beta, gamma, zeta


def hard_concrete_gate(
    key: Any,
    log_alpha: Array,
    *,
    beta: float | Array = 2 / 3,
    limits: tuple[float, float] = DEFAULT_LIMITS,
    shape: Sequence[int] | None = None,
) -> Array:
    """Samples hard-concrete gates in [0, 1], exactly 0 or 1 with positive probability.

    ``z = min(1, max(0, sigmoid((log(u) - log(1 - u) + log_alpha) / beta) * (zeta -
    gamma) + gamma))`` with ``u`` uniform on the open interval (0, 1) from jaxreg's bit
    engine and ``(gamma, zeta) = limits``. ``P(z == 0) = sigmoid(beta * log(-gamma /
    zeta) - log_alpha)``; ``l0_penalty`` is the sum of ``P(z != 0)``. The gate is
    differentiable in ``log_alpha`` (reparameterization) where it is strictly
    between 0 and 1, and has zero gradient where clipped. Computed in float32 (or
    wider), returned in ``log_alpha``'s dtype (0 and 1 stay exact).

    Args:
      key: a PRNG key.
      log_alpha: floating-point location parameters, one per gate (may be traced,
        ``+-inf`` allowed: gates exactly 1 or 0).
      beta: the temperature, > 0 (paper: 2/3): a Python number or a scalar array (a
        traced non-positive value gives NaN).
      limits: ``(gamma, zeta)``, Python numbers with ``gamma < 0 < 1 < zeta``; the
        stretch interval (paper: ``(-0.1, 1.1)``).
      shape: the shape of the sample, to which ``log_alpha`` broadcasts (e.g.
        ``(batch, units)`` for one gate per example); default ``log_alpha.shape``.

    Returns:
      Gates of ``shape`` in ``log_alpha``'s dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> z = jaxreg.hard_concrete_gate(jax.random.key(0), jnp.zeros(5))
      >>> z.shape, bool(jnp.all((z >= 0) & (z <= 1)))
      ((5,), True)

    References:
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018, https://arxiv.org/abs/1712.01312 (section 3,
      eqs. 10-12; reference code https://github.com/AMLab-Amsterdam/L0_regularization).
    """
    fn = "hard_concrete_gate"
    check_key_first(fn, key, log_alpha, "log_alpha")
    log_alpha, beta, gamma, zeta = _gate_args(fn, log_alpha, beta, limits)
    if shape is None:
        shape = log_alpha.shape
    else:
        shape = check_shape(fn, "shape", shape)
        try:
            fits = np.broadcast_shapes(log_alpha.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise fail(
                fn,
                f"log_alpha of shape {log_alpha.shape} does not broadcast to shape {shape}. "
                "Give shape the gates' full shape, e.g. (batch, *log_alpha.shape).",
            )
    key = check_key(fn, key)
    wide = jnp.promote_types(log_alpha.dtype, jnp.float32)
    noise = logistic_noise(key, shape).astype(wide)
    s = jax.nn.sigmoid((noise + log_alpha.astype(wide)) / beta)
    z = jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)
    return poison_nonpositive(z, beta).astype(log_alpha.dtype)


def hard_concrete_gate_inference(
    log_alpha: Array, *, limits: tuple[float, float] = DEFAULT_LIMITS
) -> Array:
    """The deterministic test-time gate: exactly 0 for pruned units or weights.

    ``min(1, max(0, sigmoid(log_alpha) * (zeta - gamma) + gamma))`` is the paper's
    estimator for the gates at test time (eq. 13). It is exactly 0
    wherever ``sigmoid(log_alpha) <= -gamma / (zeta - gamma)`` (``log_alpha <=
    log(-gamma / zeta)``, about -2.40 for the default limits): those units or weights
    can be removed from the network. It does not depend on ``beta``.

    Args:
      log_alpha: floating-point location parameters (may be traced).
      limits: ``(gamma, zeta)`` as in ``hard_concrete_gate``.

    Returns:
      Gates in [0, 1] of ``log_alpha``'s shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.hard_concrete_gate_inference(jnp.array([-5.0, 5.0]))
      Array([0., 1.], dtype=float32)

    References:
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018, https://arxiv.org/abs/1712.01312 (eq. 13).
    """
    fn = "hard_concrete_gate_inference"
    log_alpha, _, gamma, zeta = _gate_args(fn, log_alpha, None, limits)
    wide = jnp.promote_types(log_alpha.dtype, jnp.float32)
    s = jax.nn.sigmoid(log_alpha.astype(wide))
    return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0).astype(log_alpha.dtype)


def l0_penalty(
    log_alpha: PyTree,
    *,
    strength: Strength = 1.0,
    beta: float | Array = 2 / 3,
    limits: tuple[float, float] = DEFAULT_LIMITS,
    where: Where = None,
) -> Array:
    """The expected number of non-zero hard-concrete gates, in closed form, times ``strength``.

    ``strength * sum(sigmoid(log_alpha - beta * log(-gamma / zeta)))`` over every
    selected leaf: each term is ``P(z != 0)`` of the gate ``hard_concrete_gate``
    draws, so this is the expected L0 norm of the gated units or weights, smooth in
    ``log_alpha``. Add it to the mean training loss (the paper's ``lambda`` is
    ``strength``); its gradient is finite for every ``log_alpha``, infinite ones
    included.

    Args:
      log_alpha: an array of gate parameters, or a pytree of them (e.g. a model's
        params with ``where`` selecting the gate leaves, as ``jaxreg.optax.add_penalty``
        passes them).
      strength: the coefficient, >= 0: a Python number or a scalar array that may be
        traced. A traced negative value gives NaN.
      beta: the gates' temperature, > 0 (as in ``hard_concrete_gate``).
      limits: ``(gamma, zeta)`` as in ``hard_concrete_gate``.
      where: which leaves hold gate parameters (bool pytree or callable, e.g.
        ``lambda p: jaxreg.by_path(p, "log_alpha")``; None: every array leaf).

    Returns:
      A scalar in float32 (or wider if ``log_alpha`` is).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> float(jaxreg.l0_penalty(jnp.full(10, 50.0)))
      10.0

    References:
      Louizos, Welling, Kingma. "Learning Sparse Neural Networks through L0
      Regularization." ICLR 2018, https://arxiv.org/abs/1712.01312 (eq. 12).
    """
    fn = "l0_penalty"
    strength = check_scalar_nonnegative(fn, "strength", strength, finite=True)
    beta = check_positive(fn, "beta", beta)
    gamma, zeta = check_limits(fn, limits)
    if where is None:
        check_has_arrays(fn, log_alpha)
    selected = resolve_where(fn, log_alpha, where)
    shift = beta * math.log(-gamma / zeta)
    total = jnp.zeros((), jnp.float32)
    for leaf, chosen in zip(
        jax.tree_util.tree_leaves(log_alpha), jax.tree_util.tree_leaves(selected), strict=True
    ):
        if chosen:
            leaf = check_float_array(fn, "log_alpha", leaf)
            wide = jnp.promote_types(leaf.dtype, jnp.float32)
            total = total + jnp.sum(jax.nn.sigmoid(leaf.astype(wide) - shift))
    out = nan_unless(strength * total, valid_nonnegative(strength))
    return poison_nonpositive(out, beta)
