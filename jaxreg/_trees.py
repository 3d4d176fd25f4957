"""Parameter pytrees as penalties, proximal operators and constraints see them.

Shared by ``_penalties``, ``_prox``, ``_constraints`` and the optax adapter: which
leaves are selected (``selection``), one strength per leaf (``leaf_strengths``: a
number, a scalar array, or a pytree of them that is a prefix of the parameters), a
map over the selected leaves with their strengths (``map_with_strengths``), and the
group norms of the group lasso and the norm constraints (``group_norms``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxreg._checks import (
    brief,
    check_has_arrays,
    check_scalar_nonnegative,
    describe,
    fail,
    normalize_leaf_axes,
)
from jaxreg._filters import Where, resolve_where
from jaxreg._numerics import accumulation_dtype, safe_norm
from jaxreg._types import Array, Axis, PyTree


def selection(fn: str, params: PyTree, where: Where) -> PyTree:
    """``resolve_where``, rejecting a ``where=None`` params tree of Python numbers only.

    Such a tree would select nothing (only arrays are parameters) and give 0.
    """
    if where is None:
        check_has_arrays(fn, params)
    return resolve_where(fn, params, where)


def is_single(value: Any) -> bool:
    """Whether a strength is one value for every leaf (not a pytree of strengths)."""
    return jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(value))


def leaf_strengths(
    fn: str, name: str, value: Any, params: PyTree, *, finite: bool = True
) -> tuple[float | Array | None, list[float | Array]]:
    """One validated strength per leaf of ``params`` (``jax.tree.leaves`` order).

    ``value`` is a number or a scalar array (shared by every leaf), or a pytree of
    those whose structure is a prefix of ``params``' (``{"dense1": 0.01, "dense2":
    0.1}`` for ``{"dense1": {"kernel": ..., "bias": ...}, ...}``, or a full tree such as
    ``jax.tree.map(lambda k: 0.01 if k else 0.0, jaxreg.kernels_only(params))``). Each
    value must be >= 0 (and finite if ``finite``) where concrete; traced values are
    the caller's to poison with ``valid_nonnegative``.

    Returns:
      ``(single, per_leaf)``: the one shared value (None for a pytree) and the list of
      per-leaf values.
    """
    n = len(jax.tree_util.tree_leaves(params))
    if is_single(value):
        v = check_scalar_nonnegative(fn, name, value, finite=finite)
        return v, [v] * n
    if isinstance(value, (str, bytes)):
        raise fail(fn, f"{name} must be a number >= 0, got {describe(value)}.", exc=TypeError)
    checked = jax.tree_util.tree_map_with_path(
        lambda path, v: check_scalar_nonnegative(
            fn, f"{name}{jax.tree_util.keystr(path)}", v, finite=finite
        ),
        value,
    )
    try:
        full = jax.tree.broadcast(checked, params)
    except (ValueError, TypeError) as err:
        raise fail(
            fn,
            f"{name} must be a number, a scalar array, or a pytree of them whose structure "
            f"is a prefix of params' (one strength per leaf or per subtree), got "
            f"{jax.tree_util.tree_structure(value)} for params "
            f"{jax.tree_util.tree_structure(params)} ({brief(' '.join(str(err).split()))}). "
            "Build it "
            "with jax.tree.map over params or a filter, e.g. jax.tree.map(lambda k: 0.01 "
            "if k else 0.0, jaxreg.kernels_only(params)), and use 0.0 (not None) for "
            "leaves to leave alone.",
        ) from None
    leaves = jax.tree_util.tree_leaves(full)
    return None, leaves


def map_with_strengths(
    fn: Callable[[tuple[Any, ...], Any, Any], Any],
    params: PyTree,
    selected: PyTree,
    strengths: list[Any],
) -> PyTree:
    """Applies ``fn(key_path, leaf, strength)`` to the selected leaves; others unchanged."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    chosen = jax.tree_util.tree_leaves(selected)
    out = [
        fn(path, leaf, s) if c else leaf
        for (path, leaf), c, s in zip(flat, chosen, strengths, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def group_norms(fn: str, leaf: str, w: Array, axis: Axis) -> tuple[Array, Array]:
    """``w`` in ``accumulation_dtype`` and its ``safe_norm`` over ``axis`` (size-1 kept).

    ``axis`` (negative allowed) is checked against ``w``'s rank; an error names ``fn``
    and the params leaf ``leaf``. Shared by the group lasso, its prox and the norm
    constraints.
    """
    axes = normalize_leaf_axes(fn, "axis", axis, w.ndim, leaf)
    x = w.astype(accumulation_dtype(w))
    return x, safe_norm(x, axes)
