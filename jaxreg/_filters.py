"""Which parameters a penalty, constraint or proximal step touches: ``where`` and filters.

A ``where`` argument is either a pytree of Python bools with exactly the structure of
the parameters (one bool per leaf), or a callable ``params -> such a pytree``. It is
never a prefix of the parameters: a shorter tree is an error, not a guess, and so are a
string (use ``by_path``) and a lone bool (``None`` already means every leaf). The builders
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
    """Arrays of a real floating dtype."""
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating)


def is_inexact_array(leaf: Any) -> bool:
    """Arrays of a real or complex floating dtype."""
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _map_with_names(fn: Callable[[tuple[str, ...], Any], bool], params: PyTree) -> PyTree:
    return jax.tree_util.tree_map_with_path(lambda p, leaf: fn(key_names(p), leaf), params)


def kernels_only(params: PyTree, *, include_embeddings: bool = False) -> PyTree:
    """Selects weight matrices and convolution kernels.

    A leaf is selected when all of these hold:

    * it is a floating-point (real or complex) array of rank >= 2;
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
        if not is_inexact_array(leaf) or leaf.ndim < 2:
            return False
        if names and names[-1].lower() in NON_KERNEL_NAMES:
            return False
        return include_embeddings or not any("embed" in n.lower() for n in names)

    return _map_with_names(select, params)


def by_path(params: PyTree, pattern: str | re.Pattern[str]) -> PyTree:
    """Selects floating-point (real or complex) arrays whose key path matches a regex.

    The pattern is searched anywhere in the path (``re.search``); anchor it with ``^``
    and ``$`` for a full match. Names are built as described in the module docstring,
    e.g. ``"Dense_0/kernel"`` (linen), ``"dense/kernel"`` (nnx), ``"layers/0/weight"``
    (equinox). Integer, bool and non-array leaves are never selected.

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
        lambda names, leaf: is_inexact_array(leaf) and regex.search("/".join(names)) is not None,
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


LONE_BOOL_REASON = (
    "A lone bool is not accepted as all/none: pass where=None for every array leaf, "
    "and leave the regularizer out (or use strength 0) for none. (Under "
    "optax.inject_hyperparams, a callable where not listed in static_args is called on "
    "the step count and becomes such a lone bool.)"
)


def check_where_type(fn: str, where: Any) -> None:
    """What can be checked of ``where`` without the params (optax factories call it).

    Strings and lone bools are rejected with their fix; the leaves of a pytree must be
    bools. The structure is checked against the params in ``resolve_where``.
    """
    if where is None or (callable(where) and not _is_pytree_node(where)):
        return
    if isinstance(where, (str, re.Pattern)):
        raise _string_where(fn, where)
    if isinstance(where, (bool, np.bool_)):
        raise fail(
            fn,
            f"where must be None, a callable or a pytree of bools, got {bool(where)}. "
            + LONE_BOOL_REASON,
            exc=TypeError,
        )
    for path, flag in jax.tree_util.tree_leaves_with_path(where):
        _check_bool(fn, path, flag)


def _is_pytree_node(value: Any) -> bool:
    return not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(value))


def _string_where(fn: str, where: Any) -> Exception:
    pattern = where.pattern if isinstance(where, re.Pattern) else where
    return fail(
        fn,
        f"where must be a bool pytree or a callable, got {where!r}: a string is not a "
        f"selection. Use where=jaxreg.by_path(params, {pattern!r}) (or "
        f"where=lambda p: jaxreg.by_path(p, {pattern!r})).",
        exc=TypeError,
    )


def _count_hint(params: PyTree) -> str:
    """A hint when ``params`` looks like optax's step count (a bare integer scalar)."""
    if is_array(params) and params.ndim == 0 and jnp.issubdtype(params.dtype, jnp.integer):
        return (
            " A bare integer scalar as params is what optax.inject_hyperparams passes "
            "when it calls a function argument as a schedule (on its step count): list "
            "that argument in static_args."
        )
    return ""


def resolve_where(fn: str, params: PyTree, where: Where, *, complex_ok: bool = False) -> PyTree:
    """Turns a ``where`` argument into a validated bool pytree of ``params``' structure.

    ``None`` selects every array leaf (non-array leaves such as functions are skipped).
    A callable is called on ``params``, except a callable pytree with exactly
    ``params``' structure (an equinox module of bools), which is the selection itself.
    The result must have exactly ``params``' structure (ValueError otherwise) and Python
    bool leaves; a string or a lone bool (for a params pytree with several leaves) is a
    TypeError with its fix. Every selected leaf must be a floating-point array, or a
    complex one where ``complex_ok`` (TypeError otherwise).

    Args:
      fn: the public function's name, for error messages.
      params: the parameters.
      where: None, a bool pytree, or a callable returning one.
      complex_ok: also accept complex leaves (decoupled weight decay).

    Returns:
      A pytree of Python bools with the structure of ``params``.
    """
    if where is None:
        selected = jax.tree_util.tree_map(is_array, params)
    else:
        if isinstance(where, (str, re.Pattern)):
            raise _string_where(fn, where)
        # An equinox module of bools is callable but is a selection, not a filter
        # function. A plain function is a leaf, as is a bare array ``params``: equal leaf
        # structures say nothing, so only a non-leaf structure equal to ``params``'
        # marks a selection.
        where_def = jax.tree_util.tree_structure(where)
        is_selection = not jax.tree_util.treedef_is_leaf(where_def) and (
            where_def == jax.tree_util.tree_structure(params)
        )
        if callable(where) and not is_selection and not jax.tree_util.treedef_is_leaf(where_def):
            # A callable pytree of another structure: an equinox module of bools (e.g.
            # kernels_only(model)) against filtered params. Calling it would run the model.
            check_same_structure(fn, "where", where, params)
        selected = where(params) if callable(where) and not is_selection else where
        if isinstance(selected, (str, re.Pattern)):
            raise _string_where(fn, selected)
        if isinstance(selected, (bool, np.bool_)) and _is_pytree_node(params):
            raise fail(
                fn,
                f"where must have one bool per parameter leaf, got {bool(selected)} for a "
                f"params pytree with {len(jax.tree_util.tree_leaves(params))} leaves. "
                + LONE_BOOL_REASON,
                exc=TypeError,
            )
        check_same_structure(fn, "where", selected, params)
        selected = jax.tree_util.tree_map_with_path(lambda p, f: _check_bool(fn, p, f), selected)
    allowed = is_inexact_array if complex_ok else is_float_array
    for (path, leaf), chosen in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree_util.tree_leaves(selected),
        strict=True,
    ):
        if chosen and not allowed(leaf):
            what = f"dtype {leaf.dtype}" if is_array(leaf) else type(leaf).__name__
            kind = "floating-point (real or complex)" if complex_ok else "floating-point"
            raise fail(
                fn,
                f"params leaf {path_string(path)!r} must be a {kind} array to be "
                f"regularized, got {what}. Exclude it with where=... (e.g. "
                "jaxreg.kernels_only) or cast it to a float dtype." + _count_hint(params),
                exc=TypeError,
            )
    return selected


def map_selected(
    fn: Callable[[tuple[Any, ...], Any], Any], params: PyTree, selected: PyTree
) -> PyTree:
    """Applies ``fn(key_path, leaf)`` to the selected leaves; others are unchanged."""
    return jax.tree_util.tree_map_with_path(
        lambda path, chosen, leaf: fn(path, leaf) if chosen else leaf, selected, params
    )
