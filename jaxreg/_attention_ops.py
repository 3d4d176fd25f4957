"""Structured dropout for attention: DropHead (whole heads) and DropKey (attention logits).

Both work with any attention implementation: ``drop_head`` on the per-head outputs
before the output projection, ``drop_key`` on the logits before the softmax (or, for
``jax.nn.dot_product_attention``, through its ``bias``: ``bias = drop_key(key, zeros,
rate=r)`` is 0 where a key is kept and -inf where it is dropped, though without the
row-maximum fallback below, which needs the logits). ``jaxreg.dot_product_attention``
applies both through its ``head_drop_rate`` and ``key_drop_rate`` keywords.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from jaxreg import _mask, _rate
from jaxreg._checks import check_bool, check_key_first, fail, normalize_axes
from jaxreg._dropout import drop_units
from jaxreg._numerics import nan_unless
from jaxreg._types import Array


def drop_head(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    head_axis: int,
    per_example: bool = True,
    sampler: str = "exact",
) -> Array:
    """DropHead: zeroes whole attention heads, each example its own draw.

    Every (example, head) pair is kept with probability ``1 - rate``, the same for every
    position and feature of that head; kept heads are scaled by 1/(1 - rate) (inverted
    dropout), so the expectation is unchanged and nothing is done at inference. Apply
    it to the heads' outputs before the output projection, e.g. to the
    ``[batch, length, heads, depth]`` output of ``flax.linen.dot_product_attention``
    with ``head_axis=-2``.

    Args:
      key: a PRNG key.
      x: per-head values, batch on axis 0 (if ``per_example``), heads on ``head_axis``.
      rate: probability of dropping a head (not the keep probability); a Python number
        in [0, 1] or a scalar array that may be traced (e.g. the paper's scheduled
        rate). Python 0 returns ``x``; rate 1 gives zeros with zero gradients.
      head_axis: the axis holding the heads (required: attention code puts it in
        different places, e.g. -2 for outputs ``[..., length, heads, depth]``, 1 for
        weights ``[batch, heads, q, k]``).
      per_example: True (default): one draw per (example, head), axis 0 being the
        batch; False: one draw per head, shared by the whole batch.
      sampler: ``"exact"`` or ``"fast"`` (see ``jaxreg.dropout``).

    Returns:
      An array of ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> out = jnp.ones((2, 5, 4, 8))  # [batch, length, heads, depth]
      >>> jaxreg.drop_head(jax.random.key(0), out, rate=0.25, head_axis=-2).shape
      (2, 5, 4, 8)

    References:
      Zhou, Ge, Xu, Wei, Zhou. "Scheduled DropHead: A Regularization Method for
      Transformer Models." Findings of EMNLP 2020.
    """
    fn = "drop_head"
    check_key_first(fn, key, x)
    per_example = check_bool(fn, "per_example", per_example)
    ndim = jnp.ndim(x)
    (head,) = normalize_axes(fn, "head_axis", head_axis, ndim)
    if per_example and head == 0:
        raise fail(
            fn,
            "head_axis must not be 0 (the batch axis) with per_example=True, got "
            f"head_axis={head_axis} for x of shape {jnp.shape(x)}. Put the batch on axis 0, "
            "or pass per_example=False to share each head's draw over the batch.",
        )
    drawn = {0, head} if per_example else {head}
    shared = tuple(d for d in range(ndim) if d not in drawn)
    return drop_units(fn, key, x, rate, broadcast_dims=shared, sampler=sampler)


def drop_key(
    key: Any,
    logits: Array,
    *,
    rate: float | Array,
    attention_mask: Array | None = None,
    sampler: str = "exact",
) -> Array:
    """DropKey: drops attention logits before the softmax (masks them to -inf).

    Each logit (each query-key pair) is kept with probability ``1 - rate`` and set to
    ``-inf`` otherwise, so the softmax renormalises over the keys that remain: no
    rescaling is needed, unlike dropout on the attention weights after the softmax.
    Kept logits are returned unchanged.

    A row whose every allowed key is dropped (likely for short rows, e.g. the first
    queries under a causal mask, or at rates near 1) would otherwise give NaN after
    the softmax, or, if masked keys were filled with a finite value (flax's
    ``finfo.min``), spread its attention over the masked keys. Such a row keeps its
    largest allowed logit (the first one, on ties): it attends to its best-scoring
    allowed key, and nothing masked is revealed. Pass the attention mask as
    ``attention_mask`` for that; without one every key counts as allowed.
    (Li et al.'s pseudo-code adds -1e12 to dropped logits instead; in float32 a row
    dropped entirely then becomes uniform over every key, masked ones included.)
    Rate 1 keeps exactly the largest allowed logit of each row (hard attention), for
    Python and traced rates alike.

    Args:
      key: a PRNG key.
      logits: attention logits with the keys on the last axis, e.g. ``[batch, heads,
        q_length, kv_length]``; any float dtype.
      rate: probability of dropping a logit; a Python number in [0, 1] or a scalar
        array that may be traced (the paper decreases it with depth). Python 0
        returns ``logits``; a traced rate outside [0, 1] gives NaN.
      attention_mask: True where a query may attend to a key (the ``mask`` of flax's
        and ``jax.nn.dot_product_attention``), broadcastable to ``logits``; None:
        every key is allowed. Only the fallback reads it: masking is the caller's.
      sampler: ``"exact"`` (default, ``jax.random.bernoulli``'s mask) or ``"fast"``
        (see ``jaxreg.dropout``).

    Returns:
      An array of ``logits``' shape and dtype: the logit where kept, ``-inf`` where
      dropped. Gradients flow to kept logits only.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> logits = jnp.zeros((2, 4, 3, 3))  # [batch, heads, q, k]
      >>> causal = jnp.tril(jnp.ones((3, 3), bool))
      >>> masked = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
      >>> dropped = jaxreg.drop_key(jax.random.key(0), masked, rate=0.3, attention_mask=causal)
      >>> bool(jnp.isfinite(jax.nn.softmax(dropped)).all())
      True

    References:
      Li, Hu, Nie, Han, Jiang, Guo, Liu. "DropKey for Vision Transformer." CVPR 2023.
    """
    fn = "drop_key"
    key, logits, rate, _ = _rate.check_op_args(fn, key, logits, rate, name="logits")
    sampler = _mask.check_sampler(fn, sampler)
    if logits.ndim == 0:
        raise fail(fn, "logits must have a key axis (the last axis), got a scalar.")
    if attention_mask is not None:
        attention_mask = jnp.asarray(attention_mask)
        if jnp.broadcast_shapes(attention_mask.shape, logits.shape) != logits.shape:
            raise fail(
                fn,
                f"attention_mask of shape {attention_mask.shape} does not broadcast to logits "
                f"of shape {logits.shape}.",
            )
    if logits.size == 0 or _rate.static(rate) == 0.0:
        return logits
    return drop_logits(key, logits, rate, sampler, attention_mask)


def drop_logits(
    key: Array | None, logits: Array, rate: Any, sampler: str, allowed: Array | None
) -> Array:
    """``drop_key`` without validation (``key`` may be None for a Python rate 1)."""
    keep = _mask.draw_keep(key, logits.shape, rate, sampler)
    if _rate.static(rate) is None:
        keep = keep & (_rate.keep_probability(rate, sampler) > 0.0)
    # Rows with no allowed key kept keep their first allowed maximum instead.
    candidates = logits
    if allowed is not None:
        allowed = jnp.broadcast_to(allowed.astype(jnp.bool_), logits.shape)
        candidates = jnp.where(allowed, logits, jnp.array(-jnp.inf, logits.dtype))
    nothing_kept = ~jnp.any(keep if allowed is None else keep & allowed, axis=-1, keepdims=True)
    best = jnp.argmax(candidates, axis=-1, keepdims=True)
    column = lax.broadcasted_iota(best.dtype, logits.shape, logits.ndim - 1)
    keep = keep | (nothing_kept & (column == best))
    out = jnp.where(keep, logits, jnp.array(-jnp.inf, logits.dtype))
    return nan_unless(out, _rate.valid_rate(rate), source=logits)
