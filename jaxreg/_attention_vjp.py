"""Attention dropout fused with the weighted sum, with a low-memory backward pass.

Autodiff of ``einsum(dropout(weights), value)`` keeps the dropped weights (one float
per weight) for the gradient of ``value``, next to the softmax output the softmax's own
gradient keeps: dropout then costs a float per weight more than no dropout, under
remat too (for the block being recomputed). ``dropout_combine`` is a ``custom_vjp``
whose backward pass recomputes the dropped weights from the softmax output and the
mask instead: it keeps the mask (one byte per weight), or only the key with
``recompute``. The recomputation reads the mask through ``_bits.after(mask,
cotangent)``, so XLA cannot merge it back into the forward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxreg import _bits, _mask
from jaxreg._types import Array, Shape


class Spec(NamedTuple):
    """Static part of a ``dropout_combine`` call."""

    shape: Shape  # mask shape, broadcast to the weights
    sampler: str
    dtype: Any  # flax's multiplier dtype
    recompute: bool
    static_rate: float | None
    combine: Callable[[Array, Array], Array]  # (weights, value) -> output


def dropout_combine(spec: Spec, key: Array, weights: Array, value: Array, rate: Any) -> Array:
    """``spec.combine(dropout(weights), value)``, flax's attention dropout arithmetic."""
    traced = jnp.zeros((), jnp.float32) if spec.static_rate is not None else rate
    return _fused(spec, key, weights, value, traced)


def _rate(spec: Spec, rate: Array) -> Any:
    return rate if spec.static_rate is None else spec.static_rate


def _apply(spec: Spec, mask: Array, weights: Array, value: Array, rate: Array) -> Array:
    dropped = _mask.scale_by_multiplier(weights, mask, _rate(spec, rate), spec.dtype, spec.sampler)
    return spec.combine(dropped, value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(spec: Spec, key: Array, weights: Array, value: Array, rate: Array) -> Array:
    mask = _mask.draw_keep(key, spec.shape, _rate(spec, rate), spec.sampler)
    return _apply(spec, mask, weights, value, rate)


def _fwd(spec: Spec, key: Array, weights: Array, value: Array, rate: Array) -> tuple:
    mask = _mask.draw_keep(key, spec.shape, _rate(spec, rate), spec.sampler)
    stored = None
    if not spec.recompute:
        stored = _bits.keep_in_memory(mask.astype(jnp.uint8))
        mask = stored.astype(jnp.bool_)
    out = _apply(spec, mask, weights, value, rate)
    return out, (key, stored, weights, value, rate)


def _bwd(spec: Spec, saved: tuple, cotangent: Array) -> tuple:
    key, stored, weights, value, rate = saved
    if stored is None:  # hash again, from a key that waits for the cotangent
        data = _bits.after(jax.random.key_data(key), cotangent)
        key = jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))
        mask = _mask.draw_keep(key, spec.shape, _rate(spec, rate), spec.sampler)
    else:
        mask = _bits.after(stored, cotangent).astype(jnp.bool_)
    _, vjp = jax.vjp(lambda w, v, r: _apply(spec, mask, w, v, r), weights, value, rate)
    d_weights, d_value, d_rate = vjp(cotangent)
    return None, d_weights, d_value, d_rate


_fused.defvjp(_fwd, _bwd)
