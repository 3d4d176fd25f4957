"""Which parameters a penalty, constraint or proximal step touches: ``where`` and filters.

A ``where`` argument is either a pytree of Python bools with exactly the structure of
the parameters (one bool per leaf), or a callable ``params -> such a pytree``. It is
never a prefix of the parameters: a shorter tree is an error, not a guess. The builders
here (``kernels_only``, ``by_path``) return such plain bool pytrees, so they work for any
container JAX can flatten: dicts, ``flax.core.FrozenDict``, flax linen
``variables["params"]``, ``flax.nnx.State`` and equinox modules.

Key paths are turned into names as follows: dict keys and attribute names as they are,
sequence indices as decimal strings. A trailing ``.value`` attribute (the array inside a
``flax.nnx.Variable``) is dropped, so ``nnx.state(model, nnx.Param)`` gives the names
``"dense/kernel"``, like linen's ``{"dense": {"kernel": ...}}``. An equinox
``eqx.nn.MLP`` gives ``"layers/0/weight"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import check_regex, check_same_structure, describe, fail
from jaxreg._types import PyTree

Where = PyTree | Callable[[PyTree], PyTree] | None

# Leaf names that are never kernels: biases and the learned scale/offset of norm layers.
NON_KERNEL_NAMES = frozenset({"bias", "scale", "offset", "gamma", "beta"})

_VARIABLE_ATTRS = frozenset({"value", "raw_value"})


def key_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """The names along a key path (see the module docstring for the rules)."""
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            names.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            names.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            names.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            names.append(str(entry.key))
        else:
            names.append(str(entry))
    last = path[-1] if path else None
    if (
        len(names) > 1
        and isinstance(last, jax.tree_util.GetAttrKey)
        and last.name in _VARIABLE_ATTRS
    ):
        names.pop()
    return tuple(names)


def path_string(path: tuple[Any, ...]) -> str:
    """The ``/``-joined names of a key path, e.g. ``"Dense_0/kernel"``."""
    return "/".join(key_names(path))


def is_array(leaf: Any) -> bool:
    """JAX and NumPy arrays (including tracers); not Python scalars or other objects."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def is_float_array(leaf: Any) -> bool:
    """Arrays of a floating dtype."""
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)


def _map_with_names(fn: Callable[[tuple[str, ...], Any], bool], params: PyTree) -> PyTree:
    return jax.tree_util.tree_map_with_path(lambda p, leaf: fn(key_names(p), leaf), params)


def kernels_only(params: PyTree, *, include_embeddings: bool = False) -> PyTree:
    """Selects weight matrices and convolution kernels.

    A leaf is selected when all of these hold:

    * it is a floating-point array of rank >= 2;
    * its own name (the last name of its key path) is not ``bias``, ``scale``,
      ``offset``, ``gamma`` or ``beta``;
    * unless ``include_embeddings``, no name along its path contains ``embed``
      (case-insensitive): flax's ``Embed_0/embedding`` and ``nnx.Embed``'s
      ``embedding``, and an equinox ``eqx.nn.Embedding`` stored in a field named
      ``embed...``. An equinox embedding held under another name is a plain ``weight``
      and counts as a kernel.

    So biases and the scales/offsets of LayerNorm, BatchNorm, GroupNorm and RMSNorm
    (vectors in flax, equinox and haiku) are excluded by rank and by name, and
    non-array leaves (the activation functions of an equinox module) are never selected.

    Args:
      params: any pytree of parameters.
      include_embeddings: also select embedding tables.

    Returns:
      A pytree of Python bools with the structure of ``params``, usable as ``where``.

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
      >>> jaxreg.kernels_only(params)
      {'dense': {'bias': False, 'kernel': True}}
    """

    def select(names: tuple[str, ...], leaf: Any) -> bool:
        if not is_float_array(leaf) or leaf.ndim < 2:
            return False
        if names and names[-1].lower() in NON_KERNEL_NAMES:
            return False
        return include_embeddings or not any("embed" in n.lower() for n in names)

    return _map_with_names(select, params)


def by_path(params: PyTree, pattern: str | re.Pattern[str]) -> PyTree:
    """Selects floating-point arrays whose ``/``-joined key path matches a regex.

    The pattern is searched anywhere in the path (``re.search``); anchor it with ``^``
    and ``$`` for a full match. Names are built as described in the module docstring,
    e.g. ``"Dense_0/kernel"`` (linen), ``"dense/kernel"`` (nnx), ``"layers/0/weight"``
    (equinox). Non-float and non-array leaves are never selected.

    Args:
      params: any pytree of parameters.
      pattern: a regular expression (string or compiled).

    Returns:
      A pytree of Python bools with the structure of ``params``, usable as ``where``.

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> params = {"enc": {"w": jnp.ones(2)}, "dec": {"w": jnp.ones(2)}}
      >>> jaxreg.by_path(params, r"^enc/")
      {'dec': {'w': False}, 'enc': {'w': True}}
    """
    regex = check_regex("by_path", "pattern", pattern)
    return _map_with_names(
        lambda names, leaf: is_float_array(leaf) and regex.search("/".join(names)) is not None,
        params,
    )


def _check_bool(fn: str, path: tuple[Any, ...], flag: Any) -> bool:
    if isinstance(flag, (bool, np.bool_)):
        return bool(flag)
    if is_array(flag) and flag.dtype == jnp.bool_ and flag.shape == ():
        if isinstance(flag, jax.core.Tracer):
            raise fail(
                fn,
                f"where must hold concrete bools, got a traced value at "
                f"{path_string(path)!r}. Close over where instead of passing it through jit.",
                exc=TypeError,
            )
        return bool(flag)
    raise fail(
        fn,
        f"where must hold one bool per parameter leaf, got {describe(flag)} at "
        f"{path_string(path)!r}.",
        exc=TypeError,
    )


def resolve_where(fn: str, params: PyTree, where: Where) -> PyTree:
    """Turns a ``where`` argument into a validated bool pytree of ``params``' structure.

    ``None`` selects every array leaf (non-array leaves such as functions are skipped).
    A callable is called on ``params``, except a callable pytree with exactly
    ``params``' structure (an equinox module of bools), which is the mask itself. The
    result must have exactly ``params``' structure (ValueError otherwise) and Python
    bool leaves; every selected leaf must be a floating-point array (TypeError
    otherwise).

    Args:
      fn: the public function's name, for error messages.
      params: the parameters.
      where: None, a bool pytree, or a callable returning one.

    Returns:
      A pytree of Python bools with the structure of ``params``.
    """
    if where is None:
        mask = jax.tree_util.tree_map(is_array, params)
    else:
        # An equinox module of bools is callable but is a mask, not a filter function. A
        # plain function is a leaf, as is a bare array ``params``: equal leaf structures
        # say nothing, so only a non-leaf structure equal to ``params``' marks a mask.
        where_def = jax.tree_util.tree_structure(where)
        is_mask = not jax.tree_util.treedef_is_leaf(where_def) and (
            where_def == jax.tree_util.tree_structure(params)
        )
        if callable(where) and not is_mask and not jax.tree_util.treedef_is_leaf(where_def):
            # A callable pytree of another structure: an equinox module of bools (e.g.
            # kernels_only(model)) against filtered params. Calling it would run the model.
            check_same_structure(fn, "where", where, params)
        mask = where(params) if callable(where) and not is_mask else where
        check_same_structure(fn, "where", mask, params)
        mask = jax.tree_util.tree_map_with_path(lambda p, f: _check_bool(fn, p, f), mask)
    for (path, leaf), selected in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(mask), strict=True
    ):
        if selected and not is_float_array(leaf):
            what = f"dtype {leaf.dtype}" if is_array(leaf) else type(leaf).__name__
            raise fail(
                fn,
                f"params leaf {path_string(path)!r} must be a floating-point array to be "
                f"regularized, got {what}. Exclude it with where=... (e.g. "
                "jaxreg.kernels_only) or cast it to a float dtype.",
                exc=TypeError,
            )
    return mask


def map_selected(fn: Callable[[tuple[Any, ...], Any], Any], params: PyTree, mask: PyTree) -> PyTree:
    """Applies ``fn(key_path, leaf)`` to the selected leaves; others are unchanged."""
    return jax.tree_util.tree_map_with_path(
        lambda path, m, leaf: fn(path, leaf) if m else leaf, mask, params
    )
