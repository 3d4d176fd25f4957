"""Argument validation shared by every public function.

Every error jaxreg raises goes through ``fail`` here, and every check used by more than
one function (rates, strengths, flags, shapes, axes, keys, callables, choices, pytree
structure) is written here once, so the wording is the same everywhere:
``jaxreg.<function>: <argument> must be <what>, got <value>. <fix>``, the value shown
with ``describe`` (``got '0.5' (a str)``). Only checks specific to one op (a rank, a
kernel shape) are written next to it, still with ``fail``.

Concrete values (Python numbers, NumPy values, concrete JAX arrays) are checked
eagerly. Traced values cannot be inspected; the functions that accept them document
what an out-of-range traced value does (for rates and strengths: NaN outputs and NaN
gradients).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._types import Array, Shape


def fail(fn: str, message: str, *, exc: type[Exception] = ValueError) -> Exception:
    """Returns an exception whose message starts with ``jaxreg.<fn>:``."""
    return exc(f"jaxreg.{fn}: {message}")


@contextlib.contextmanager
def errors_named(adapter: str) -> Iterator[None]:
    """Re-raises a jaxreg error of an inner function under an adapter's name.

    ``adapter`` is the adapter's name without ``jaxreg.``: ``"linen.Dropout"``,
    ``"optax.proximal_group_lasso"``. ``jaxreg.dropout: rate must be ...`` raised inside
    becomes ``jaxreg.linen.Dropout: rate must be ... (raised by jaxreg.dropout)``.
    Errors that do not come from jaxreg, and those already under ``adapter``'s name,
    pass through unchanged.
    """
    try:
        yield
    except (TypeError, ValueError) as err:
        found = re.match(r"jaxreg\.([\w.]+): (.*)", str(err), re.DOTALL)
        if found is None or found.group(1) == adapter:
            raise
        inner, message = found.groups()
        raise type(err)(f"jaxreg.{adapter}: {message} (raised by jaxreg.{inner})") from None


def is_traced(value: Any) -> bool:
    """Whether ``value`` is an abstract tracer (inside jit, vmap, grad, scan...)."""
    return isinstance(value, jax.core.Tracer)


def is_python_number(value: Any) -> bool:
    """Python or NumPy real scalars (not bool, not complex, not arrays)."""
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def brief(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """A value and its type for a message: ``'0.5' (a str)``, ``an array of dtype ...``."""
    if is_traced(value):
        return f"a traced value of dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, (jax.Array, np.ndarray)):
        try:
            item = value.item() if np.ndim(value) == 0 else None
        except NotImplementedError:  # PRNG key arrays
            item = None
        if item is None:
            return f"an array of dtype {value.dtype} and shape {value.shape}"
        return f"{brief(repr(item), 60)} (a scalar array of dtype {value.dtype})"
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    return f"{brief(repr(value), 60)} ({article} {kind})"


def check_float_array(fn: str, name: str, x: Any) -> Array:
    """Returns ``x`` as a JAX array of a floating dtype, or raises TypeError."""
    if isinstance(x, (bool, np.bool_)) or (not hasattr(x, "dtype") and not is_python_number(x)):
        raise fail(fn, f"{name} must be a floating-point array, got {describe(x)}.", exc=TypeError)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise fail(
            fn,
            f"{name} must be a floating-point array, got dtype {dtype}. "
            f"Cast it first, e.g. {name}.astype(jnp.float32).",
            exc=TypeError,
        )
    return jnp.asarray(x)


def check_real(fn: str, name: str, value: Any, what: str) -> float | Array:
    """A real scalar hyperparameter: a Python float, or a JAX array of a real dtype.

    Python and NumPy real numbers become Python floats (complex ones are rejected, not
    silently cast); arrays, concrete or traced, must have an integer or floating dtype.
    ``what`` completes "``name`` must be ..." in the TypeError.
    """
    if is_python_number(value):
        return float(value)
    if isinstance(value, (bool, np.bool_)) or not hasattr(value, "dtype"):
        raise fail(fn, f"{name} must be {what}, got {describe(value)}.", exc=TypeError)
    if not is_real_dtype(value.dtype):
        complex_ = is_real_dtype(value.dtype, complex_ok=True)
        note = " Complex numbers are not accepted." if complex_ else ""
        raise fail(fn, f"{name} must be {what}, got {describe(value)}.{note}", exc=TypeError)
    return jnp.asarray(value)


def is_real_dtype(dtype: Any, *, complex_ok: bool = False) -> bool:
    """Integer or floating dtypes, bfloat16 and float8 included.

    NumPy's ``kind`` is ``"V"`` for bfloat16 and float8, so it cannot be used. Complex
    dtypes count too if ``complex_ok``; bool and PRNG key dtypes never do.
    """
    try:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            return False
        kinds = (jnp.integer, jnp.floating, jnp.complexfloating if complex_ok else jnp.floating)
        return any(jnp.issubdtype(dtype, k) for k in kinds)
    except TypeError:
        return False


def _shown(value: Any, checked: float) -> Any:
    """A Python number as given (``2``, ``1.5``); a NumPy scalar as its float value."""
    return value if type(value) in (int, float) else checked


def _check_scalar(fn: str, name: str, value: Array) -> None:
    if np.ndim(value) != 0:
        raise fail(
            fn,
            f"{name} must be a scalar, got shape {np.shape(value)}. "
            f"To use several values at once, jax.vmap over {name}.",
        )


def check_probability(fn: str, name: str, value: Any) -> float | Array:
    """Validates a probability hyperparameter (a rate).

    Returns a Python float for Python/NumPy numbers (checked to lie in [0, 1]) and a
    scalar JAX array otherwise: float64 if it is float64 (under ``jax_enable_x64``),
    float32 for every other dtype. Concrete arrays are checked eagerly; traced ones
    are the caller's responsibility (jaxreg turns an invalid traced rate into NaN).
    """
    v = check_real(fn, name, value, "a number in [0, 1] or a scalar array")
    if isinstance(v, float):
        if math.isnan(v) or not 0.0 <= v <= 1.0:
            raise fail(fn, f"{name} must be in [0, 1], got {_shown(value, v)!r}.")
        return v
    _check_scalar(fn, name, v)
    if not is_traced(v):
        c = float(np.asarray(v))
        if math.isnan(c) or not 0.0 <= c <= 1.0:
            raise fail(fn, f"{name} must be in [0, 1], got {c!r}.")
    return v if v.dtype == jnp.float64 else v.astype(jnp.float32)


def check_nonnegative(fn: str, name: str, value: Any, *, finite: bool = False) -> float | Array:
    """Validates a non-negative hyperparameter (a strength, a threshold, a bound).

    With ``finite=True`` infinity is rejected too (a penalty coefficient: ``inf * 0`` is
    NaN). Returns a Python float for Python numbers, else a JAX array.
    """
    v = check_real(fn, name, value, "a number >= 0 or an array")
    if is_traced(v):
        return v
    arr = np.asarray(v)
    shown = _shown(value, v) if isinstance(v, float) else arr.tolist()
    if np.isnan(arr).any() or (arr < 0).any():
        raise fail(fn, f"{name} must be >= 0, got {shown!r}.")
    if finite and np.isinf(arr).any():
        raise fail(
            fn, f"{name} must be finite (inf * 0 would be NaN), got {shown!r}.", exc=ValueError
        )
    return v


def check_scalar_nonnegative(
    fn: str, name: str, value: Any, *, finite: bool = False
) -> float | Array:
    """Like ``check_nonnegative``, and the value must be a scalar (vmap for several)."""
    out = check_nonnegative(fn, name, value, finite=finite)
    if not isinstance(out, float):
        _check_scalar(fn, name, out)
    return out


def valid_nonnegative(*values: Any, finite: bool = False) -> bool | Array:
    """Whether every checked value is >= 0 (and finite if ``finite``), for ``nan_unless``.

    Python numbers were checked eagerly and count as valid: if all ``values`` are
    Python numbers the answer is the Python ``True`` and ``nan_unless`` adds nothing
    to the program. Otherwise a scalar bool array over the array values (NaN fails).
    """
    unique = {id(v): v for v in values if not is_python_number(v)}  # shared per leaf
    arrays = [jnp.asarray(v) for v in unique.values()]
    if not arrays:
        return True
    ok = [(v >= 0) & jnp.isfinite(v) if finite else v >= 0 for v in arrays]
    return functools.reduce(jnp.logical_and, ok)


def check_positive_int(fn: str, name: str, value: Any) -> int:
    """Validates a Python integer >= 1 (a sample count, a block size, a depth)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise fail(fn, f"{name} must be a Python int >= 1, got {describe(value)}.", exc=TypeError)
    if value < 1:
        raise fail(fn, f"{name} must be >= 1, got {value}.")
    return int(value)


def check_bool(fn: str, name: str, value: Any) -> bool:
    """Validates a flag: a Python (or NumPy, or concrete scalar JAX) bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if is_traced(value):
        raise fail(
            fn,
            f"{name} must be a Python bool, got {describe(value)}. It selects the "
            f"computation, so it cannot be traced: pass {name} as a Python bool (close "
            "over it, or mark it static in jax.jit).",
            exc=TypeError,
        )
    if isinstance(value, jax.Array) and value.dtype == jnp.bool_ and value.shape == ():
        return bool(value)
    raise fail(fn, f"{name} must be a bool (True or False), got {describe(value)}.", exc=TypeError)


def check_shape(fn: str, name: str, shape: Any) -> Shape:
    """Validates a shape: a sequence of Python ints >= 0 (never silently truncated)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise fail(fn, f"{name} must be a tuple of ints, got {describe(shape)}.", exc=TypeError)
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise fail(
                fn,
                f"{name} must be a tuple of ints, got {tuple(shape)!r} (holding {describe(d)}).",
                exc=TypeError,
            )
    out = tuple(int(d) for d in shape)
    if any(d < 0 for d in out):
        raise fail(fn, f"{name} must be non-negative, got {out}.")
    return out


def check_callable(
    fn: str, name: str, value: Any, signature: str = "", *, array_hint: str = ""
) -> Any:
    """Validates a function argument.

    ``signature`` (e.g. ``fn(key, *args)``) completes the message; ``array_hint`` is
    appended when an array was passed instead (the optax adapter's note on
    ``optax.inject_hyperparams``, which turns arguments into arrays).
    """
    if not callable(value):
        shape = f" {signature}" if signature else ""
        hint = array_hint if hasattr(value, "dtype") else ""
        raise fail(
            fn, f"{name} must be callable{shape}, got {describe(value)}.{hint}", exc=TypeError
        )
    return value


def check_choice(fn: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Validates a string option against ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise fail(fn, f"{name} must be one of {options}, got {value!r}.")
    return value


def check_regex(fn: str, name: str, pattern: Any) -> re.Pattern[str]:
    """Compiles a regular expression argument, with jaxreg's error on a bad one."""
    if not isinstance(pattern, (str, re.Pattern)):
        raise fail(fn, f"{name} must be a regex string, got {describe(pattern)}.", exc=TypeError)
    try:
        return re.compile(pattern)
    except re.error as err:
        raise fail(
            fn,
            f"{name} is not a valid regular expression: {pattern!r} ({err}). Escape "
            r"literal characters such as ( [ . with a backslash, or use re.escape(name).",
        ) from None


def normalize_axes(fn: str, name: str, axes: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Normalizes (possibly negative) axes against ``ndim``; rejects out-of-range ones."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (int(axes),)
    try:
        items = tuple(axes)
    except TypeError:
        raise fail(
            fn, f"{name} must be an int or a sequence of ints, got {describe(axes)}.", exc=TypeError
        ) from None
    out = []
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise fail(fn, f"{name} must hold ints, got {describe(a)}.", exc=TypeError)
        if not -ndim <= a < ndim:
            raise fail(
                fn,
                f"{name} holds axis {a}, out of range for an input of rank {ndim} "
                f"(valid: {-ndim} to {ndim - 1}).",
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise fail(
            fn,
            f"{name} repeats an axis: {items!r} (axes of rank {ndim} after negative ones are "
            f"counted from the end). List each axis once, e.g. {tuple(sorted(set(out)))}.",
        )
    return tuple(sorted(out))


def check_channel_axis(fn: str, channel_axis: Any, ndim: int) -> int:
    """The normalized channel axis of a batched input; it must not be 0 (the batch)."""
    (channel,) = normalize_axes(fn, "channel_axis", channel_axis, ndim)
    if channel == 0:
        raise fail(
            fn,
            f"channel_axis must not be 0 (the batch axis), got {channel_axis}; "
            "channels are the last axis (-1) or axis 1.",
        )
    return channel


@functools.cache
def _raw_key_shape(impl: str) -> Shape:
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def _flax_rng_hint(key: Any) -> str | None:
    """A hint for a flax ``nnx.Rngs`` or ``RngStream`` passed as a key (flax not imported)."""
    cls = type(key)
    if not cls.__module__.startswith("flax"):
        return None
    if cls.__name__ == "Rngs":
        return (
            "a flax.nnx.Rngs. Draw a key from it: rngs.dropout() (or rngs.<stream>() "
            "for another stream name)"
        )
    if cls.__name__ == "RngStream":
        return "a flax.nnx.RngStream. Call it to draw a key: rngs.dropout(), not rngs.dropout"
    return None


def check_key(fn: str, key: Any) -> Array:
    """Returns ``key`` as a single typed PRNG key, or raises a clear error.

    Accepts new-style typed keys (``jax.random.key``) of any implementation and legacy
    raw ``uint32`` keys (``jax.random.PRNGKey``) of the default implementation.
    """
    hint = _flax_rng_hint(key)  # first: nnx.Rngs answers any attribute, dtype included
    if hint is not None:
        raise fail(fn, f"key must be a PRNG key, got {hint}.", exc=TypeError)
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise fail(
                fn,
                f"key must be a single PRNG key, got a key array of shape {key.shape}. "
                "Use jax.vmap over keys to apply the op once per key.",
            )
        return key
    if dtype is not None and dtype == jnp.uint32:
        impl = jax.config.jax_default_prng_impl
        expected = _raw_key_shape(impl)
        if tuple(key.shape) != expected:
            raise fail(
                fn,
                f"key must be a PRNG key: a raw uint32 key of the default implementation "
                f"({impl}) has shape {expected}, got shape {tuple(key.shape)}. "
                "Pass jax.random.key(seed), or jax.vmap over a batch of keys.",
            )
        return jax.random.wrap_key_data(key)
    got = describe(key) if dtype is None else f"an array of dtype {dtype}"
    swapped = ""
    if dtype is not None and jnp.issubdtype(dtype, jnp.inexact):
        swapped = (
            f" A floating-point array in the key's place looks like the data: the "
            f"arguments may be swapped (the key comes first: jaxreg.{fn}(key, ...))."
        )
    raise fail(
        fn,
        f"key must be a PRNG key from jax.random.key(seed) (or a legacy "
        f"jax.random.PRNGKey array), got {got}.{swapped}",
        exc=TypeError,
    )


def _is_key(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _is_raw_key(value: Any) -> bool:
    """A legacy ``jax.random.PRNGKey`` array of the default implementation."""
    if getattr(value, "dtype", None) != jnp.uint32:
        return False
    return tuple(value.shape) == _raw_key_shape(jax.config.jax_default_prng_impl)


def check_key_first(fn: str, key: Any, data: Any, name: str = "x") -> None:
    """Raises TypeError if ``key`` and the data argument look swapped.

    That is: ``data`` (an array, or a pytree for ``drop_connect_tree``) holds a typed
    PRNG key while ``key`` is not one, or ``data`` is a legacy raw uint32 key while
    ``key`` is a floating-point array. Called first by every keyed op, so that the
    error names the mistake instead of a dtype ("cast it first" would be wrong).
    """
    if _flax_rng_hint(key) is not None or _is_key(key):
        return  # a flax Rngs answers any attribute: check_key explains it
    leaves = jax.tree_util.tree_leaves(data)
    typed = any(_is_key(leaf) for leaf in leaves)
    key_dtype = getattr(key, "dtype", None)
    float_key = key_dtype is not None and jnp.issubdtype(key_dtype, jnp.inexact)
    if typed or (float_key and len(leaves) == 1 and _is_raw_key(leaves[0])):
        raise fail(
            fn,
            f"got a PRNG key as {name} and {describe(key)} as key: the arguments look "
            f"swapped. The key comes first: jaxreg.{fn}(key, {name}, ...).",
            exc=TypeError,
        )


# Checks on parameter pytrees, shared by penalties, constraints, proximal operators.


def check_has_arrays(fn: str, params: Any) -> None:
    """Raises TypeError if ``params`` holds Python numbers but no array at all.

    With ``where=None`` only array leaves are parameters; a tree of Python floats such
    as ``[1.0, 2.0]`` would otherwise select nothing and give 0 (or pass through).
    """
    leaves = jax.tree_util.tree_leaves(params)
    if any(isinstance(v, (jax.Array, np.ndarray, np.generic)) for v in leaves):
        return
    numbers_ = [v for v in leaves if is_python_number(v)]
    if numbers_:
        raise fail(
            fn,
            f"params must hold arrays, got only Python numbers (e.g. {describe(numbers_[0])}); "
            "only array leaves are parameters, so nothing would be regularized. Convert "
            "them first: jax.tree.map(jnp.asarray, params).",
            exc=TypeError,
        )


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
        detail = (
            f" {name} has {extra[0]}, which params lacks (if params was filtered, e.g. "
            f"eqx.filter(model, eqx.is_array), build {name} from the filtered tree, or pass "
            "the filter function itself: where=jaxreg.kernels_only)."
        )
    else:
        detail = " The containers differ (e.g. dict vs FrozenDict, or a module type)."
    raise fail(
        fn,
        f"{name} must have the same pytree structure as params (one bool per leaf; a "
        f"prefix is not expanded), got {brief(str(tree_def))} for params "
        f"{brief(str(params_def))}.{detail} Build it with jax.tree.map over params or a "
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
