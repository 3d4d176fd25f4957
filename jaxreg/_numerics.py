"""Numerics shared by the ops, penalties, constraints and proximal operators.

Each helper is finite where the naive formula is not: ``sqrt`` has an infinite
derivative at 0, ``x / 0`` is inf or NaN, and a float32 sum of squares overflows above
about 1.8e19 and underflows below about 1e-19. One definition each, used everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxreg._types import Array


def accumulation_dtype(x: Array) -> jnp.dtype:
    """float32, or the array's dtype where it is wider (float64 under x64)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def nonzero_or_one(d: Array) -> Array:
    """``d`` where ``d > 0``, else 1: a divisor that is never 0 (nor its gradient NaN)."""
    return jnp.where(d > 0, d, jnp.ones((), d.dtype))


def safe_sqrt(v: Array) -> Array:
    """``sqrt(v)`` for ``v > 0`` and 0 elsewhere, with a zero (not infinite) gradient at 0."""
    positive = v > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, v, jnp.ones((), v.dtype))), 0)


def safe_divide(x: Array, d: Array) -> Array:
    """``x / d`` where ``d > 0`` and 0 where ``d == 0``, with finite gradients.

    Used with ``d`` a non-negative ``safe_norm`` of ``x`` (broadcast against it), which
    is 0 only where ``x`` is: a zero vector has no direction and stays zero.
    """
    return jnp.where(d > 0, x / nonzero_or_one(d), jnp.zeros((), x.dtype))


def safe_norm(x: Array, axes: tuple[int, ...]) -> Array:
    """Euclidean norm over ``axes`` (kept as size-1 axes), scaled, with gradient 0 at 0.

    Computed as ``m * sqrt(sum((x / m)**2))`` with ``m = max |x|`` over the group, so
    the squares cannot overflow or underflow: every finite group has a finite, non-zero
    (unless all zero) norm, from 1e-45 to 3e38 in float32. ``m`` is held constant for
    differentiation (the norm is 1-homogeneous, so the gradient is still ``x / norm``).
    """
    m = jnp.max(jnp.abs(x), axis=axes, keepdims=True, initial=0)
    m = jax.lax.stop_gradient(m)
    scaled = x / nonzero_or_one(m)
    return m * safe_sqrt(jnp.sum(jnp.square(scaled), axis=axes, keepdims=True))


def abs_with_sign_gradient(x: Array) -> Array:
    """``|x|`` written as ``x * sign(x)``: its JAX gradient is ``sign(x)``, 0 at 0.

    ``jnp.abs`` has gradient 1 at 0, which would push exact zeros (made by ``prox_l1``)
    away again; ``sign(x)`` is the minimum-norm subgradient.
    """
    return x * jax.lax.stop_gradient(jnp.sign(x))


def nan_unless(out: Array, valid: bool | Array, source: Array | None = None) -> Array:
    """``out`` where ``valid``, NaN everywhere (value *and* gradient) where not.

    jaxreg's one NaN-poisoning helper: every invalid traced hyperparameter (a rate
    outside [0, 1], a negative strength, a NaN) goes through it. ``valid`` is a scalar
    bool array, or the Python ``True`` that the validity predicates
    (``_checks.valid_nonnegative``, ``_rate.valid_rate``) return for Python numbers,
    which were checked eagerly: then ``out`` is returned as it is and nothing is added
    to the program.

    A multiplication by 1 or NaN rather than a select: a select would give the NaN
    value a plausible zero gradient, and training follows the gradient. Where ``out``
    was itself selected from ``source`` (dropped units), the gradient with respect to
    ``source`` is poisoned through a second, value-neutral branch.
    """
    if valid is True:
        return out
    factor = jnp.where(valid, jnp.ones((), out.dtype), jnp.array(jnp.nan, out.dtype))
    out = out * factor
    if source is not None:
        nan_or_zero = jnp.where(valid, jnp.zeros((), out.dtype), jnp.array(jnp.nan, out.dtype))
        out = jnp.where(valid, out, source.astype(out.dtype) * nan_or_zero)
    return out
