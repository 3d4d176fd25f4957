"""Proximal operators of the L1, elastic-net and group-lasso penalties.

``prox_f(v) = argmin_x f(x) + ||x - v||^2 / 2``, applied leaf by leaf to the selected
leaves; unselected leaves are returned unchanged. Each operator takes the keywords of
its penalty plus ``step_size``: ``prox_X(params, strength=s, step_size=eta)`` is the
proximal operator of ``eta * X_penalty(., strength=s)``, so a proximal gradient step
with learning rate ``lr`` is ``prox_X(w - lr * grad, strength=s, step_size=lr)``
(``jaxreg.optax`` does this for you). Like the penalties, ``strength`` may be a pytree
with one value per leaf (or per subtree). Unlike gradient descent on the penalty,
these operators set small weights (or whole groups) exactly to 0. Like the penalties
and constraints, they compute in float32 (or the leaf's dtype where wider) and round
the result once to the leaf's dtype: bf16 in, bf16 out.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxreg._checks import check_probability, check_scalar_nonnegative, valid_nonnegative
from jaxreg._filters import Where, path_string
from jaxreg._numerics import accumulation_dtype, nan_unless, nonzero_or_one
from jaxreg._rate import valid_rate
from jaxreg._trees import group_norms, leaf_strengths, map_with_strengths, selection
from jaxreg._types import Array, Axis, PyTree, Strength


def _prepare(
    fn: str, params: PyTree, strength: Any, step_size: Any, where: Where
) -> tuple[float | Array, list[Any], PyTree]:
    """The checked step size, one strength per leaf and the selection."""
    eta = check_scalar_nonnegative(fn, "step_size", step_size, finite=True)
    _, strengths = leaf_strengths(fn, "strength", strength, params)
    return eta, strengths, selection(fn, params, where)


def soft_threshold(x: Array, threshold: float | Array) -> Array:
    """``sign(x) * max(|x| - threshold, 0)`` in ``x``'s dtype (callers pass float32)."""
    t = jnp.asarray(threshold, x.dtype)
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, jnp.zeros((), x.dtype))


def prox_l1(
    params: PyTree,
    *,
    strength: Strength | PyTree = 1.0,
    step_size: Strength = 1.0,
    where: Where = None,
) -> PyTree:
    """Soft-thresholding, the proximal operator of ``step_size * l1_penalty(., strength)``.

    With threshold ``t = step_size * strength``, each selected weight becomes
    ``sign(w) * max(|w| - t, 0)``: weights with ``|w| <= t`` become exactly 0, the
    others move ``t`` towards 0.

    Args:
      params: a pytree of floating-point arrays.
      strength: the ``l1_penalty`` coefficient, >= 0 and finite: a Python number, a
        scalar array that may be traced, or a pytree of them per leaf (or subtree) of
        ``params`` (see ``jaxreg.l1_penalty``). A traced negative value gives NaN.
      step_size: the step ``eta`` (a proximal gradient step's learning rate), >= 0
        and finite: a Python number or a scalar array that may be traced.
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).
        Unselected leaves pass through unchanged.

    Returns:
      A pytree like ``params`` (same dtypes; computed in float32 or wider).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.prox_l1(jnp.array([0.5, -2.0, 1.5]), strength=1.0)
      Array([ 0. , -1. ,  0.5], dtype=float32)

    References:
      Tibshirani. "Regression Shrinkage and Selection via the Lasso." JRSS B, 1996.
      Parikh & Boyd. "Proximal Algorithms." Foundations and Trends in Optimization
      1(3), 2014, section 6.5.2.
    """
    eta, strengths, selected = _prepare("prox_l1", params, strength, step_size, where)

    def prox(_: object, w: Array, s: Any) -> Array:
        out = soft_threshold(w.astype(accumulation_dtype(w)), eta * s)
        return nan_unless(out, valid_nonnegative(eta, s)).astype(w.dtype)

    return map_with_strengths(prox, params, selected, strengths)


def prox_elastic_net(
    params: PyTree,
    *,
    strength: Strength | PyTree = 1.0,
    l1_ratio: float | Array = 0.5,
    step_size: Strength = 1.0,
    where: Where = None,
) -> PyTree:
    """Proximal operator of ``step_size * elastic_net_penalty(., strength, l1_ratio)``.

    With ``a = step_size * strength * l1_ratio`` and ``b = step_size * strength *
    (1 - l1_ratio)``: ``argmin_x a |x| + b x^2 + (x - w)^2 / 2 =
    soft_threshold(w, a) / (1 + 2 b)``. The factor 2 comes from jaxreg's convention (no
    1/2 on the L2 term).

    Args:
      params: a pytree of floating-point arrays.
      strength: the ``elastic_net_penalty`` coefficient, >= 0 and finite: a number,
        a scalar array (may be traced) or a pytree of them per leaf or subtree.
      l1_ratio: the L1 share, in [0, 1] (number or scalar array, may be traced).
      step_size: the step ``eta``, >= 0 and finite (number or scalar array).
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` (same dtypes; computed in float32 or wider).

    References:
      Zou & Hastie. "Regularization and Variable Selection via the Elastic Net."
      JRSS B 67(2), 2005.
      Parikh & Boyd. "Proximal Algorithms." 2014, section 6.5.3.
    """
    fn = "prox_elastic_net"
    r = check_probability(fn, "l1_ratio", l1_ratio)
    eta, strengths, selected = _prepare(fn, params, strength, step_size, where)

    def prox(_: object, w: Array, s: Any) -> Array:
        x = w.astype(accumulation_dtype(w))
        scaled = eta * s
        shrunk = soft_threshold(x, scaled * r)
        out = shrunk / jnp.asarray(1.0 + 2.0 * (scaled * (1.0 - r)), x.dtype)
        out = nan_unless(out, valid_nonnegative(eta, s))
        return nan_unless(out, valid_rate(r)).astype(w.dtype)

    return map_with_strengths(prox, params, selected, strengths)


def prox_group_lasso(
    params: PyTree,
    *,
    strength: Strength | PyTree = 1.0,
    step_size: Strength = 1.0,
    axis: Axis = 0,
    where: Where = None,
) -> PyTree:
    """Block soft-thresholding, the prox of ``step_size * group_lasso_penalty``.

    The proximal operator of ``step_size * group_lasso_penalty(., strength=strength,
    axis=axis)``. Groups are as in ``group_lasso_penalty`` (``axis`` = the axes each
    norm runs over).
    With ``t = step_size * strength``, each group becomes ``w_g * max(0, 1 - t /
    ||w_g||)``: groups with ``||w_g|| <= t`` become exactly 0 as a whole, the others
    shrink towards 0 without changing direction.

    Args:
      params: a pytree of floating-point arrays.
      strength: the ``group_lasso_penalty`` coefficient, >= 0 and finite: a number,
        a scalar array (may be traced; negative gives NaN) or a pytree of them per
        leaf or subtree.
      step_size: the step ``eta``, >= 0 and finite (number or scalar array).
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
    eta, strengths, selected = _prepare(fn, params, strength, step_size, where)

    def prox(path: tuple, w: Array, s: Any) -> Array:
        t = eta * s
        x, norm = group_norms(fn, path_string(path), w, axis)
        keep = norm > t
        scale = jnp.where(keep, 1.0 - t / nonzero_or_one(norm), 0.0)
        return nan_unless((x * scale).astype(w.dtype), valid_nonnegative(eta, s))

    return map_with_strengths(prox, params, selected, strengths)
