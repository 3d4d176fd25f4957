"""Pieces shared by the optax adapter modules (``jaxreg.optax``, ``jaxreg._optax_decay``).

Used only by the optax adapter (``import jaxreg`` never imports it, nor optax).

Hyperparameters (strengths, learning rates, multipliers) are numbers, scalar arrays or
schedules; strengths and weight decays may also be pytrees of those, one per leaf (or
subtree) of the params, broadcast by the core (``_trees.leaf_strengths``). They are
checked where their values are concrete, always under the transform's own name:
numbers and concrete arrays at construction, a schedule's value at every ``update``
that runs outside ``jit`` (``strength (from the schedule at step 3) must be >= 0``).
Inside ``jit`` a value cannot be inspected: a negative, NaN or infinite one then turns
the updates it would touch into NaN (``_numerics.nan_unless``).

``where`` is implemented once, by ``selective_update``, which every factory's
``update`` is built with. optax composes masking from outside (``optax.masked``
wraps a transform and hands it only the selected leaves); jaxreg keeps ``where`` an
argument of each factory instead, with the core's rules, because the state stays
one ``ScheduleState`` rather than a ``MaskedState`` around it, and because the proximal
steps and constraints need the whole params tree (a group-lasso ``axis`` check or a
penalty gradient sees the full structure, and errors name leaves by their full path).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreg._checks import (
    check_same_structure,
    check_scalar_nonnegative,
    describe,
    errors_named,
    fail,
    is_python_number,
    is_real_dtype,
    is_traced,
    valid_nonnegative,
)
from jaxreg._filters import Where, check_where_type, resolve_where
from jaxreg._numerics import nan_unless
from jaxreg._types import Array, PyTree

ScalarOrSchedule = float | Array | Callable[[Array], Array]
# A strength or weight decay: one value (or schedule) or a pytree of them per leaf.
StrengthOrSchedule = ScalarOrSchedule | PyTree

STATIC_ARGS_HINT = (
    " Under optax.inject_hyperparams, list every non-numeric argument (a function, "
    "axis, where) in static_args: it calls callables as schedules and turns numbers "
    "into arrays."
)


class ScheduleState(NamedTuple):
    """State of jaxreg's count-only transforms: the step count at which schedules are read.

    Shared by ``add_penalty``, the proximal transforms and ``decoupled_weight_decay``.
    """

    count: Array


def init_count(params: PyTree) -> ScheduleState:
    """``init`` of a count-only transform: ``ScheduleState(count=0)`` (int32)."""
    del params
    return ScheduleState(count=jnp.zeros([], jnp.int32))


def check_finite(fn: str, name: str, value: Any) -> None:
    """Raises ValueError if a concrete ``value`` is infinite (0 * inf would give NaN)."""
    if is_traced(value):
        return
    v = np.asarray(value)
    if np.any(np.isinf(v)):
        shown = value if is_python_number(value) else v.tolist()
        raise fail(fn, f"{name} must be finite, got {shown!r}.")


def _check_one(fn: str, name: str, value: Any) -> ScalarOrSchedule:
    if callable(value):
        return value
    if isinstance(value, str):
        raise fail(
            fn,
            f"{name} must be a number, a scalar array or a schedule, got {describe(value)}.",
            exc=TypeError,
        )
    out = check_scalar_nonnegative(fn, name, value)
    check_finite(fn, name, out)
    return out


def _is_single(value: Any) -> bool:
    return callable(value) or jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(value))


def check_hyperparameter(
    fn: str, name: str, value: Any, *, per_leaf: bool = False
) -> StrengthOrSchedule:
    """Schedules pass; numbers and arrays must be finite non-negative scalars.

    With ``per_leaf`` (strengths and weight decays) ``value`` may also be a pytree of
    those, each leaf checked and named by its path (``strength['dense']``); its
    structure is checked against the params in ``update``.
    """
    if not per_leaf or _is_single(value):
        return _check_one(fn, name, value)
    return jax.tree_util.tree_map_with_path(
        lambda path, v: _check_one(fn, f"{name}{jax.tree_util.keystr(path)}", v), value
    )


def check_unit_interval(fn: str, name: str, value: Any) -> Any:
    """A decay rate such as Adam's ``b1``: a number or concrete scalar in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not (
        is_python_number(value) or hasattr(value, "dtype")
    ):
        raise fail(fn, f"{name} must be a number in [0, 1), got {describe(value)}.", exc=TypeError)
    if not is_traced(value):
        v = np.asarray(value)
        if not is_real_dtype(v.dtype):
            raise fail(fn, f"{name} must be a real number, got dtype {v.dtype}.", exc=TypeError)
        if v.ndim != 0 or not 0.0 <= float(v) < 1.0:
            raise fail(fn, f"{name} must be a scalar in [0, 1), got {value!r}.")
    return value


def value_at(fn: str, name: str, value: StrengthOrSchedule, count: Array) -> Any:
    """``value`` at step ``count`` (a schedule is called); concrete values are checked.

    A number or an array was checked at construction and is returned as it is. A
    schedule's value, where concrete (``update`` outside ``jit``), must be a finite
    real scalar >= 0; the error names ``fn``, ``name`` and the step. A pytree of
    values (per-leaf strengths) is evaluated leaf by leaf.
    """
    if _is_single(value):
        return _value_at(fn, name, value, count)
    return jax.tree_util.tree_map_with_path(
        lambda path, v: _value_at(fn, f"{name}{jax.tree_util.keystr(path)}", v, count), value
    )


def _value_at(fn: str, name: str, value: ScalarOrSchedule, count: Array) -> float | Array:
    if not callable(value):
        return value
    v = value(count)
    if is_traced(v):
        return v
    step = "" if is_traced(count) else f" (from the schedule at step {int(count)})"
    arr = np.asarray(v)
    if not is_real_dtype(arr.dtype):
        raise fail(fn, f"{name}{step} must be a real number, got {v!r}.", exc=TypeError)
    if arr.ndim != 0:
        raise fail(fn, f"{name}{step} must be a scalar, got shape {arr.shape}.")
    f = float(arr)
    if math.isnan(f) or f < 0:
        raise fail(fn, f"{name}{step} must be >= 0, got {arr[()]}.")
    if math.isinf(f):
        raise fail(fn, f"{name}{step} must be finite, got {arr[()]}.")
    return v


def selective_update(
    fn: str,
    where: Where,
    step: Callable[[PyTree, PyTree, PyTree, Any], tuple[PyTree, list[Any]]],
    *,
    counted: bool = True,
    complex_ok: bool = False,
) -> Callable[..., tuple[PyTree, Any]]:
    """The ``update`` of a jaxreg.optax transform: the adapter's one implementation of ``where``.

    ``where`` is checked at construction as far as it can be without the params
    (``check_where_type``). At every ``update``: ``params`` must be given, with the
    updates' structure; ``where`` is resolved against them as in the core
    (``resolve_where``: a bool pytree of the params' exact structure, a callable such
    as ``jaxreg.kernels_only``, None for every array leaf); ``step(updates, params,
    selected, count)`` returns new updates and the hyperparameter values it used (any
    pytrees); errors it raises are renamed to ``fn``. Unselected leaves keep their
    updates bit for bit; selected ones become NaN if a traced value is negative, NaN or
    infinite. ``count`` is the ``ScheduleState`` count (None without ``counted``: the
    state, e.g. ``optax.EmptyState``, is returned as it is).
    """
    check_where_type(fn, where)

    def update(updates: PyTree, state: Any, params: PyTree | None = None) -> tuple[PyTree, Any]:
        require_params(fn, updates, params)
        selected = resolve_where(fn, params, where, complex_ok=complex_ok)
        with errors_named(fn):
            new, values = step(updates, params, selected, state.count if counted else None)
        valid = valid_nonnegative(*jax.tree_util.tree_leaves(values), finite=True)
        new = jax.tree_util.tree_map(
            lambda c, u, n: nan_unless(n, valid) if c else u, selected, updates, new
        )
        if not counted:
            return new, state
        return new, ScheduleState(count=optax.safe_int32_increment(state.count))

    return update


def check_signature(fn: str, name: str, func: Callable, passed: tuple[str, ...]) -> None:
    """``func(params, **{k: ... for k in passed})`` must be a complete, valid call.

    Catches at construction what would otherwise fail at the first ``update``: a
    required keyword left unbound (``constrain(jaxreg.max_norm)`` without
    ``max_value``) or a keyword that ``func`` does not take.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    params = list(sig.parameters.values())
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    label = _label(func)
    for key in passed:
        if key not in sig.parameters and not takes_any:
            raise fail(
                fn,
                f"{name} must accept the keyword {key!r}, which {fn.split('.')[-1]} passes; "
                f"{label} does not.",
                exc=TypeError,
            )
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    first = next((p for p in params if p.kind in positional), None)
    for p in params:
        required = p.default is inspect.Parameter.empty and p.kind in (
            *positional,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and p is not first and p.name not in passed:
            raise fail(
                fn,
                f"{name} {label} needs {p.name}, which {fn.split('.')[-1]} does not pass. "
                f"Bind it first: functools.partial({label}, {p.name}=...).",
                exc=TypeError,
            )


def _label(func: Callable) -> str:
    """``jaxreg.max_norm`` for jaxreg's functions (also inside a partial), else the name."""
    target = getattr(func, "func", func)  # functools.partial
    name = getattr(target, "__name__", None)
    if name is None:
        return repr(func)
    module = getattr(target, "__module__", "") or ""
    return f"jaxreg.{name}" if module.startswith("jaxreg") else name


def require_params(fn: str, updates: PyTree, params: PyTree | None) -> None:
    """``update`` needs ``params``, with exactly the structure of ``updates``."""
    if params is None:
        raise fail(
            fn,
            "params must be passed to update, got None. Call "
            "optimizer.update(grads, state, params).",
        )
    check_same_structure(fn, "updates", updates, params)
