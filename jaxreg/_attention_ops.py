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
from jaxreg._checks import check_bool, fail, normalize_axes
from jaxreg._dropout import drop_units
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


def drop_key(key: Any, logits: Array, *, rate: float | Array, sampler: str = "exact") -> Array:
    """DropKey: drops attention logits before the softmax (masks them to -inf).

    Each logit (each query-key pair) is kept with probability ``1 - rate`` and set to
    ``-inf`` otherwise, so the softmax renormalises over the keys that remain: no
    rescaling is needed, unlike dropout on the attention weights after the softmax.
    Kept logits are returned unchanged.

    A row whose every key is dropped (likely only for short rows, e.g. the first
    queries under a causal mask, or at rates near 1) would otherwise be all -inf and
    give NaN after the softmax. Such a row keeps its largest logit (the first one,
    on ties), so it attends to its best-scoring key. Because masks applied before
    (flax's ``finfo.min`` fill, a causal mask) leave masked logits below every valid
    one, the kept key is a valid one whenever the row has any: nothing masked is
    revealed. (Li et al.'s code adds a large negative constant, -1e12, to dropped
    logits instead; in float32 a row dropped entirely then becomes uniform over every
    key, masked ones included.) Rate 1 keeps exactly the maximum of each row (hard
    attention), for Python and traced rates alike.

    Args:
      key: a PRNG key.
      logits: attention logits with the keys on the last axis, e.g. ``[batch, heads,
        q_length, kv_length]``; any float dtype.
      rate: probability of dropping a logit; a Python number in [0, 1] or a scalar
        array that may be traced (the paper decreases it with depth). Python 0
        returns ``logits``; a traced rate outside [0, 1] gives NaN.
      sampler: ``"exact"`` (default, ``jax.random.bernoulli``'s mask) or ``"fast"``
        (see ``jaxreg.dropout``).

    Returns:
      An array of ``logits``' shape and dtype: the logit where kept, ``-inf`` where
      dropped. Gradients flow to kept logits only.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> logits = jnp.zeros((2, 4, 3, 3))  # [batch, heads, q, k]
      >>> w = jax.nn.softmax(jaxreg.drop_key(jax.random.key(0), logits, rate=0.3))
      >>> bool(jnp.isfinite(w).all())
      True

    References:
      Li, Hu, Nie, Han, Jiang, Guo, Liu. "DropKey for Vision Transformer." CVPR 2023.
    """
    fn = "drop_key"
    key, logits, rate, _ = _rate.check_op_args(fn, key, logits, rate, name="logits")
    sampler = _mask.check_sampler(fn, sampler)
    if logits.ndim == 0:
        raise fail(fn, "logits must have a key axis (the last axis), got a scalar.")
    if logits.size == 0 or _rate.static(rate) == 0.0:
        return logits
    keep = _mask.draw_keep(key, logits.shape, rate, sampler)
    if _rate.static(rate) is None:
        keep = keep & (_rate.keep_probability(rate, sampler) > 0.0)
    return _rate.poison_invalid(keep_row_max(logits, keep), rate, source=logits)


def keep_row_max(logits: Array, keep: Array) -> Array:
    """``where(keep, logits, -inf)``; rows with nothing kept keep their (first) maximum."""
    dropped_row = ~jnp.any(keep, axis=-1, keepdims=True)
    best = jnp.argmax(logits, axis=-1, keepdims=True)
    column = lax.broadcasted_iota(best.dtype, logits.shape, logits.ndim - 1)
    keep = keep | (dropped_row & (column == best))
    return jnp.where(keep, logits, jnp.array(-jnp.inf, logits.dtype))
