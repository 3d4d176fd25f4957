"""Bernoulli keep-masks and how they are applied: the one place every op draws a mask.

``bernoulli_mask`` draws a boolean keep-mask from the bit engine (``_bits``) with a
threshold on the top 23 bits, which is exactly ``jax.random.bernoulli(key, 1 - rate,
shape)`` (and so exactly the mask of ``flax.linen.Dropout`` for the same key and rate;
under ``jax_enable_x64`` with a Python or float64 rate, on the top 52 bits of 64-bit
words, as JAX then does). ``sampler="fast"`` instead thresholds 8-bit values, eight per
hash (see ``_bits.random_bytes``): several times less hashing, a rate quantized to
k/256, and kept units divided by the realised keep probability k/256 so outputs stay
unbiased.

``apply_mask`` turns a mask into dropout output with a select (never ``x * mask``, so
``0 * inf`` cannot produce NaN) and divides kept units by the keep probability exactly
as flax does (see ``_rate`` for the extreme rates where that would be biased). A keep
probability of 0 keeps nothing, whatever the mask says, and divides by 1, so that
``rate = 1`` has zero (not NaN) values and gradients.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import _bits, _rate
from jaxreg._checks import (
    check_bool,
    check_choice,
    check_float_array,
    check_probability,
    check_shape,
    describe,
    fail,
    normalize_axes,
)
from jaxreg._numerics import nan_unless, nonzero_or_one
from jaxreg._rate import check_key_for as check_key_for
from jaxreg._rate import keep_probability as keep_probability
from jaxreg._rate import needs_key as needs_key
from jaxreg._types import Array, Rate, Shape

SAMPLERS = ("exact", "fast")


def check_sampler(fn: str, sampler: Any) -> str:
    """Validates the ``sampler`` argument of the mask ops."""
    return check_choice(fn, "sampler", sampler, SAMPLERS)


def draw_keep(key: Array, shape: Shape, rate: Rate, sampler: str = "exact") -> Array:
    """Boolean keep-mask of ``shape`` (keep probability ``1 - rate``); no validation.

    ``key`` must already be a typed key (``_checks.check_key``) and ``rate`` a validated
    rate. Python rates 0 and 1 give constant masks and draw nothing (the key may be
    None); an empty shape draws nothing either but consumes the key, as
    ``jax.random.bernoulli`` does for the key-reuse checker.
    """
    if _rate.static(rate) == 0.0:
        return jnp.ones(shape, jnp.bool_)
    if _rate.static(rate) == 1.0:
        return jnp.zeros(shape, jnp.bool_)
    if math.prod(shape) == 0:
        _bits.consume(key)  # nothing to draw, but the key is used (as jax.random's)
        return jnp.ones(shape, jnp.bool_)
    if sampler == "fast":
        octets = _bits.random_bytes(key, shape).astype(jnp.int32)
        return octets < _rate.fast_threshold(rate)
    if _rate.uses_float64(rate):  # JAX's bernoulli draws float64 uniforms here
        words = jax.random.bits(key, shape, jnp.uint64)
        return (words >> np.uint64(64 - _rate.MANTISSA64)) < _rate.keep_threshold(rate)
    bits = _bits.random_bits(key, shape)
    return (bits >> np.uint32(32 - _rate.MANTISSA)) < _rate.keep_threshold(rate)


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
        if isinstance(noise_shape, (str, bytes)) or not isinstance(noise_shape, Sequence):
            raise fail(
                fn,
                f"noise_shape must be a tuple with one entry per axis of x (shape {shape}), "
                f"got {describe(noise_shape)}. E.g. noise_shape=(None, 1, None) shares the "
                "mask along axis 1.",
                exc=TypeError,
            )
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
        for rates not exact in float32 the two can differ in the last bit. Under
        ``jax_enable_x64`` a Python or float64 rate draws from 64-bit words, as JAX's
        ``bernoulli`` then does (other array dtypes are computed as float32). A
        traced rate outside [0, 1] gives an unspecified mask; ``apply_mask`` and the
        dropout ops turn it into NaN outputs.
      broadcast_dims: axes along which the mask is shared (drawn with size 1 and
        broadcast), e.g. the time axis for variational dropout.
      sampler: ``"exact"`` (default): the mask of ``jax.random.bernoulli``.
        ``"fast"``: 8-bit thresholds, eight draws per hash; the keep probability is
        rounded to a multiple of 1/256 (``rate=0.1`` keeps with probability 230/256,
        i.e. drops 10.16%; every rate below 1 keeps at least 1/256). Pass the same
        ``sampler`` to ``apply_mask``.

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
    shape = check_shape(fn, "shape", shape)
    drawn = mask_shape(fn, shape, broadcast_dims)
    return jnp.broadcast_to(draw_keep(key, drawn, rate, sampler), shape)


def scale_kept(
    x: Array, mask: Array, rate: Rate, *, inverted: bool, sampler: str = "exact"
) -> Array:
    """``where(mask, x, 0) / keep`` (or without the division if not inverted); no validation.

    With ``keep = 1 - rate`` this matches flax's ``lax.select(mask, x / keep_prob, 0)``
    bit for bit. Selecting before dividing keeps the gradient with respect to the rate
    finite where dropped units hold inf or NaN. A keep probability of 0 (rate 1) keeps
    nothing whatever ``mask`` says; a traced rate outside [0, 1] makes every output NaN.
    """
    if _rate.static(rate) == 1.0:
        return jnp.zeros(x.shape, x.dtype)
    if _rate.static(rate) is None:
        mask = mask & (keep_probability(rate, sampler) > 0.0)
    kept = jnp.where(mask, x, jnp.zeros((), x.dtype))
    if inverted:
        kept = _rate.divide_by_keep(kept, rate, sampler)
    return nan_unless(kept, _rate.valid_rate(rate), source=x)


class _Spec(NamedTuple):
    """Static part of a ``draw_and_apply`` call (hashable, for ``custom_jvp``)."""

    shape: Shape
    inverted: bool
    sampler: str
    static_rate: float | None
    recompute: bool = False
    multiplier_dtype: Any = None


def scale_by_multiplier(x: Array, mask: Array, rate: Rate, dtype: Any, sampler: str) -> Array:
    """``where(mask, x * (1 / keep), 0)`` with ``1 / keep`` computed in ``dtype``; no validation.

    This is the arithmetic of flax's attention dropout, ``x * (keep.astype(dtype) /
    jnp.asarray(keep_prob, dtype))``, bit for bit wherever ``x`` is finite and
    non-negative (attention weights); dropped units are selected away, so they are 0
    even where ``x`` is inf or NaN, and rate 1 gives zeros (flax's divides 0 by 0).
    """
    keep = keep_probability(rate, sampler)
    if isinstance(keep, float):
        if keep == 0.0:
            return jnp.zeros(x.shape, x.dtype)
        divisor = jnp.asarray(keep, dtype)
    else:
        mask = mask & (keep > 0.0)
        divisor = nonzero_or_one(keep).astype(dtype)
    # An array, as flax's: XLA may then keep excess precision in the division the same way.
    multiplier = mask.astype(dtype) / divisor
    kept = jnp.where(mask, x * multiplier, jnp.zeros((), x.dtype))
    return nan_unless(kept, _rate.valid_rate(rate), source=x)


def _apply(spec: _Spec, mask: Array, x: Array, rate: Rate) -> Array:
    if spec.multiplier_dtype is not None:
        return scale_by_multiplier(x, mask, rate, spec.multiplier_dtype, spec.sampler)
    return scale_kept(x, mask, rate, inverted=spec.inverted, sampler=spec.sampler)


def draw_and_apply(
    key: Array,
    x: Array,
    rate: Rate,
    shape: Shape,
    *,
    inverted: bool,
    sampler: str,
    recompute: bool = False,
    multiplier_dtype: Any = None,
) -> Array:
    """Draws a keep-mask of ``shape`` (broadcast to ``x``) and applies it; no validation.

    Without differentiation this is one fused pass: hash, threshold and select. Under
    ``jax.grad``/``jax.jvp`` the mask is computed once and stored (one byte per mask
    element), and the tangent and its transpose read it instead of hashing again:
    value_and_grad is about twice as fast at 1M elements on CPU (``bench/``). A
    ``custom_vjp`` would do the same but forbid forward-mode autodiff.

    With ``recompute=True`` nothing is stored: the tangent is computed under
    ``jax.checkpoint`` from the key, so the backward pass hashes again (the residual
    is the key). With a ``multiplier_dtype`` kept units are multiplied by ``1 / keep``
    computed in that dtype (``scale_by_multiplier``, flax's attention dropout) instead
    of divided by ``keep``.
    """
    static = _rate.static(rate)
    traced = jnp.zeros((), jnp.float32) if static is not None else rate
    dtype = None if multiplier_dtype is None else jnp.dtype(multiplier_dtype)
    spec = _Spec(tuple(shape), inverted, sampler, static, recompute, dtype)
    return _drop(spec, key, x, traced)


def _rate_of(spec: _Spec, rate: Array) -> Rate:
    return rate if spec.static_rate is None else spec.static_rate


def _draw(spec: _Spec, key: Array, rate: Array) -> Array:
    return draw_keep(key, spec.shape, _rate_of(spec, rate), spec.sampler)


def _jvp_with(spec: _Spec, mask: Array, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    def apply(x, rate):
        return _apply(spec, mask, x, _rate_of(spec, rate))

    return jax.jvp(apply, primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _drop(spec: _Spec, key: Array, x: Array, rate: Array) -> Array:
    return _apply(spec, _draw(spec, key, rate), x, _rate_of(spec, rate))


@_drop.defjvp
def _drop_jvp(spec: _Spec, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    key, x, rate = primals
    _, x_dot, rate_dot = tangents
    if spec.recompute:

        def tangent(key, x, rate, x_dot, rate_dot):
            return _jvp_with(spec, _draw(spec, key, rate), (x, rate), (x_dot, rate_dot))[1]

        again = jax.random.clone(key)  # the same key, drawn from again in the backward pass
        out = _drop(spec, key, x, rate)
        return out, jax.checkpoint(tangent)(again, x, rate, x_dot, rate_dot)
    mask = _draw(spec, key, rate)
    if spec.sampler != "fast":  # the fast sampler's bytes are stored already (_bits)
        mask = _bits.keep_in_memory(mask.astype(jnp.uint8)).astype(jnp.bool_)
    return _jvp_with(spec, mask, (x, rate), (x_dot, rate_dot))


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
      ``rate = 1`` gives zeros and zero gradients even where ``x`` is inf or NaN, and
      whatever the mask says: a True entry with rate 1 is an inconsistent pair (no mask
      drawn at rate 1 has one), and the rate wins.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014 (inverted scaling: section 10's equivalent form).
    """
    fn = "apply_mask"
    x = check_float_array(fn, "x", x)
    rate = check_probability(fn, "rate", rate)
    sampler = check_sampler(fn, sampler)
    inverted = check_bool(fn, "inverted", inverted)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise fail(fn, f"mask must be a bool array, got dtype {mask.dtype}.", exc=TypeError)
    try:
        out_shape = np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        out_shape = None
    if out_shape != x.shape:
        raise fail(
            fn,
            f"mask of shape {mask.shape} does not broadcast to x of shape {x.shape}. Draw "
            "it for x: jaxreg.bernoulli_mask(key, x.shape, rate=rate) (with broadcast_dims "
            "to share it along axes), or give it x's rank with size 1 on shared axes.",
        )
    return scale_kept(x, mask, rate, inverted=inverted, sampler=sampler)
