"""Stochastic depth (DropPath): drop a whole residual branch per example or per batch."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxreg._checks import (
    check_bool,
    check_key_first,
    check_positive_int,
    check_probability,
    fail,
)
from jaxreg._dropout import drop_units
from jaxreg._numerics import nan_unless
from jaxreg._rate import valid_rate
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
      per_example: True (default) draws once per example (axis 0), as timm's
        ``drop_path``; False draws once for the whole batch, as in the paper. A
        Python bool.
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
    check_key_first(fn, key, x)
    per_example = check_bool(fn, "per_example", per_example)
    ndim = jnp.ndim(x)
    if per_example:
        if ndim < 1:
            raise fail(
                fn,
                "x must have a batch axis (axis 0) for per_example=True, got a scalar. "
                "Pass per_example=False to drop it as a whole.",
            )
        shared = tuple(range(1, ndim))
    else:
        shared = tuple(range(ndim))
    return drop_units(fn, key, x, rate, broadcast_dims=shared, inverted=inverted)


def drop_path_rates(
    max_rate: float | Array, depth: int, *, start_at_zero: bool = False
) -> tuple[float | Array, ...]:
    """The linear stochastic-depth schedule: block ``l`` of ``depth`` drops at ``l/L * max``.

    The paper's rule ``p_l = 1 - l/L (1 - p_L)`` (survival) gives block ``l = 1..L`` the
    drop rate ``max_rate * l / L``: the last block drops at ``max_rate``. With
    ``start_at_zero=True`` the rates are ``linspace(0, max_rate, depth)`` instead (timm's
    convention: the first block is never dropped).

    Args:
      max_rate: drop rate of the last block, in [0, 1]; a Python number or a scalar
        array that may be traced (a traced value outside [0, 1] or NaN makes every
        rate NaN, like every invalid traced rate).
      depth: number of blocks (>= 1).
      start_at_zero: use ``linspace(0, max_rate, depth)``.

    Returns:
      Always a tuple of ``depth`` rates: Python floats for a Python ``max_rate`` (so a
      rate of 0 still short-circuits in the ops), 0-d arrays otherwise (float32, or
      float64 for a float64 ``max_rate`` under ``jax_enable_x64``).

    Example:
      >>> import jaxreg
      >>> jaxreg.drop_path_rates(0.2, 4)
      (0.05, 0.1, 0.15000000000000002, 0.2)

    References:
      Huang et al. "Deep Networks with Stochastic Depth." ECCV 2016, eq. (4).
    """
    fn = "drop_path_rates"
    depth = check_positive_int(fn, "depth", depth)
    max_rate = check_probability(fn, "max_rate", max_rate)
    start_at_zero = check_bool(fn, "start_at_zero", start_at_zero)
    if start_at_zero:
        fractions = [i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    else:
        fractions = [(i + 1) / depth for i in range(depth)]
    if isinstance(max_rate, float):
        return tuple(max_rate * f for f in fractions)
    rates = nan_unless(max_rate * jnp.asarray(fractions, max_rate.dtype), valid_rate(max_rate))
    return tuple(rates)
