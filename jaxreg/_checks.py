"""Argument validation shared by every public function.

Every error jaxreg raises is built here, so the wording is the same everywhere:
``jaxreg.<function>: <argument> must be <what>, got <value>. <fix>``.

Concrete values (Python numbers, NumPy values, concrete JAX arrays) are checked
eagerly. Traced values cannot be inspected; the functions that accept them document
what an out-of-range traced value does (for rates: NaN outputs).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def fail(fn: str, message: str, *, exc: type[Exception] = ValueError) -> Exception:
    """Returns an exception whose message starts with ``jaxreg.<fn>:``."""
    return exc(f"jaxreg.{fn}: {message}")


def is_traced(value: Any) -> bool:
    """Whether ``value`` is an abstract tracer (inside jit, vmap, grad, scan...)."""
    return isinstance(value, jax.core.Tracer)


def is_python_number(value: Any) -> bool:
    """Python or NumPy scalar numbers (not bool, not arrays)."""
    return isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_))


def check_float_array(fn: str, name: str, x: Any) -> Array:
    """Returns ``x`` as a JAX array of a floating dtype, or raises TypeError."""
    if isinstance(x, (bool, np.bool_)) or (not hasattr(x, "dtype") and not is_python_number(x)):
        raise fail(
            fn, f"{name} must be a floating-point array, got {type(x).__name__}.", exc=TypeError
        )
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise fail(
            fn,
            f"{name} must be a floating-point array, got dtype {dtype}. "
            f"Cast it first, e.g. {name}.astype(jnp.float32).",
            exc=TypeError,
        )
    return jnp.asarray(x)


def check_probability(fn: str, name: str, value: Any) -> float | Array:
    """Validates a probability hyperparameter (a rate).

    Returns a Python float for Python/NumPy numbers (checked to lie in [0, 1]) and a
    float32 scalar JAX array otherwise. Concrete arrays are checked eagerly; traced ones
    are the caller's responsibility (jaxreg turns an invalid traced rate into NaN).
    """
    if is_python_number(value):
        v = float(value)
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise fail(fn, f"{name} must be in [0, 1], got {value!r}.")
        return v
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "dtype"):
        raise fail(
            fn,
            f"{name} must be a number in [0, 1] or a scalar array, got {type(value).__name__}.",
            exc=TypeError,
        )
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise fail(fn, f"{name} must be a real number, got dtype {dtype}.", exc=TypeError)
    if np.ndim(value) != 0:
        raise fail(
            fn,
            f"{name} must be a scalar, got shape {np.shape(value)}. "
            "To use several rates at once, jax.vmap over them.",
        )
    if not is_traced(value):
        v = float(np.asarray(value))
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise fail(fn, f"{name} must be in [0, 1], got {v!r}.")
    return jnp.asarray(value, dtype=jnp.float32)


def check_nonnegative(fn: str, name: str, value: Any) -> float | Array:
    """Validates a non-negative scalar hyperparameter (a strength, a threshold)."""
    if is_python_number(value):
        v = float(value)
        if math.isnan(v) or v < 0.0:
            raise fail(fn, f"{name} must be >= 0, got {value!r}.")
        return v
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "dtype"):
        raise fail(
            fn, f"{name} must be a number or an array, got {type(value).__name__}.", exc=TypeError
        )
    if not is_traced(value):
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise fail(fn, f"{name} must be real, got dtype {arr.dtype}.", exc=TypeError)
        if np.isnan(arr).any() or (arr < 0).any():
            raise fail(fn, f"{name} must be >= 0, got {arr.tolist()!r}.")
    return jnp.asarray(value)


def check_positive_int(fn: str, name: str, value: Any) -> int:
    """Validates a Python integer >= 1 (a sample count, a block size, a depth)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise fail(
            fn, f"{name} must be a Python int >= 1, got {type(value).__name__}.", exc=TypeError
        )
    if value < 1:
        raise fail(fn, f"{name} must be >= 1, got {value}.")
    return int(value)


def normalize_axes(fn: str, name: str, axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Normalizes (possibly negative) axes against ``ndim``; rejects out-of-range ones."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (int(axes),)
    try:
        items = tuple(axes)
    except TypeError:
        raise fail(
            fn, f"{name} must be an int or a sequence of ints, got {axes!r}.", exc=TypeError
        ) from None
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise fail(fn, f"{name} must hold ints, got {a!r}.", exc=TypeError)
        if not -ndim <= a < ndim:
            raise fail(
                fn,
                f"{name} holds axis {a}, out of range for an input of rank {ndim} "
                f"(valid: {-ndim} to {ndim - 1}).",
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise fail(fn, f"{name} repeats an axis: {items!r}.")
    return tuple(sorted(out))


# Checks shared by penalties, constraints, proximal operators and filters.


def check_scalar_nonnegative(fn: str, name: str, value: Any) -> float | Array:
    """Like ``check_nonnegative``, and the value must be a scalar (vmap for several)."""
    out = check_nonnegative(fn, name, value)
    if not isinstance(out, float) and np.ndim(out) != 0:
        raise fail(
            fn,
            f"{name} must be a scalar, got shape {np.shape(out)}. "
            f"To use several values at once, jax.vmap over {name}.",
        )
    return out


def poison_negative(out: Array, value: float | Array) -> Array:
    """NaN everywhere if a traced (non-Python) ``value`` is negative or NaN."""
    if isinstance(value, float):
        return out
    return jnp.where(value >= 0, out, jnp.array(jnp.nan, out.dtype))


def check_choice(fn: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Validates a string option against ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise fail(fn, f"{name} must be one of {options}, got {value!r}.")
    return value


def _brief(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_structure(fn: str, name: str, tree: Any, params: Any) -> None:
    """Raises ValueError unless ``tree`` has exactly the pytree structure of ``params``."""
    tree_def = jax.tree_util.tree_structure(tree)
    params_def = jax.tree_util.tree_structure(params)
    if tree_def == params_def:
        return
    keystr = jax.tree_util.keystr
    tree_paths = [keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    params_paths = [keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    tree_set, params_set = set(tree_paths), set(params_paths)
    missing = [p for p in params_paths if p not in tree_set]
    extra = [p for p in tree_paths if p not in params_set]
    if missing:
        detail = f" The params leaf {missing[0]} has no entry in {name}."
    elif extra:
        detail = f" {name} has {extra[0]}, which params lacks."
    else:
        detail = " The containers differ (e.g. dict vs FrozenDict, or a module type)."
    raise fail(
        fn,
        f"{name} must have the same pytree structure as params (one bool per leaf; a "
        f"prefix is not expanded), got {_brief(str(tree_def))} for params "
        f"{_brief(str(params_def))}.{detail} Build it with jax.tree.map over params or a "
        "filter such as jaxreg.kernels_only.",
    )


def normalize_leaf_axes(
    fn: str, name: str, axes: int | Sequence[int], ndim: int, leaf: str
) -> tuple[int, ...]:
    """``normalize_axes`` for one leaf of a pytree; an error also names the leaf."""
    try:
        return normalize_axes(fn, name, axes, ndim)
    except (ValueError, TypeError) as err:
        raise type(err)(f"{err} Params leaf: {leaf!r}.") from None
