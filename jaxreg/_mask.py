"""Bernoulli keep-masks and how they are applied: the one place every op draws a mask.

``bernoulli_mask`` draws a boolean keep-mask from the bit engine (``_bits``) with a
threshold on the top 23 bits, which is exactly ``jax.random.bernoulli(key, 1 - rate,
shape)`` (and so exactly the mask of ``flax.linen.Dropout`` for the same key and rate).
``sampler="fast"`` instead thresholds 8-bit values, eight per hash (see
``_bits.random_bytes``): several times less hashing, a rate quantized to k/256, and
kept units divided by the realised keep probability k/256 so outputs stay unbiased.

``apply_mask`` turns a mask into dropout output with a select (never ``x * mask``, so
``0 * inf`` cannot produce NaN) and divides kept units by the keep probability exactly
as flax does. A keep probability of 0 is replaced by 1 in the division so that
``rate = 1`` has zero (not NaN) gradients.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _bits
from jaxreg._checks import (
    check_choice,
    check_float_array,
    check_probability,
    fail,
    normalize_axes,
)

Array = jax.Array
Rate = float | Array
Shape = tuple[int, ...]

_MANTISSA = 23  # jax.random.uniform(float32) uses the top 23 bits of each word.
_FAST_BITS = 8
SAMPLERS = ("exact", "fast")


def check_sampler(fn: str, sampler: Any) -> str:
    """Validates the ``sampler`` argument of the mask ops."""
    return check_choice(fn, "sampler", sampler, SAMPLERS)


def fast_threshold(rate: Rate) -> int | Array:
    """The threshold round((1 - rate) * 256) in [0, 256]: keep where a byte is below it."""
    scale = 2**_FAST_BITS
    if isinstance(rate, float):
        return min(max(math.floor((1.0 - rate) * scale + 0.5), 0), scale)
    k = jnp.floor((1.0 - rate) * np.float32(scale) + 0.5)
    return jnp.clip(jnp.nan_to_num(k, nan=0.0), 0.0, float(scale)).astype(jnp.int32)


def keep_probability(rate: Rate, sampler: str = "exact") -> Rate:
    """The keep probability kept units are divided by: 1 - rate, or k/256 when fast."""
    if sampler == "exact":
        return 1.0 - rate
    k = fast_threshold(rate)
    if isinstance(k, int):
        return k / 2**_FAST_BITS
    return k.astype(jnp.float32) / np.float32(2**_FAST_BITS)


def keep_threshold(rate: Rate) -> Array | np.uint32:
    """The integer threshold T with ``keep <=> (bits >> 9) < T``.

    ``jax.random.uniform`` maps bits to ``u = (bits >> 9) * 2**-23``, and ``bernoulli``
    keeps where ``u < p`` with ``p = 1 - rate`` in float32; for integer ``m``,
    ``m * 2**-23 < p <=> m < ceil(p * 2**23)``. The product is exact in float32.
    """
    if isinstance(rate, float):
        p = float(np.float32(1.0 - rate))
        return np.uint32(math.ceil(p * 2**_MANTISSA))
    p = 1.0 - rate
    t = jnp.ceil(p * np.float32(2**_MANTISSA))
    t = jnp.clip(jnp.nan_to_num(t, nan=0.0), 0.0, float(2**_MANTISSA))
    return t.astype(jnp.uint32)


def draw_keep(key: Array, shape: Shape, rate: Rate, sampler: str = "exact") -> Array:
    """Boolean keep-mask of ``shape`` (keep probability ``1 - rate``); no validation.

    ``key`` must already be a typed key (``_bits.check_key``) and ``rate`` a validated
    rate. Python rates 0 and 1 give constant masks and draw nothing.
    """
    if isinstance(rate, float) and rate == 0.0:
        return jnp.ones(shape, jnp.bool_)
    if isinstance(rate, float) and rate == 1.0:
        return jnp.zeros(shape, jnp.bool_)
    if sampler == "fast":
        octets = _bits.random_bytes(key, shape).astype(jnp.int32)
        return octets < fast_threshold(rate)
    bits = _bits.random_bits(key, shape)
    return (bits >> np.uint32(32 - _MANTISSA)) < keep_threshold(rate)


def decided(rate: Rate) -> bool:
    """Whether a validated ``rate`` fixes the result without randomness (Python 0 or 1)."""
    return isinstance(rate, float) and rate in (0.0, 1.0)


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
    return _bits.check_key(fn, key)


def prologue(
    fn: str, key: Any, x: Any, rate: Any, name: str = "x"
) -> tuple[Array | None, Array, Rate, Array | None]:
    """Validates ``(key, x, rate)`` for an op; also returns its result when the rate decides.

    The last item is ``x`` itself for a Python rate of 0 (nothing is drawn), zeros for
    a Python rate of 1, and None otherwise (the op must compute). ``key`` may be None
    exactly when the rate decides (``needs_key``).
    """
    x = check_float_array(fn, name, x)
    rate = check_probability(fn, "rate", rate)
    key = check_key_for(fn, key, rate)
    early = None
    if isinstance(rate, float) and rate == 0.0:
        early = x
    elif isinstance(rate, float) and rate == 1.0:
        early = jnp.zeros_like(x)
    return key, x, rate, early


def mask_shape(
    fn: str,
    shape: Shape,
    broadcast_dims: int | Sequence[int] = (),
    noise_shape: Sequence[int | None] | None = None,
) -> Shape:
    """Shape of the mask to draw: ``shape`` with shared (broadcast) axes set to 1."""
    shape = tuple(shape)
    dims = normalize_axes(fn, "broadcast_dims", broadcast_dims, len(shape))
    if noise_shape is not None:
        if dims:
            raise fail(fn, "pass broadcast_dims or noise_shape, not both.")
        noise = tuple(noise_shape)
        ok = len(noise) == len(shape) and all(
            n is None or n == 1 or n == s for n, s in zip(noise, shape, strict=False)
        )
        if not ok:
            raise fail(
                fn,
                f"noise_shape must have one entry per axis of x (shape {shape}), each equal "
                f"to that axis, 1 (shared) or None; got {noise}.",
            )
        return tuple(s if n is None else int(n) for n, s in zip(noise, shape, strict=True))
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


def bernoulli_mask(
    key: Any,
    shape: Sequence[int],
    *,
    rate: float | Array,
    broadcast_dims: int | Sequence[int] = (),
    sampler: str = "exact",
) -> Array:
    """Draws a boolean keep-mask: True with probability ``1 - rate``.

    For the same key and rate the mask equals ``jax.random.bernoulli(key, 1 - rate,
    shape)`` (with ``broadcast_dims``: drawn at the reduced shape, as flax does) and so
    the mask of ``flax.linen.Dropout``.

    Args:
      key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``).
      shape: shape of the mask.
      rate: probability of *dropping* (False), not the keep probability. A Python
        number in [0, 1] or a scalar array (may be traced). The keep probability
        ``1 - rate`` is computed in float64 and rounded to float32 for a Python rate (as
        flax does), in float32 for an array rate (as ``jax.random.bernoulli`` does);
        for rates not exact in float32 the two can differ in the last bit. A traced
        rate outside [0, 1] gives an unspecified mask; ``apply_mask`` and the dropout
        ops turn it into NaN outputs.
      broadcast_dims: axes along which the mask is shared (drawn with size 1 and
        broadcast), e.g. the time axis for variational dropout.
      sampler: ``"exact"`` (default): the mask of ``jax.random.bernoulli``.
        ``"fast"``: 8-bit thresholds, eight draws per hash; the keep probability is
        rounded to a multiple of 1/256 (``rate=0.1`` keeps with probability 230/256,
        i.e. drops 10.16%). Pass the same ``sampler`` to ``apply_mask``.

    Returns:
      A bool array of ``shape``.

    Example:
      >>> import jax, jaxreg
      >>> m = jaxreg.bernoulli_mask(jax.random.key(0), (4, 3), rate=0.5, broadcast_dims=0)
      >>> m.shape, m.dtype
      ((4, 3), dtype('bool'))

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014.
    """
    fn = "bernoulli_mask"
    rate = check_probability(fn, "rate", rate)
    key = check_key_for(fn, key, rate)
    sampler = check_sampler(fn, sampler)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise fail(fn, f"shape must be a tuple of ints, got {shape!r}.", exc=TypeError) from None
    if any(d < 0 for d in shape):
        raise fail(fn, f"shape must be non-negative, got {shape}.")
    drawn = mask_shape(fn, shape, broadcast_dims)
    return jnp.broadcast_to(draw_keep(key, drawn, rate, sampler), shape)


def scale_kept(
    x: Array, mask: Array, rate: Rate, *, inverted: bool, sampler: str = "exact"
) -> Array:
    """``where(mask, x / keep, 0)`` (or ``x`` if not inverted); no validation.

    With ``keep = 1 - rate`` this matches flax's ``lax.select(mask, x / keep_prob, 0)``
    bit for bit. A traced rate outside [0, 1] makes every output NaN.
    """
    if inverted:
        keep = keep_probability(rate, sampler)
        if isinstance(keep, float):
            kept = x / (keep if keep > 0.0 else 1.0)
        else:
            kept = x / jnp.where(keep > 0.0, keep, 1.0).astype(x.dtype)
    else:
        kept = x
    out = jnp.where(mask, kept, jnp.zeros((), x.dtype))
    return poison_invalid(out, rate)


class _Spec(NamedTuple):
    """Static part of a ``drop`` call (hashable, for ``custom_jvp``)."""

    shape: Shape
    inverted: bool
    sampler: str
    static_rate: float | None


def drop(key: Array, x: Array, rate: Rate, shape: Shape, *, inverted: bool, sampler: str) -> Array:
    """Draws a keep-mask of ``shape`` (broadcast to ``x``) and applies it; no validation.

    Without differentiation this is one fused pass: hash, threshold and select. Under
    ``jax.grad``/``jax.jvp`` the mask is computed once and stored (one byte per mask
    element), and the tangent and its transpose read it instead of hashing again:
    value_and_grad is about twice as fast at 1M elements on CPU (``bench/``). A
    ``custom_vjp`` would do the same but forbid forward-mode autodiff.
    """
    static = rate if isinstance(rate, float) else None
    traced = jnp.zeros((), jnp.float32) if static is not None else rate
    return _drop(_Spec(tuple(shape), inverted, sampler, static), key, x, traced)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _drop(spec: _Spec, key: Array, x: Array, rate: Array) -> Array:
    r = rate if spec.static_rate is None else spec.static_rate
    mask = draw_keep(key, spec.shape, r, spec.sampler)
    return scale_kept(x, mask, r, inverted=spec.inverted, sampler=spec.sampler)


@_drop.defjvp
def _drop_jvp(spec: _Spec, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    key, x, rate = primals
    _, x_dot, rate_dot = tangents
    r = rate if spec.static_rate is None else spec.static_rate
    mask = draw_keep(key, spec.shape, r, spec.sampler)
    stored = _bits.keep_in_memory(mask.astype(jnp.uint8), jax.random.key_data(key))
    mask = stored.astype(jnp.bool_)

    def apply(x, rate):
        r = rate if spec.static_rate is None else spec.static_rate
        return scale_kept(x, mask, r, inverted=spec.inverted, sampler=spec.sampler)

    return jax.jvp(apply, (x, rate), (x_dot, rate_dot))


def poison_invalid(out: Array, rate: Rate) -> Array:
    """NaN everywhere if a traced ``rate`` lies outside [0, 1] (or is NaN)."""
    if isinstance(rate, float):
        return out
    valid = (rate >= 0.0) & (rate <= 1.0)
    return jnp.where(valid, out, jnp.array(jnp.nan, out.dtype))


def apply_mask(
    x: Array,
    mask: Array,
    *,
    rate: float | Array,
    inverted: bool = True,
    sampler: str = "exact",
) -> Array:
    """Applies a keep-mask: dropped units become 0, kept ones are scaled by 1/(1 - rate).

    ``dropout(key, x, rate=r) == apply_mask(x, bernoulli_mask(key, x.shape, rate=r),
    rate=r)``. Useful to reuse one mask across the steps of a ``lax.scan`` (variational
    dropout on a recurrent state).

    Args:
      x: floating-point array.
      mask: bool keep-mask, broadcastable to ``x.shape``.
      rate: the drop probability the mask was drawn with.
      inverted: if True (default), scale kept units by 1/(1 - rate) so the expectation
        is unchanged; if False, keep them as they are (the original paper's form: scale
        by 1 - rate at inference with ``scale_for_inference``).
      sampler: the ``sampler`` the mask was drawn with; ``"fast"`` divides kept
        units by the realised keep probability (a multiple of 1/256).

    Returns:
      An array of ``x``'s shape and dtype. Gradients flow only through kept units;
      ``rate = 1`` gives zeros and zero gradients even where ``x`` is inf or NaN.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014 (inverted scaling: section 10's equivalent form).
    """
    fn = "apply_mask"
    x = check_float_array(fn, "x", x)
    rate = check_probability(fn, "rate", rate)
    sampler = check_sampler(fn, sampler)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise fail(fn, f"mask must be a bool array, got dtype {mask.dtype}.", exc=TypeError)
    try:
        out_shape = np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        out_shape = None
    if out_shape != x.shape:
        raise fail(fn, f"mask of shape {mask.shape} does not broadcast to x of shape {x.shape}.")
    return scale_kept(x, mask, rate, inverted=inverted, sampler=sampler)


def pack_bits(mask: Array) -> Array:
    """Packs a bool array along its last axis, 32 per uint32 word (bit k = element k).

    The packing is a reduction, so XLA materialises its (32x smaller) result instead of
    recomputing the mask inside every consumer: draw once, ``unpack_bits`` where used.
    """
    n = mask.shape[-1]
    padded = jnp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, (-n) % 32)])
    words = padded.reshape(*mask.shape[:-1], -1, 32).astype(jnp.uint32)
    return jnp.sum(words << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def unpack_bits(words: Array, n: int) -> Array:
    """Inverse of ``pack_bits``: the first ``n`` bits along the last axis, as bool."""
    bits = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & np.uint32(1)
    return bits.reshape(*words.shape[:-1], -1)[..., :n].astype(jnp.bool_)
