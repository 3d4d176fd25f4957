"""Pieces shared by the optax adapter modules (``jaxreg.optax``, ``jaxreg._optax_decay``).

Used only by the optax adapter; this module itself does not import optax.

Hyperparameters (strengths, learning rates, multipliers) are numbers, scalar arrays or
schedules. They are checked where their values are concrete, always under the
transform's own name: numbers and concrete arrays at construction, a schedule's value
at every ``update`` that runs outside ``jit`` (``strength (from the schedule at step
3) must be >= 0``). Inside ``jit`` a value cannot be inspected: a negative, NaN or
infinite one then turns the updates it would touch into NaN (``poison``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import (
    check_same_structure,
    check_scalar_nonnegative,
    describe,
    fail,
    is_python_number,
    is_traced,
)
from jaxreg._types import PyTree

Array = jax.Array
ScalarOrSchedule = float | Array | Callable[[Array], Array]

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


def check_hyperparameter(fn: str, name: str, value: Any) -> ScalarOrSchedule:
    """Schedules pass; numbers and arrays must be finite non-negative scalars."""
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


def check_unit_interval(fn: str, name: str, value: Any) -> Any:
    """A decay rate such as Adam's ``b1``: a number or concrete scalar in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not (
        is_python_number(value) or hasattr(value, "dtype")
    ):
        raise fail(fn, f"{name} must be a number in [0, 1), got {describe(value)}.", exc=TypeError)
    if not is_traced(value):
        v = np.asarray(value)
        if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
            raise fail(fn, f"{name} must be a real number, got dtype {v.dtype}.", exc=TypeError)
        if v.ndim != 0 or not 0.0 <= float(v) < 1.0:
            raise fail(fn, f"{name} must be a scalar in [0, 1), got {value!r}.")
    return value


def value_at(fn: str, name: str, value: ScalarOrSchedule, count: Array) -> float | Array:
    """``value`` at step ``count`` (a schedule is called); concrete values are checked.

    A number or an array was checked at construction and is returned as it is. A
    schedule's value, where concrete (``update`` outside ``jit``), must be a finite
    real scalar >= 0; the error names ``fn``, ``name`` and the step.
    """
    if not callable(value):
        return value
    v = value(count)
    if is_traced(v):
        return v
    step = "" if is_traced(count) else f" (from the schedule at step {int(count)})"
    arr = np.asarray(v)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise fail(fn, f"{name}{step} must be a real number, got {v!r}.", exc=TypeError)
    if arr.ndim != 0:
        raise fail(fn, f"{name}{step} must be a scalar, got shape {arr.shape}.")
    if math.isnan(float(arr)) or float(arr) < 0:
        raise fail(fn, f"{name}{step} must be >= 0, got {arr[()]}.")
    if math.isinf(float(arr)):
        raise fail(fn, f"{name}{step} must be finite, got {arr[()]}.")
    return v


def poison(tree: PyTree, selected: PyTree, values: Sequence[Any]) -> PyTree:
    """NaN in the selected leaves of ``tree`` if a non-Python value is invalid.

    A value is invalid if it is negative, NaN or infinite. Python numbers were checked
    already and add nothing to the program.
    """
    arrays = [v for v in values if not is_python_number(v)]
    if not arrays:
        return tree
    valid = jnp.all(jnp.stack([(v >= 0) & jnp.isfinite(v) for v in map(jnp.asarray, arrays)]))
    return jax.tree_util.tree_map(
        lambda chosen, u: jnp.where(valid, u, jnp.asarray(jnp.nan, u.dtype)) if chosen else u,
        selected,
        tree,
    )


def check_callable(fn: str, name: str, value: Any) -> None:
    """Raises TypeError unless ``value`` is callable."""
    if not callable(value):
        hint = STATIC_ARGS_HINT if hasattr(value, "dtype") else ""
        raise fail(fn, f"{name} must be callable, got {describe(value)}.{hint}", exc=TypeError)


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
