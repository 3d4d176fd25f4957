"""Weight penalties: L1, L2, elastic net, group lasso and orthogonality.

Every penalty takes a pytree of parameters, selects leaves with ``where`` (a bool
pytree of the parameters' exact structure, or a callable returning one such as
``jaxreg.kernels_only``), weighs each leaf by its ``strength`` (one number for all, or a
pytree with one per leaf or per subtree: Keras's per-layer regularizers), sums in
float32 or wider, and returns a scalar to add to the loss. Coefficients follow Keras
and the textbook convention, without a factor 1/2: ``l2_penalty(params, strength=s) =
s * sum(w**2)``, whose gradient is ``2 * s * w``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import check_choice, check_probability, fail, valid_nonnegative
from jaxreg._filters import Where, path_string
from jaxreg._numerics import (
    abs_with_sign_gradient,
    accumulation_dtype,
    nan_unless,
    safe_divide,
    safe_norm,
)
from jaxreg._rate import valid_rate
from jaxreg._trees import group_norms, leaf_strengths, selection
from jaxreg._types import Array, Axis, PyTree, Strength


def _total(fn: str, params: PyTree, where: Where, term: Any, strength: Any) -> Array:
    """``sum(strength_leaf * term(path, leaf))`` over the selected leaves, float32 or wider.

    ``strength`` is validated here (``_trees.leaf_strengths``): one value for every
    leaf, multiplied once into the total, or a pytree with one value per leaf or
    subtree. ``term`` receives the leaf's ``/``-joined path (for error messages) and the
    leaf cast to ``accumulation_dtype``, and returns a scalar. A traced negative (or
    NaN) strength makes the value and the gradient NaN.
    """
    single, strengths = leaf_strengths(fn, "strength", strength, params)
    selected = selection(fn, params, where)
    total = jnp.zeros((), jnp.float32)
    for (path, leaf), chosen, s in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree_util.tree_leaves(selected),
        strengths,
        strict=True,
    ):
        if chosen:
            t = term(path_string(path), leaf.astype(accumulation_dtype(leaf)))
            total = total + (t if single is not None else s * t)
    if single is not None:
        return nan_unless(single * total, valid_nonnegative(single))
    return nan_unless(total, valid_nonnegative(*strengths))


def l1_penalty(params: PyTree, *, strength: Strength | PyTree = 1.0, where: Where = None) -> Array:
    """L1 penalty (lasso): ``strength * sum(|w|)`` over the selected leaves.

    Its gradient is ``strength * sign(w)``, with the subgradient 0 chosen at ``w = 0``
    (so coupled L1 does not push exact zeros away). Gradient descent on it shrinks
    weights towards 0 but rarely makes them exactly 0; for exact zeros use the proximal
    step ``prox_l1`` (or ``jaxreg.optax.proximal_l1``).

    Args:
      params: a pytree of floating-point arrays.
      strength: the coefficient, >= 0: a Python number, a scalar array that may be
        traced (``jax.vmap`` over strengths works), or a pytree of those with one
        value per leaf of ``params`` (a prefix of its structure is fine: one per
        layer, e.g. ``{"dense1": 0.01, "dense2": 0.001}``), like Keras's per-layer
        ``kernel_regularizer``. A traced negative value gives NaN.
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
    term = lambda _, x: jnp.sum(abs_with_sign_gradient(x))  # noqa: E731
    return _total("l1_penalty", params, where, term, strength)


def l2_penalty(params: PyTree, *, strength: Strength | PyTree = 1.0, where: Where = None) -> Array:
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
      strength: the coefficient, >= 0: a Python number, a scalar array that may be
        traced (``jax.vmap`` over strengths works), or a pytree of those with one
        value per leaf of ``params`` (a prefix of its structure is fine: one per
        layer, e.g. ``{"dense1": 0.01, "dense2": 0.001}``), like Keras's per-layer
        ``kernel_regularizer``. A traced negative value gives NaN.
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
    return _total("l2_penalty", params, where, lambda _, x: jnp.sum(jnp.square(x)), strength)


def elastic_net_penalty(
    params: PyTree,
    *,
    strength: Strength | PyTree = 1.0,
    l1_ratio: float | Array = 0.5,
    where: Where = None,
) -> Array:
    """Elastic net: ``strength * (l1_ratio * sum(|w|) + (1 - l1_ratio) * sum(w**2))``.

    scikit-learn's parameterization (``alpha``, ``l1_ratio``), without its factor 1/2
    on the L2 term, like every jaxreg penalty. ``l1_ratio=1`` is ``l1_penalty``,
    ``l1_ratio=0`` is ``l2_penalty``. Keras's ``L1L2(l1, l2)`` (``l1 * sum|w| + l2 *
    sum w**2``, Zou & Hastie's ``lambda1``, ``lambda2``) is ``strength=l1 + l2,
    l1_ratio=l1 / (l1 + l2)``. Its proximal operator is ``prox_elastic_net``.

    Args:
      params: a pytree of floating-point arrays.
      strength: the coefficient, >= 0: a Python number, a scalar array that may be
        traced (``jax.vmap`` over strengths works), or a pytree of those with one
        value per leaf of ``params`` (a prefix of its structure is fine: one per
        layer, e.g. ``{"dense1": 0.01, "dense2": 0.001}``), like Keras's per-layer
        ``kernel_regularizer``. A traced negative value gives NaN.
      l1_ratio: the L1 share of the penalty, in [0, 1]: a Python number or a scalar
        array that may be traced (a traced value outside [0, 1] gives NaN).
      where: which leaves to penalize (bool pytree or callable; None: every array leaf).

    Returns:
      A scalar in float32 (or wider).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> jaxreg.elastic_net_penalty({"w": jnp.array([1.0, -2.0])}, l1_ratio=0.5)
      Array(4., dtype=float32)

    References:
      Zou & Hastie. "Regularization and Variable Selection via the Elastic Net."
      JRSS B 67(2), 2005.
    """
    fn = "elastic_net_penalty"
    r = check_probability(fn, "l1_ratio", l1_ratio)

    def term(_: str, x: Array) -> Array:
        return r * jnp.sum(abs_with_sign_gradient(x)) + (1.0 - r) * jnp.sum(jnp.square(x))

    return nan_unless(_total(fn, params, where, term, strength), valid_rate(r))


def group_lasso_penalty(
    params: PyTree, *, strength: Strength | PyTree = 1.0, axis: Axis = 0, where: Where = None
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
      strength: the coefficient, >= 0: a number, a scalar array (may be traced) or a
        pytree of them per leaf or subtree of ``params`` (see ``l1_penalty``).
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
    params: PyTree,
    *,
    strength: Strength | PyTree = 1.0,
    mode: str = "frobenius",
    where: Where = None,
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
      params: one weight array, or a pytree of them (the penalties of the leaves are
        summed).
      strength: the coefficient, >= 0: a number, a scalar array (may be traced) or a
        pytree of them per leaf or subtree of ``params`` (see ``l1_penalty``).
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
    mode = check_choice(fn, "mode", mode, ORTHOGONAL_MODES)

    def term(path: str, x: Array) -> Array:
        if x.ndim < 2:
            raise fail(
                fn,
                f"every selected leaf must have rank >= 2, got shape {x.shape} at "
                f"{path or 'params'!r}. Select kernels only, e.g. where=jaxreg.kernels_only.",
            )
        return _orthogonality(x, mode)

    return _total(fn, params, where, term, strength)
