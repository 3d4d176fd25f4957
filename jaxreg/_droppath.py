"""Stochastic depth (DropPath): drop a whole residual branch per example or per batch."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxreg._checks import (
    check_bool,
    check_positive_int,
    check_probability,
    fail,
    is_python_number,
)
from jaxreg._dropout import drop_units
from jaxreg._types import Array


def drop_path(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    per_example: bool = True,
    inverted: bool = True,
) -> Array:
    """Stochastic depth: zeroes a residual branch's output for whole examples.

    Apply it to the residual branch, ``x + drop_path(key, branch(x), rate=r)``, so a
    dropped branch leaves the identity path.

    Args:
      key: a PRNG key.
      x: the branch output, batch on axis 0 (for ``per_example=True``).
      rate: probability of dropping the branch (see ``dropout``).
      per_example: True draws once per example (axis 0), as timm's ``drop_path``;
        False draws once for the whole batch, as in the paper.
      inverted: scale kept branches by 1/(1 - rate) (True, the common practice); False
        keeps them as they are and the paper's inference multiplies the branch by the
        survival probability (``scale_for_inference``).

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      Huang, Sun, Liu, Sedra, Weinberger. "Deep Networks with Stochastic Depth."
      ECCV 2016.
    """
    fn = "drop_path"
    per_example = check_bool(fn, "per_example", per_example)
    ndim = jnp.ndim(x)
    if per_example:
        if ndim < 1:
            raise fail(fn, "x must have a batch axis (axis 0) for per_example=True, got a scalar.")
        shared = tuple(range(1, ndim))
    else:
        shared = tuple(range(ndim))
    return drop_units(fn, key, x, rate, broadcast_dims=shared, inverted=inverted)


def drop_path_rates(
    max_rate: float | Array, depth: int, *, start_at_zero: bool = False
) -> tuple[float, ...] | Array:
    """The linear stochastic-depth schedule: block ``l`` of ``depth`` drops at ``l/L * max``.

    The paper's rule ``p_l = 1 - l/L (1 - p_L)`` (survival) gives block ``l = 1..L`` the
    drop rate ``max_rate * l / L``: the last block drops at ``max_rate``. With
    ``start_at_zero=True`` the rates are ``linspace(0, max_rate, depth)`` instead (timm's
    convention: the first block is never dropped).

    Args:
      max_rate: drop rate of the last block, in [0, 1]; a Python number or an array.
      depth: number of blocks (>= 1).
      start_at_zero: use ``linspace(0, max_rate, depth)``.

    Returns:
      A tuple of Python floats for a Python ``max_rate`` (so ``rate == 0`` still
      short-circuits), otherwise a float32 array of shape ``(depth,)``.

    References:
      Huang et al. "Deep Networks with Stochastic Depth." ECCV 2016, eq. (4).
    """
    fn = "drop_path_rates"
    depth = check_positive_int(fn, "depth", depth)
    max_rate = check_probability(fn, "max_rate", max_rate)
    if start_at_zero:
        fractions = [i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    else:
        fractions = [(i + 1) / depth for i in range(depth)]
    if is_python_number(max_rate):
        return tuple(max_rate * f for f in fractions)
    return max_rate * jnp.asarray(fractions, jnp.float32)
