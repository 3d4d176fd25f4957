"""Pieces shared by the optax adapter modules (``jaxreg.optax``, ``jaxreg._optax_decay``).

Used only by the optax adapter; this module itself does not import optax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import check_same_structure, check_scalar_nonnegative, fail
from jaxreg._filters import PyTree

Array = jax.Array
ScalarOrSchedule = float | Array | Callable[[Array], Array]


def check_hyperparameter(fn: str, name: str, value: Any) -> ScalarOrSchedule:
    """Schedules pass; numbers and arrays must be non-negative scalars."""
    return value if callable(value) else check_scalar_nonnegative(fn, name, value)


def at(value: ScalarOrSchedule, count: Array) -> float | Array:
    """A schedule evaluated at ``count``; a number or an array as it is."""
    return value(count) if callable(value) else value


def check_callable(fn: str, name: str, value: Any) -> None:
    """Raises TypeError unless ``value`` is callable."""
    if not callable(value):
        raise fail(fn, f"{name} must be callable, got {type(value).__name__}.", exc=TypeError)


def require_params(fn: str, updates: PyTree, params: PyTree | None) -> None:
    """``update`` needs ``params``, with exactly the structure of ``updates``."""
    if params is None:
        raise fail(
            fn,
            "params must be passed to update, got None. Call "
            "optimizer.update(grads, state, params).",
        )
    check_same_structure(fn, "updates", updates, params)


def init_count(state_cls: type) -> Callable[[PyTree], Any]:
    """An ``init`` returning ``state_cls(count=0)`` (an int32 step count)."""

    def init(params: PyTree) -> Any:
        del params
        return state_cls(count=jnp.zeros([], jnp.int32))

    return init
