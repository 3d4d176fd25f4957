"""Dot-product attention with flax's signature, jaxreg's masks, DropHead and DropKey."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg import _attention_vjp, _mask, _rate
from jaxreg._attention_ops import drop_head, drop_logits
from jaxreg._checks import check_bool, check_key, check_probability, fail
from jaxreg._types import Array

FN = "dot_product_attention"


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    bias: Array | None = None,
    mask: Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: Any = None,
    dropout_rate: float | Array = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    *,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., Array] | None = None,
    qk_attn_weights_einsum: Callable[..., Array] | None = None,
    attn_weights_value_einsum: Callable[..., Array] | None = None,
    promote_dtype: Callable[..., Any] | None = None,
    is_causal: bool | None = None,
    head_drop_rate: float | Array = 0.0,
    key_drop_rate: float | Array = 0.0,
    drop_weights: bool = True,
    sampler: str = "exact",
    recompute_masks: bool = False,
    low_memory: bool = True,
) -> Array:
    """Dot-product attention, a drop-in ``attention_fn`` for flax's attention layers.

    It takes the arguments of ``flax.linen.dot_product_attention`` and
    ``flax.nnx.dot_product_attention`` (the keywords of both: flax's
    ``MultiHeadDotProductAttention`` and ``nnx.MultiHeadAttention`` accept it as
    ``attention_fn``) and computes what they compute. With the default
    ``sampler="exact"`` and a Python ``dropout_rate`` below 1 the output is bit for bit
    flax's for the same ``dropout_rng``: the attention-dropout mask is
    ``jax.random.bernoulli``'s with flax's shapes (``broadcast_dropout`` True or
    False), drawn by jaxreg's fused engine, and kept weights are multiplied by
    ``1 / (1 - rate)`` computed in ``dtype``, as flax does. What differs:

    - ``dropout_rate`` may be a traced array (a schedule, ``jax.vmap`` over rates);
      flax's ``if dropout_rate > 0`` cannot take one. Rate 1 gives zero weights
      (flax's divides 0 by 0).
    - Under autodiff the mask is stored once, one byte per weight, and the dropped
      weights are recomputed from it in the backward pass (flax keeps float arrays the
      size of the weights); ``recompute_masks=True`` stores nothing and hashes again.
    - Without dropout the computation is flax.linen's (explicit softmax); when
      ``is_causal`` is given (``nnx.MultiHeadAttention`` always passes it) it is
      ``flax.nnx``'s, which calls ``jax.nn.dot_product_attention`` when
      ``dropout_rate == 0`` and ``module`` is None.

    DropHead and DropKey are switched on with ``head_drop_rate`` and
    ``key_drop_rate``; they are active when dropout is (``deterministic`` False) and
    draw from ``dropout_rng`` too: with either on, ``dropout_rng`` is split in three
    (weights, heads, keys), so the weight mask is then no longer flax's. flax's
    layers pass a key and ``deterministic=False`` only when their own
    ``dropout_rate > 0``: for DropHead or DropKey alone, give the layer a
    ``dropout_rate`` and pass ``drop_weights=False``.

    Args:
      query: ``[batch..., q_length, num_heads, qk_depth]``.
      key: ``[batch..., kv_length, num_kv_heads, qk_depth]``; ``num_heads`` must be a
        multiple of ``num_kv_heads`` (grouped-query attention, as flax.nnx).
      value: ``[batch..., kv_length, num_kv_heads, v_depth]``.
      bias: added to the logits; broadcastable to ``[batch..., heads, q, kv]``.
      mask: False where attention is not allowed; broadcastable like ``bias``.
      broadcast_dropout: share the weight-dropout mask over the batch and head axes.
      dropout_rng: PRNG key for every draw (weights, heads, keys).
      dropout_rate: attention-weight dropout rate: a Python number in [0, 1] or a
        scalar array (may be traced).
      deterministic: if True, nothing is dropped.
      dtype: computation dtype (default: promoted from the inputs).
      precision: ``jax.lax.Precision`` for the einsums.
      module: a flax (linen or nnx) module to sow the attention weights into.
      force_fp32_for_softmax: softmax in float32 (flax.linen's keyword).
      einsum_dot_general: the ``dot_general`` of the einsums (flax.linen's).
      qk_attn_weights_einsum: einsum for the logits (flax.linen's); pass both or none.
      attn_weights_value_einsum: einsum for weights times values (flax.linen's).
      promote_dtype: ``promote_dtype((q, k, v), dtype=dtype)`` (flax.nnx's); default:
        flax.linen's promotion (result type, at least float32 for integers).
      is_causal: add a causal mask (flax.nnx's); see above for None.
      head_drop_rate: DropHead rate (``jaxreg.drop_head``): whole heads of each
        example's output dropped, kept ones scaled by 1/(1 - rate).
      key_drop_rate: DropKey rate (``jaxreg.drop_key``): logits dropped (-inf) after
        ``bias`` and ``mask``, before the softmax; independent per element. A row
        whose allowed keys (``mask``, ``is_causal``; masking through ``bias`` is not
        seen) are all dropped keeps its best allowed key.
      drop_weights: apply ``dropout_rate`` to the attention weights (flax's dropout).
      sampler: ``"exact"`` (flax's masks, bit for bit) or ``"fast"`` (8-bit
        thresholds, several times less hashing; rates rounded to k/256, kept units
        scaled by the realised keep probability; see ``jaxreg.dropout``).
      recompute_masks: hash the weight mask again in the backward pass instead of
        storing it (one byte per weight).
      low_memory: True (default): the backward pass recomputes the dropped weights from
        the softmax output and the mask instead of keeping them (one float per
        weight): dropout then adds at most one byte per weight to the memory of
        ``value_and_grad``, none with ``recompute_masks``. It is a ``custom_vjp``:
        forward-mode autodiff (``jax.jvp``, ``jax.hessian``) needs ``False``, which
        keeps what autodiff keeps. See ``docs/transformers.md`` for the figures.

    Returns:
      ``[batch..., q_length, num_heads, v_depth]``.

    Example:
      >>> import functools, jax, jax.numpy as jnp, flax.linen as nn, jaxreg
      >>> layer = nn.MultiHeadDotProductAttention(
      ...     num_heads=2, dropout_rate=0.1, deterministic=False,
      ...     attention_fn=functools.partial(jaxreg.dot_product_attention, head_drop_rate=0.1))
      >>> x = jnp.ones((2, 5, 8))
      >>> params = layer.init(jax.random.key(0), x)
      >>> layer.apply(params, x, rngs={"dropout": jax.random.key(1)}).shape
      (2, 5, 8)

    References:
      Vaswani et al. "Attention Is All You Need." NeurIPS 2017.
      Zhou et al. "Scheduled DropHead." Findings of EMNLP 2020.
      Li et al. "DropKey for Vision Transformer." CVPR 2023.
    """
    if (qk_attn_weights_einsum is None) != (attn_weights_value_einsum is None):
        raise fail(FN, "pass qk_attn_weights_einsum and attn_weights_value_einsum together.")
    if (precision is not None or einsum_dot_general is not None) and qk_attn_weights_einsum:
        raise fail(
            FN, "precision/einsum_dot_general and the einsum arguments are mutually exclusive."
        )
    deterministic = check_bool(FN, "deterministic", deterministic)
    drop_weights = check_bool(FN, "drop_weights", drop_weights)
    recompute_masks = check_bool(FN, "recompute_masks", recompute_masks)
    low_memory = check_bool(FN, "low_memory", low_memory)
    sampler = _mask.check_sampler(FN, sampler)
    rates = [
        check_probability(FN, "dropout_rate", dropout_rate),
        check_probability(FN, "head_drop_rate", head_drop_rate),
        check_probability(FN, "key_drop_rate", key_drop_rate),
    ]
    if promote_dtype is not None:
        query, key, value = promote_dtype((query, key, value), dtype=dtype)
    else:
        query, key, value = _promote(query, key, value, dtype=dtype)
    dtype = query.dtype
    _check_shapes(query, key, value)
    active = [
        not deterministic and _rate.static(r) != 0.0 and (i > 0 or drop_weights)
        for i, r in enumerate(rates)
    ]
    keys = _split_keys(dropout_rng, active)

    nnx_fast_path = is_causal is not None and _rate.static(rates[0]) == 0.0 and module is None
    if nnx_fast_path and not active[2]:
        out = _fused_attention(query, key, value, bias, mask, bool(is_causal))
        return _drop_heads(keys[1], out, rates[1], sampler) if active[1] else out

    weights = _weights(
        query, key, bias, mask, bool(is_causal), precision, einsum_dot_general,
        qk_attn_weights_einsum, force_fp32_for_softmax,
        drop_keys=(keys[2], rates[2], sampler) if active[2] else None,
    )  # fmt: skip
    if module is not None:
        _sow(module, weights)
    einsum = attn_weights_value_einsum or _einsum(precision, einsum_dot_general)
    combine = functools.partial(_combine, einsum)
    if active[0]:
        rate = rates[0]
        # flax's shapes: shared over batch and heads, or one draw per weight.
        shape = (1,) * (weights.ndim - 2) + weights.shape[-2:]
        shape = shape if broadcast_dropout else weights.shape
        if _rate.static(rate) == 1.0:
            weights = jnp.zeros_like(weights)
        elif low_memory:
            spec = _attention_vjp.Spec(
                shape, sampler, jnp.dtype(dtype), recompute_masks, _rate.static(rate), combine
            )
            out = _attention_vjp.dropout_combine(spec, keys[0], weights, value, rate)
            return _drop_heads(keys[1], out, rates[1], sampler) if active[1] else out
        else:
            weights = _mask.draw_and_apply(
                keys[0], weights, rate, shape, inverted=True, sampler=sampler,
                recompute=recompute_masks, multiplier_dtype=dtype,
            )  # fmt: skip
    out = combine(weights, value)
    return _drop_heads(keys[1], out, rates[1], sampler) if active[1] else out


def _promote(*arrays: Array, dtype: Any) -> tuple[Array, ...]:
    """flax.linen's ``promote_dtype``: the result type, at least float32 if not inexact."""
    if dtype is None:
        dtype = jnp.result_type(*arrays)
        if not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(jnp.float32, dtype)
    return tuple(jnp.asarray(a, dtype) for a in arrays)


def _check_shapes(query: Array, key: Array, value: Array) -> None:
    shapes = f"got query {query.shape}, key {key.shape}, value {value.shape}"
    if not query.ndim == key.ndim == value.ndim or query.ndim < 3:
        raise fail(FN, f"query, key and value must have the same rank (>= 3), {shapes}.")
    if not query.shape[:-3] == key.shape[:-3] == value.shape[:-3]:
        raise fail(FN, f"query, key and value must have the same batch axes, {shapes}.")
    if key.shape[-3] != value.shape[-3] or key.shape[-2] != value.shape[-2]:
        raise fail(FN, f"key and value must have the same length and heads, {shapes}.")
    if query.shape[-1] != key.shape[-1]:
        raise fail(FN, f"query and key must have the same depth (last axis), {shapes}.")
    if query.shape[-2] % key.shape[-2]:
        raise fail(FN, f"query heads must be a multiple of key heads, {shapes}.")


def _split_keys(rng: Any, active: list[bool]) -> list:
    """The keys of the weights, heads and keys draws: ``rng`` itself for weights alone."""
    if not any(active):
        return [None, None, None]
    if rng is None:
        names = ("dropout_rate", "head_drop_rate", "key_drop_rate")
        used = " and ".join(n for n, a in zip(names, active, strict=True) if a)
        raise fail(
            FN,
            f"dropout_rng is None, but {used} draws random numbers. Pass dropout_rng "
            "(flax's layers do when their dropout_rate > 0), or deterministic=True.",
            exc=TypeError,
        )
    rng = check_key(FN, rng)
    if not any(active[1:]):
        return [rng, None, None]
    return list(jax.random.split(rng, 3))


def _einsum(precision: Any, dot_general: Callable | None) -> Callable:
    return functools.partial(
        jnp.einsum, precision=precision, _dot_general=dot_general or lax.dot_general
    )


def _weights(
    query: Array,
    key: Array,
    bias: Array | None,
    mask: Array | None,
    is_causal: bool,
    precision: Any,
    dot_general: Callable | None,
    einsum: Callable | None,
    force_fp32: bool,
    drop_keys: tuple | None,
) -> Array:
    """Softmax weights ``[batch..., heads, q, kv]``, as flax computes them."""
    dtype = query.dtype
    einsum = einsum or _einsum(precision, dot_general)
    q_heads, k_heads = query.shape[-2], key.shape[-2]
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    if q_heads != k_heads:  # grouped-query attention, as flax.nnx
        query = query.reshape((*query.shape[:-2], k_heads, q_heads // k_heads, query.shape[-1]))
        logits = einsum("...qhgd,...khd->...hgqk", query, key)
        logits = logits.reshape((*logits.shape[:-4], q_heads, *logits.shape[-2:]))
    else:
        logits = einsum("...qhd,...khd->...hqk", query, key)
    if bias is not None:
        logits = logits + bias
    allowed = mask
    if is_causal:
        q_len, kv_len = logits.shape[-2:]
        causal = jnp.tril(jnp.ones((q_len, kv_len), jnp.bool_))
        causal = jnp.broadcast_to(causal, mask.shape if mask is not None else logits.shape)
        allowed = causal if mask is None else jnp.logical_and(mask, causal)
    if allowed is not None:
        logits = jnp.where(allowed, logits, jnp.finfo(dtype).min)
    if drop_keys is not None:  # DropKey, after the masks (they tell its fallback)
        rng, rate, sampler = drop_keys
        logits = drop_logits(rng, logits, rate, sampler, allowed)
    if force_fp32 and dtype != jnp.float32:
        return jax.nn.softmax(logits.astype(jnp.float32))
    return jax.nn.softmax(logits).astype(dtype)


def _combine(einsum: Callable, weights: Array, value: Array) -> Array:
    q_heads, v_heads = weights.shape[-3], value.shape[-2]
    if q_heads == v_heads:
        return einsum("...hqk,...khd->...qhd", weights, value)
    groups = (v_heads, q_heads // v_heads)
    weights = weights.reshape((*weights.shape[:-3], *groups, *weights.shape[-2:]))
    out = einsum("...hgqk,...khd->...qhgd", weights, value)
    return out.reshape((*out.shape[:-3], q_heads, out.shape[-1]))


def _fused_attention(q: Array, k: Array, v: Array, bias: Any, mask: Any, causal: bool) -> Array:
    """flax.nnx's path without dropout: ``jax.nn.dot_product_attention`` on 4-D arrays."""
    shape = q.shape
    if len(shape) > 4:

        def flat(a):
            return None if a is None else a.reshape((math.prod(a.shape[:-3]), *a.shape[-3:]))

        q, k, v, bias, mask = map(flat, (q, k, v, bias, mask))
    if mask is not None:
        mask = mask.astype(jnp.bool_)
    out = jax.nn.dot_product_attention(q, k, v, bias, mask, is_causal=causal)
    return out.reshape(shape[:-1] + out.shape[-1:]) if len(shape) > 4 else out


def _drop_heads(rng: Array, out: Array, rate: Any, sampler: str) -> Array:
    """DropHead on ``[batch..., q, heads, depth]``: one draw per (example, head)."""
    lead = out.shape[:-3]
    flat = out.reshape((math.prod(lead), *out.shape[-3:]))
    dropped = drop_head(rng, flat, rate=rate, head_axis=-2, sampler=sampler)
    return dropped.reshape(out.shape)


def _sow(module: Any, weights: Array) -> None:
    """Sows the weights as flax does: ``nnx.Intermediate`` for nnx, 'intermediates' else."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - a module was passed, so flax is installed
        nnx = None
    if nnx is not None and isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)
