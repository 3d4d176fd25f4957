"""DropBlock: drop contiguous square (cube) regions of convolutional feature maps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg import _mask, _rate
from jaxreg._checks import check_bool, check_channel_axis, describe, fail
from jaxreg._types import Array


def _block_sizes(fn: str, block_size: int | Sequence[int], sizes: tuple[int, ...]) -> tuple:
    if isinstance(block_size, (int, np.integer)) and not isinstance(block_size, bool):
        blocks = (int(block_size),) * len(sizes)
    else:
        try:
            blocks = tuple(block_size)
        except TypeError:
            blocks = ()
        if len(blocks) != len(sizes) or not all(
            isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in blocks
        ):
            raise fail(
                fn,
                f"block_size must be an int or {len(sizes)} ints (one per spatial axis), "
                f"got {describe(block_size)}.",
                exc=TypeError,
            )
    for b, s in zip(blocks, sizes, strict=True):
        if b < 1:
            raise fail(fn, f"block_size must be >= 1, got {block_size!r}.")
        if b > s:
            raise fail(
                fn,
                f"block_size {block_size!r} is larger than the feature map {sizes}; "
                "use a block_size no larger than every spatial size.",
            )
    return blocks


def dropblock(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    block_size: int | Sequence[int],
    channel_axis: int = -1,
    shared_channels: bool = False,
) -> Array:
    """DropBlock: drops ``block_size``-wide contiguous blocks of each feature map.

    Block corners ("seeds") are drawn with probability ``gamma`` at every position
    where a whole block fits; each seed drops the block it anchors. With feature map
    sizes ``s_i`` and block sizes ``b_i`` over ``d`` spatial axes,
    ``gamma = rate / prod(b_i) * prod(s_i) / prod(s_i - b_i + 1)`` (the paper's eq. 1):
    ``rate`` is the fraction one would drop if blocks did not overlap; with overlaps the
    realised fraction is a little lower. Kept units are scaled by
    ``count(mask) / count_ones(mask)`` over the whole input, as in the paper's
    Algorithm 1. ``block_size=1`` is dropout with the same drop statistics.

    Args:
      key: a PRNG key.
      x: feature maps of rank 3 to 5: ``(batch, *spatial, channels)`` (channels-last,
        ``channel_axis=-1``) or ``(batch, channels, *spatial)`` (``channel_axis=1``).
      rate: target drop fraction in [0, 1] (the paper's ``1 - keep_prob``); Python or
        traced, see ``dropout``.
      block_size: block edge, an int or one int per spatial axis, each no larger than
        that axis.
      channel_axis: the channel axis (not 0, the batch axis).
      shared_channels: one spatial mask for all channels of an example (default: an
        independent mask per channel).

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      Ghiasi, Lin, Le. "DropBlock: A regularization method for convolutional networks."
      NeurIPS 2018.
    """
    fn = "dropblock"
    key, x, rate, early = _rate.check_op_args(fn, key, x, rate)
    shared_channels = check_bool(fn, "shared_channels", shared_channels)
    if not 3 <= x.ndim <= 5:
        raise fail(
            fn,
            f"x must be (batch, *spatial, channels) with 1 to 3 spatial axes, got shape {x.shape}.",
        )
    channel = check_channel_axis(fn, channel_axis, x.ndim)
    spatial = tuple(a for a in range(1, x.ndim) if a != channel)
    sizes = tuple(x.shape[a] for a in spatial)
    blocks = _block_sizes(fn, block_size, sizes)
    if early is not None:
        return early

    valid = tuple(s - b + 1 for s, b in zip(sizes, blocks, strict=True))
    ratio = math.prod(sizes) / (math.prod(blocks) * math.prod(valid))
    if _rate.static(rate) is not None:
        gamma = min(rate * ratio, 1.0)
    else:
        gamma = jnp.minimum(jnp.clip(rate, 0.0, 1.0) * np.float32(ratio), 1.0)

    seed_shape = list(x.shape)
    for a, v in zip(spatial, valid, strict=True):
        seed_shape[a] = v
    if shared_channels:
        seed_shape[channel] = 1
    # A seed is a "dropped" draw of a Bernoulli(gamma) keep-mask.
    seeds = (~_mask.draw_keep(key, tuple(seed_shape), gamma)).astype(jnp.uint8)

    window = [1] * x.ndim
    padding = [(0, 0)] * x.ndim
    for a, b in zip(spatial, blocks, strict=True):
        window[a] = b
        padding[a] = (b - 1, b - 1)
    dropped = lax.reduce_window(
        seeds, np.uint8(0), lax.max, tuple(window), (1,) * x.ndim, tuple(padding)
    )
    keep = dropped == 0
    kept = jnp.sum(keep, dtype=jnp.float32)
    total = np.float32(keep.size)
    scale = jnp.where(kept > 0, total / jnp.maximum(kept, 1.0), 0.0)
    if _rate.static(rate) is None:
        keep = keep & (rate < 1.0)  # gamma < 1 at rate 1: drop everything explicitly
    out = jnp.where(keep, x * scale.astype(x.dtype), jnp.zeros((), x.dtype))
    return _rate.poison_invalid(out, rate)
