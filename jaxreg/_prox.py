"""Proximal operators of the L1, elastic-net and group-lasso penalties.

``prox_f(v) = argmin_x f(x) + ||x - v||^2 / 2``, applied leaf by leaf to the selected
leaves; unselected leaves are returned unchanged. A proximal gradient step with step
size ``lr`` is ``prox_{lr * f}(w - lr * grad)``: pass ``threshold = lr * strength``
(``jaxreg.optax`` does this for you). Unlike gradient descent on the penalty, these
operators set small weights (or whole groups) exactly to 0. Like the penalties and
constraints, they compute in float32 (or the leaf's dtype where wider) and round the
result once to the leaf's dtype: bf16 in, bf16 out.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxreg._checks import check_scalar_nonnegative, poison_negative
from jaxreg._filters import Where, map_selected, path_string
from jaxreg._numerics import accumulation_dtype, nonzero_or_one
from jaxreg._penalties import group_norms, selection
from jaxreg._types import Array, Axis, PyTree, Strength


def soft_threshold(x: Array, threshold: float | Array) -> Array:
    """``sign(x) * max(|x| - threshold, 0)`` in ``x``'s dtype (callers pass float32)."""
    t = jnp.asarray(threshold, x.dtype)
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, jnp.zeros((), x.dtype))


def prox_l1(params: PyTree, *, threshold: Strength, where: Where = None) -> PyTree:
    """Soft-thresholding, the proximal operator of ``threshold * sum(|w|)``.

    Each selected weight becomes ``sign(w) * max(|w| - threshold, 0)``: weights with
    ``|w| <= threshold`` become exactly 0, the others move ``threshold`` towards 0.

    Args:
      params: a pytree of floating-point arrays.
      threshold: ``>= 0``; for a proximal gradient step, ``learning_rate * strength``
        with ``strength`` the ``l1_penalty`` coefficient. A Python number or a scalar
        array that may be traced; a traced negative value gives NaN.
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).
        Unselected leaves pass through unchanged.

    Returns:
      A pytree like ``params`` (same dtypes; computed in float32 or wider).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.prox_l1(jnp.array([0.5, -2.0, 1.5]), threshold=1.0)
      Array([ 0. , -1. ,  0.5], dtype=float32)

    References:
      Tibshirani. "Regression Shrinkage and Selection via the Lasso." JRSS B, 1996.
      Parikh & Boyd. "Proximal Algorithms." Foundations and Trends in Optimization
      1(3), 2014, section 6.5.2.
    """
    fn = "prox_l1"
    t = check_scalar_nonnegative(fn, "threshold", threshold)
    selected = selection(fn, params, where)

    def prox(_: object, w: Array) -> Array:
        out = soft_threshold(w.astype(accumulation_dtype(w)), t)
        return poison_negative(out, t).astype(w.dtype)

    return map_selected(prox, params, selected)


def prox_elastic_net(params: PyTree, *, l1: Strength, l2: Strength, where: Where = None) -> PyTree:
    """Proximal operator of ``l1 * sum(|w|) + l2 * sum(w**2)`` (``elastic_net_penalty``).

    ``argmin_x l1 |x| + l2 x^2 + (x - w)^2 / 2 = soft_threshold(w, l1) / (1 + 2 l2)``.
    The factor 2 comes from jaxreg's convention (no 1/2 on the L2 term). For a proximal
    gradient step with step size ``lr``, pass ``l1 = lr * a`` and ``l2 = lr * b`` for
    ``elastic_net_penalty(l1=a, l2=b)``.

    Args:
      params: a pytree of floating-point arrays.
      l1: L1 coefficient times the step size, >= 0 (number or scalar array).
      l2: L2 coefficient times the step size, >= 0 (number or scalar array).
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` (same dtypes; computed in float32 or wider).

    References:
      Zou & Hastie. "Regularization and Variable Selection via the Elastic Net."
      JRSS B 67(2), 2005.
      Parikh & Boyd. "Proximal Algorithms." 2014, section 6.5.3.
    """
    fn = "prox_elastic_net"
    l1 = check_scalar_nonnegative(fn, "l1", l1)
    l2 = check_scalar_nonnegative(fn, "l2", l2)
    selected = selection(fn, params, where)

    def prox(_: object, w: Array) -> Array:
        x = w.astype(accumulation_dtype(w))
        out = soft_threshold(x, l1) / jnp.asarray(1.0 + 2.0 * l2, x.dtype)
        return poison_negative(poison_negative(out, l1), l2).astype(w.dtype)

    return map_selected(prox, params, selected)


def prox_group_lasso(
    params: PyTree, *, threshold: Strength, axis: Axis = 0, where: Where = None
) -> PyTree:
    """Block soft-thresholding, the proximal operator of ``threshold * sum_g ||w_g||``.

    Groups are as in ``group_lasso_penalty`` (``axis`` = the axes each norm runs over).
    Each group becomes ``w_g * max(0, 1 - threshold / ||w_g||)``: groups with
    ``||w_g|| <= threshold`` become exactly 0 as a whole, the others shrink towards 0
    without changing direction.

    Args:
      params: a pytree of floating-point arrays.
      threshold: ``>= 0``, for a proximal gradient step ``learning_rate * strength``
        (number or scalar array that may be traced; traced negative gives NaN).
      axis: an axis or a sequence of axes, checked against every selected leaf's rank.
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` (same dtypes; computed in float32 or wider).

    References:
      Yuan & Lin. "Model Selection and Estimation in Regression with Grouped
      Variables." JRSS B 68(1), 2006.
      Parikh & Boyd. "Proximal Algorithms." 2014, section 6.5.4.
    """
    fn = "prox_group_lasso"
    t = check_scalar_nonnegative(fn, "threshold", threshold)
    selected = selection(fn, params, where)

    def prox(path: tuple, w: Array) -> Array:
        x, norm = group_norms(fn, path_string(path), w, axis)
        keep = norm > t
        scale = jnp.where(keep, 1.0 - t / nonzero_or_one(norm), 0.0)
        return poison_negative((x * scale).astype(w.dtype), t)

    return map_selected(prox, params, selected)
