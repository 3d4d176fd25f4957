"""Weight penalties: L1, L2, elastic net, group lasso and orthogonality.

Every penalty takes a pytree of parameters, selects leaves with ``where`` (a bool
pytree of the parameters' exact structure, or a callable returning one such as
``jaxreg.kernels_only``), sums in float32 or wider, and returns a scalar to add to the
loss. Coefficients follow Keras and the textbook convention, without a factor 1/2:
``l2_penalty(params, strength=s) = s * sum(w**2)``, whose gradient is ``2 * s * w``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import (
    check_choice,
    check_has_arrays,
    check_scalar_nonnegative,
    fail,
    normalize_leaf_axes,
    poison_negative,
)
from jaxreg._filters import Where, path_string, resolve_where
from jaxreg._numerics import abs_with_sign_gradient, accumulation_dtype, safe_divide, safe_norm
from jaxreg._types import Array, Axis, PyTree, Strength


def selection(fn: str, params: PyTree, where: Where) -> PyTree:
    """``resolve_where``, rejecting a ``where=None`` params tree of Python numbers only.

    Such a tree would select nothing (only arrays are parameters) and give 0.
    """
    if where is None:
        check_has_arrays(fn, params)
    return resolve_where(fn, params, where)


def group_norms(fn: str, leaf: str, w: Array, axis: Axis) -> tuple[Array, Array]:
    """``w`` in ``accumulation_dtype`` and its ``safe_norm`` over ``axis`` (size-1 kept).

    ``axis`` (negative allowed) is checked against ``w``'s rank; an error names ``fn``
    and the params leaf ``leaf``. Shared by the group lasso, its prox and the norm
    constraints.
    """
    axes = normalize_leaf_axes(fn, "axis", axis, w.ndim, leaf)
    x = w.astype(accumulation_dtype(w))
    return x, safe_norm(x, axes)


def _total(fn: str, params: PyTree, where: Where, term: Any, strength: Strength) -> Array:
    """``strength * sum(term(path, leaf))`` over the selected leaves, in float32 or wider.

    ``term`` receives the leaf's ``/``-joined path (for error messages) and the leaf
    cast to ``accumulation_dtype``, and returns a scalar.
    """
    selected = selection(fn, params, where)
    total = jnp.zeros((), jnp.float32)
    for (path, leaf), chosen in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree_util.tree_leaves(selected),
        strict=True,
    ):
        if chosen:
            total = total + term(path_string(path), leaf.astype(accumulation_dtype(leaf)))
    return poison_negative(strength * total, strength)


def l1_penalty(params: PyTree, *, strength: Strength = 1.0, where: Where = None) -> Array:
    """L1 penalty (lasso): ``strength * sum(|w|)`` over the selected leaves.

    Its gradient is ``strength * sign(w)``, with the subgradient 0 chosen at ``w = 0``
    (so coupled L1 does not push exact zeros away). Gradient descent on it shrinks
    weights towards 0 but rarely makes them exactly 0; for exact zeros use the proximal
    step ``prox_l1`` (or ``jaxreg.optax.proximal_l1``).

    Args:
      params: a pytree of floating-point arrays.
      strength: the coefficient, >= 0: a Python number or a scalar array that may be
        traced (``jax.vmap`` over strengths works). A traced negative value gives NaN.
      where: which leaves to penalize: a bool pytree of ``params``' structure or a
        callable returning one (e.g. ``jaxreg.kernels_only``); None means every array
        leaf. Unselected leaves contribute 0.

    Returns:
      A scalar in float32 (or wider if the parameters are wider). A Python ``inf``
      strength is rejected; a traced negative or NaN strength makes the value and the
      gradient NaN.

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.l1_penalty({"w": jnp.array([1.0, -2.0])}, strength=0.5)
      Array(1.5, dtype=float32)

    References:
      Tibshirani. "Regression Shrinkage and Selection via the Lasso." JRSS B 58(1), 1996.
    """
    fn = "l1_penalty"
    strength = check_scalar_nonnegative(fn, "strength", strength, finite=True)
    return _total(fn, params, where, lambda _, x: jnp.sum(abs_with_sign_gradient(x)), strength)


def l2_penalty(params: PyTree, *, strength: Strength = 1.0, where: Where = None) -> Array:
    """L2 penalty (ridge, "weight decay"): ``strength * sum(w**2)``, no factor 1/2.

    This is Keras's ``L2(l2=strength)`` convention. Its gradient is ``2 * strength * w``.
    ``optax.add_decayed_weights(wd)`` and PyTorch's ``SGD(weight_decay=wd)`` add
    ``wd * w`` to the gradient, i.e. they use ``(wd / 2) * sum(w**2)``; so
    ``l2_penalty(strength=s)`` is ``add_decayed_weights(2 * s)`` and
    ``weight_decay=wd`` is ``l2_penalty(strength=wd / 2)``. With adaptive optimizers
    (Adam) this coupled penalty differs from decoupled weight decay
    (``jaxreg.optax.decoupled_weight_decay``).

    Args:
      params: a pytree of floating-point arrays.
      strength: the coefficient, >= 0: a Python number or a scalar array that may be
        traced (``jax.vmap`` over strengths works). A traced negative value gives NaN.
      where: which leaves to penalize (bool pytree or callable; None: every array leaf).

    Returns:
      A scalar in float32 (or wider if the parameters are wider).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.l2_penalty({"w": jnp.array([1.0, -2.0])}, strength=0.5)
      Array(2.5, dtype=float32)

    References:
      Hoerl & Kennard. "Ridge Regression." Technometrics 12(1), 1970.
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019 (on
      why L2 and weight decay differ for adaptive optimizers).
    """
    fn = "l2_penalty"
    strength = check_scalar_nonnegative(fn, "strength", strength, finite=True)
    return _total(fn, params, where, lambda _, x: jnp.sum(jnp.square(x)), strength)


def elastic_net_penalty(
    params: PyTree, *, l1: Strength, l2: Strength, where: Where = None
) -> Array:
    """Elastic net: ``l1 * sum(|w|) + l2 * sum(w**2)``.

    The sum of ``l1_penalty(strength=l1)`` and ``l2_penalty(strength=l2)`` (Keras's
    ``L1L2`` convention, no factor 1/2). Zou & Hastie write ``lambda1 * |w|_1 +
    lambda2 * |w|_2^2``, the same parameterization. Its proximal operator is
    ``prox_elastic_net``.

    Args:
      params: a pytree of floating-point arrays.
      l1: the L1 coefficient, >= 0 (number or scalar array, may be traced).
      l2: the L2 coefficient, >= 0 (number or scalar array, may be traced).
      where: which leaves to penalize (bool pytree or callable; None: every array leaf).

    Returns:
      A scalar in float32 (or wider).

    References:
      Zou & Hastie. "Regularization and Variable Selection via the Elastic Net."
      JRSS B 67(2), 2005.
    """
    fn = "elastic_net_penalty"
    l1 = check_scalar_nonnegative(fn, "l1", l1, finite=True)
    l2 = check_scalar_nonnegative(fn, "l2", l2, finite=True)
    selected = selection(fn, params, where)
    return l1_penalty(params, strength=l1, where=selected) + l2_penalty(
        params, strength=l2, where=selected
    )


def group_lasso_penalty(
    params: PyTree, *, strength: Strength = 1.0, axis: Axis = 0, where: Where = None
) -> Array:
    """Group lasso: ``strength * sum_g ||w_g||_2``, one group per slice along ``axis``.

    ``axis`` names the axes each norm runs over (Keras's ``MaxNorm`` convention), so
    every index of the remaining axes is one group. For a Dense kernel of shape
    ``(in, out)``, ``axis=0`` makes one group per output unit (its incoming weights) and
    ``axis=1`` one group per input feature (its outgoing weights: feature selection).
    For a conv kernel ``(h, w, in, out)``, ``axis=(0, 1, 2)`` is one group per filter.
    Groups are not weighted by the square root of their size (Yuan & Lin's weights);
    fold such a weight into ``strength``. The gradient at a zero group is 0.

    Args:
      params: a pytree of floating-point arrays.
      strength: the coefficient, >= 0 (number or scalar array, may be traced).
      axis: an axis or a sequence of axes, negative allowed, checked against every
        selected leaf's rank.
      where: which leaves to penalize (bool pytree or callable; None: every array leaf).

    Returns:
      A scalar in float32 (or wider).

    References:
      Yuan & Lin. "Model Selection and Estimation in Regression with Grouped
      Variables." JRSS B 68(1), 2006.
    """
    fn = "group_lasso_penalty"
    strength = check_scalar_nonnegative(fn, "strength", strength, finite=True)

    def term(path: str, x: Array) -> Array:
        return jnp.sum(group_norms(fn, path, x, axis)[1])

    return _total(fn, params, where, term, strength)


ORTHOGONAL_MODES = ("frobenius", "cosine")


def _orthogonality(w: Array, mode: str) -> Array:
    """The unscaled penalty of one kernel, as a matrix ``(fan_in, units)``."""
    m = w.reshape(-1, w.shape[-1])
    units = m.shape[1]
    if mode == "frobenius":
        gram = m.T @ m
        return jnp.sum(jnp.square(gram - jnp.eye(units, dtype=m.dtype)))
    if units < 2:
        return jnp.zeros((), m.dtype)
    unit = safe_divide(m, safe_norm(m, (0,)))  # a zero column stays 0: orthogonal
    cos = unit.T @ unit
    off_diagonal = jnp.abs(cos) * (1.0 - jnp.eye(units, dtype=m.dtype))
    return jnp.sum(off_diagonal) / (units * (units - 1))


def orthogonal_penalty(
    w: PyTree, *, strength: Strength = 1.0, mode: str = "frobenius", where: Where = None
) -> Array:
    """Soft orthogonality of the units (columns) of weight matrices.

    Each selected leaf of rank >= 2 is read as a matrix ``W`` of shape
    ``(fan_in, units)`` by flattening every axis but the last (a conv kernel
    ``(h, w, in, out)`` becomes ``(h * w * in, out)``). Transpose a leaf first to
    regularize its rows.

    * ``mode="frobenius"``: ``strength * ||W^T W - I||_F^2`` (Brock et al. 2017;
      Bansal et al. 2018's SO), 0 exactly when the columns are orthonormal.
    * ``mode="cosine"``: ``strength * mean_{i != j} |cos(w_i, w_j)|``, the mean absolute
      cosine similarity between distinct columns (the value of Keras's
      ``OrthogonalRegularizer(mode="columns")``); it ignores column norms and is 0 for
      a single column. A zero column counts as orthogonal to every other.

    Args:
      w: one weight array, or a pytree of them (the penalties of the leaves are summed).
      strength: the coefficient, >= 0 (number or scalar array, may be traced).
      mode: ``"frobenius"`` or ``"cosine"``.
      where: which leaves to penalize (bool pytree or callable; None: every array
        leaf). Every selected leaf must have rank >= 2.

    Returns:
      A scalar in float32 (or wider).

    References:
      Brock, Lim, Ritchie, Weston. "Neural Photo Editing with Introspective Adversarial
      Networks." ICLR 2017.
      Bansal, Chen, Wang. "Can We Gain More from Orthogonality Regularizations in
      Training Deep CNNs?" NeurIPS 2018.
    """
    fn = "orthogonal_penalty"
    strength = check_scalar_nonnegative(fn, "strength", strength, finite=True)
    mode = check_choice(fn, "mode", mode, ORTHOGONAL_MODES)

    def term(path: str, x: Array) -> Array:
        if x.ndim < 2:
            raise fail(
                fn,
                f"every selected leaf must have rank >= 2, got shape {x.shape} at "
                f"{path or 'w'!r}. Select kernels only, e.g. where=jaxreg.kernels_only.",
            )
        return _orthogonality(x, mode)

    return _total(fn, w, where, term, strength)
