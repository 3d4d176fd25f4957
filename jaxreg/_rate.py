"""Rates: the Python-versus-traced branching, the rate 0/1 shortcut, keep probabilities.

A validated rate (``_checks.check_probability``) is either a Python float, whose value
may select code at trace time (rate 0 returns ``x``, rate 1 zeros, neither draws), or a
scalar array that may be traced and is handled by the same arithmetic for every value.
Every op asks this module, never ``isinstance(rate, float)`` itself.

Realised keep probabilities. The exact sampler keeps a unit where its top 23 random bits
(52 under ``jax_enable_x64`` with a float64 rate, as ``jax.random.bernoulli``) lie below
``T = ceil(p * 2**23)`` with ``p = 1 - rate`` rounded to float32: it keeps with
probability ``q = T / 2**23``, not ``p``. Like flax, kept units are divided by ``p``
wherever ``q`` is within a relative ``2**-20`` of it (every rate up to 0.875, and most
above), so outputs stay bit-identical to flax's; elsewhere (keep probabilities below
1/8 whose 23-bit rounding is coarse, e.g. ``rate = 1 - 1e-12`` keeps 2**-23 of the
units) they are divided by ``q``, so every rate gives an unbiased output. The fast
sampler keeps with probability ``k / 256`` and always divides by that.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._bits import consume
from jaxreg._checks import (
    check_float_array,
    check_key,
    check_key_first,
    check_probability,
    fail,
)
from jaxreg._numerics import nonzero_or_one
from jaxreg._types import Array, Rate

MANTISSA = 23  # jax.random.uniform(float32) uses the top 23 bits of each word.
MANTISSA64 = 52  # and uniform(float64) the top 52 bits of a 64-bit word.
FAST_BITS = 8
# Flax's divisor 1 - rate is kept where the realised keep probability is this close.
UNBIASED = 2.0**-20


def static(rate: Rate) -> float | None:
    """The value of a Python rate, or None for an array rate (traced or not)."""
    return rate if isinstance(rate, float) else None


def decided(rate: Rate) -> bool:
    """Whether a validated ``rate`` fixes the result without randomness (Python 0 or 1)."""
    return static(rate) in (0.0, 1.0)


def shortcut(x: Array, rate: Rate) -> Array | None:
    """The result of an op without drawing, or None when the op must compute.

    ``x`` itself for an empty ``x`` or a Python rate 0, zeros for a Python rate 1.
    """
    if x.size == 0 or static(rate) == 0.0:
        return x
    if static(rate) == 1.0:
        return jnp.zeros_like(x)
    return None


def uses_float64(rate: Rate) -> bool:
    """Whether masks draw float64-precision uniforms, as ``jax.random.bernoulli`` does.

    That is a Python rate under ``jax_enable_x64``, or a float64 array rate.
    """
    if isinstance(rate, float):
        return bool(jax.config.jax_enable_x64)
    return rate.dtype == jnp.float64


def needs_key(rate: float | Array) -> bool:
    """Whether an op at this ``rate`` draws random numbers, i.e. needs a key.

    False only for a Python (or NumPy) rate of exactly 0 or 1: every jaxreg op then
    returns ``x`` itself (rate 0) or zeros (rate 1), draws nothing and accepts
    ``key=None``. True for every other rate, and for every array rate (traced or not:
    its value is not inspected). Layers ask this before fetching a key, so that, like
    ``flax.linen.Dropout``, they leave the rng stream untouched when nothing is drawn.

    Args:
      rate: a drop probability, as passed to the ops.

    Returns:
      A Python bool.

    Example:
      >>> import jaxreg
      >>> jaxreg.needs_key(0.0), jaxreg.needs_key(0.5)
      (False, True)

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014.
    """
    return not decided(check_probability("needs_key", "rate", rate))


def check_key_for(fn: str, key: Any, rate: Rate) -> Array | None:
    """A typed key, or None where ``key`` is None and the validated ``rate`` is decided."""
    if key is None:
        if decided(rate):
            return None
        raise fail(
            fn,
            f"key is None, but rate={rate!r} draws random numbers. Pass a key from "
            "jax.random.key(seed); None is accepted only for a Python rate of 0 or 1 "
            "(see jaxreg.needs_key).",
            exc=TypeError,
        )
    return check_key(fn, key)


def check_op_args(
    fn: str, key: Any, x: Any, rate: Any, name: str = "x"
) -> tuple[Array | None, Array, Rate, Array | None]:
    """Validates ``(key, x, rate)`` of an op; also returns its result where no draw is needed.

    The last item is ``shortcut(x, rate)``: ``x`` itself for an empty ``x`` or a Python
    rate of 0, zeros for a Python rate of 1, and None otherwise (the op must compute).
    ``key`` may be None exactly when the rate decides (``needs_key``).
    """
    check_key_first(fn, key, x, name)
    x = check_float_array(fn, name, x)
    rate = check_probability(fn, "rate", rate)
    key = check_key_for(fn, key, rate)
    early = shortcut(x, rate)
    if early is not None and key is not None and not decided(rate):
        consume(key)  # an empty x: nothing drawn, but the key counts as used
    return key, x, rate, early


def keep_threshold(rate: Rate) -> Any:
    """The integer threshold T with ``keep <=> (bits >> (width - m)) < T``.

    ``jax.random.uniform`` maps bits to ``u = m_bits * 2**-m`` (m = 23, or 52 for
    float64), and ``bernoulli`` keeps where ``u < p`` with ``p = 1 - rate`` in the
    rate's precision; for integer ``n``, ``n * 2**-m < p <=> n < ceil(p * 2**m)``. The
    product is exact.
    """
    wide = uses_float64(rate)
    m = MANTISSA64 if wide else MANTISSA
    if isinstance(rate, float):
        p = 1.0 - rate if wide else float(np.float32(1.0 - rate))
        return (np.uint64 if wide else np.uint32)(math.ceil(p * 2**m))
    t = jnp.ceil((1.0 - rate) * np.array(2.0**m, rate.dtype))
    t = jnp.clip(jnp.nan_to_num(t, nan=0.0), 0.0, float(2**m))
    return t.astype(jnp.uint64 if wide else jnp.uint32)


def fast_threshold(rate: Rate) -> int | Array:
    """The threshold ``k`` in [0, 256] of the fast sampler: keep where a byte is below it.

    ``k = round((1 - rate) * 256)``, but at least 1 for every rate below 1: rates in
    (511/512, 1) keep 1/256 of the units (divided by 1/256, so still unbiased) rather
    than none.
    """
    scale = 2**FAST_BITS
    if isinstance(rate, float):
        k = min(max(math.floor((1.0 - rate) * scale + 0.5), 0), scale)
        return max(k, 1) if rate < 1.0 else 0
    k = jnp.floor((1.0 - rate) * np.float32(scale) + 0.5)
    k = jnp.clip(jnp.nan_to_num(k, nan=0.0), 0.0, float(scale))
    k = jnp.where(rate < 1.0, jnp.maximum(k, 1.0), 0.0)
    return k.astype(jnp.int32)


def keep_probability(rate: Rate, sampler: str = "exact") -> Rate:
    """What kept units are divided by: ``1 - rate``, or the realised keep probability.

    ``1 - rate`` as flax, the realised keep probability where that differs (see the
    module docstring), ``k / 256`` for the fast sampler. 0 only for rate 1; callers
    divide by ``nonzero_or_one`` of it.
    """
    if sampler == "fast":
        k = fast_threshold(rate)
        if isinstance(k, int):
            return k / 2**FAST_BITS
        return k.astype(jnp.float32) / np.float32(2**FAST_BITS)
    m = MANTISSA64 if uses_float64(rate) else MANTISSA
    t = keep_threshold(rate)
    if isinstance(rate, float):
        p = 1.0 - rate if uses_float64(rate) else float(np.float32(1.0 - rate))
        q = int(t) / 2**m
        return 1.0 - rate if abs(q - p) <= p * UNBIASED else q
    p = 1.0 - rate
    q = t.astype(p.dtype) * np.array(2.0**-m, p.dtype)
    return jnp.where(jnp.abs(q - p) <= p * UNBIASED, p, q)


def divide_by_keep(x: Array, rate: Rate, sampler: str = "exact") -> Array:
    """``x / keep_probability(rate)`` in ``x``'s dtype; by 1 where it is 0.

    For a Python rate this is flax's ``x / keep`` (bit for bit: XLA turns the division
    by a constant into a product with its reciprocal in ``x``'s dtype), except where
    that reciprocal is not safely finite in ``x``'s dtype (float16 keep probabilities
    below about 3e-5: ``1 / 1e-5`` overflows, and ``0 * inf`` would make every dropped
    unit NaN). There, and for array rates, the division runs in float32 (or wider) by
    the keep probability rounded to ``x``'s dtype where that is a normal number (by the
    float32 one elsewhere), and is rounded once to ``x``'s dtype: kept units are inf
    only where the true quotient does not fit.
    """
    keep = keep_probability(rate, sampler)
    wide = jnp.promote_types(x.dtype, jnp.float32)
    info = jnp.finfo(x.dtype)
    tiny = float(info.tiny)
    if isinstance(keep, float):
        keep = keep if keep > 0.0 else 1.0
        rounded = float(np.asarray(keep, x.dtype).astype(np.float64))
        if rounded >= tiny and 1.0 / rounded < float(info.max) / 2:
            return x / keep
        divisor = np.asarray(rounded if rounded >= tiny else keep, wide)
    else:
        keep = nonzero_or_one(keep)
        rounded = keep.astype(x.dtype).astype(wide)
        divisor = jnp.where(rounded >= tiny, rounded, keep.astype(wide))
    return (x.astype(wide) / divisor).astype(x.dtype)


def valid_rate(rate: Rate) -> bool | Array:
    """Whether a validated ``rate`` lies in [0, 1], for ``_numerics.nan_unless``.

    The Python ``True`` for a Python rate (checked eagerly, so nothing is added to the
    program); for an array rate, a bool array (False outside [0, 1] and for NaN).
    """
    if isinstance(rate, float):
        return True
    return (rate >= 0.0) & (rate <= 1.0)
