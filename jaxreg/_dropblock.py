"""DropBlock: drop contiguous square (cube) regions of convolutional feature maps."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg import _mask, _rate
from jaxreg._checks import check_bool, check_channel_axis, check_choice, describe, fail
from jaxreg._types import Array

CALIBRATIONS = ("exact", "paper")
_STEPS = 23  # seed keep probabilities are multiples of 2**-23 (see _rate.keep_threshold)


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


@functools.cache
def coverage_histogram(sizes: tuple, blocks: tuple) -> tuple[tuple, tuple]:
    """Distinct seed-coverage counts ``c`` of a map and the fraction of positions with each.

    ``c(pos)`` is the number of valid seed positions whose block covers ``pos``; it is
    the product over axes of ``min(p, s - b) - max(0, p - b + 1) + 1``.
    """
    count = np.ones((), np.int64)
    for s, b in zip(sizes, blocks, strict=True):
        p = np.arange(s)
        count = np.multiply.outer(count, np.minimum(p, s - b) - np.maximum(0, p - b + 1) + 1)
    values, freq = np.unique(count.ravel(), return_counts=True)
    return tuple(int(v) for v in values), tuple(float(f) / count.size for f in freq)


def expected_drop_fraction(gamma: float, sizes: Sequence[int], blocks: Sequence[int]) -> float:
    """The expected dropped fraction ``mean_pos 1 - (1 - gamma)^c(pos)`` (float64)."""
    values, weights = coverage_histogram(tuple(sizes), tuple(blocks))
    return 1.0 - sum(w * (1.0 - gamma) ** c for c, w in zip(values, weights, strict=True))


def _kept_fraction(threshold: Array, values: tuple, weights: tuple) -> Array:
    """``sum_c w_c q^c`` with seed keep probability ``q = threshold / 2**23`` (float32).

    A fixed, unrolled order of float32 operations, so a Python rate, a traced rate and
    a vmapped rate give the same bits.
    """
    q = threshold.astype(jnp.float32) * np.float32(2.0**-_STEPS)
    log_q = jnp.log(q)
    total = jnp.zeros_like(q)
    for c, w in zip(values, weights, strict=True):
        power = q if c == 1 else jnp.exp(np.float32(c) * log_q)
        total = total + np.float32(w) * power
    return total


def calibrated_seed_rate(rate: float | Array, sizes: tuple, blocks: tuple) -> Array:
    """The seed drop probability whose expected dropped fraction equals ``rate``.

    Seeds are kept with probability ``T / 2**23`` (``T`` an integer, as every jaxreg
    mask). The expected kept fraction ``sum_c w_c q^c`` increases with ``q``; bisection
    over ``T`` (23 steps, static shapes, jit/vmap friendly) finds the smallest ``T``
    whose kept fraction reaches ``1 - rate``, so the realised drop fraction is at most
    ``rate`` and short of it by less than one step of ``q``. Returns ``1 - T / 2**23``,
    exact in float32.
    """
    return _solver(tuple(sizes), tuple(blocks))(jnp.asarray(rate, jnp.float32))


@functools.cache
def _solver(sizes: tuple, blocks: tuple) -> Any:
    """One jitted solve per map geometry (eager calls compile it once)."""
    values, weights = coverage_histogram(sizes, blocks)

    @jax.jit
    def solve(rate: Array) -> Array:
        target = 1.0 - rate

        def step(_, bounds):
            lo, hi = bounds
            mid = (lo + hi) // 2
            enough = _kept_fraction(mid, values, weights) >= target
            return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

        full = jnp.int32(2**_STEPS)
        _, hi = lax.fori_loop(0, _STEPS, step, (jnp.int32(0), full))
        hi = jnp.where(target >= 1.0, full, jnp.where(target <= 0.0, 0, hi))
        return np.float32(1.0) - hi.astype(jnp.float32) * np.float32(2.0**-_STEPS)

    return solve


def drop_block(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    block_size: int | Sequence[int],
    channel_axis: int = -1,
    shared_channels: bool = False,
    calibration: str = "exact",
    normalize_per_example: bool = False,
) -> Array:
    """DropBlock: drops ``block_size``-wide contiguous blocks of each feature map.

    Block corners ("seeds") are drawn with probability ``gamma`` at every position
    where a whole block fits (no block is clipped at a border); each seed drops the
    block it anchors. Blocks overlap, so a position ``pos`` is dropped with probability
    ``1 - (1 - gamma)^c(pos)``, where ``c(pos)`` counts the seed positions whose block
    covers it (fewer near the borders). How ``gamma`` follows from ``rate``
    (``calibration``):

    - ``calibration="exact"`` (default): the expected dropped fraction
      ``mean_pos 1 - (1 - gamma)^c(pos)`` equals ``rate`` (solved by bisection in
      float32 for Python and traced rates alike, to one step of 2**-23 in the seed
      probability). ``rate`` then means what it means for every other jaxreg op: the
      expected fraction of units dropped.
    - ``calibration="paper"``: the paper's eq. 1 over ``d`` spatial axes with sizes ``s_i``
      and blocks ``b_i``, ``gamma = rate / prod(b_i) * prod(s_i) / prod(s_i - b_i + 1)``:
      the fraction one would drop if blocks never overlapped. The realised fraction is
      lower (an expected 0.0946 at ``rate=0.1`` on 56x56 maps with 7x7 blocks, 0.250
      at 0.3 on 16x16 with 5x5); use it to reproduce hyperparameters tuned with the
      paper's formula.

    timm's ``DropBlock2d`` differs: it draws seeds at every position with the paper's
    gamma and centres blocks on them, clipping blocks at the borders (more seeds, so it
    drops more: about 0.111 at ``rate=0.1``, 56x56, block 7), and by default
    (``couple_channels=True``) shares one mask across channels, which is
    ``shared_channels=True`` here; jaxreg's default draws each channel independently.

    Kept units are scaled by ``count / count_kept``: over the whole input
    (``normalize_per_example=False``, the paper's Algorithm 1) or per example
    (``normalize_per_example=True``). Under batch (data-parallel) sharding the whole-input
    count is an all-reduce across devices; the per-example count needs no
    communication. Sharding a spatial axis needs neighbouring rows (XLA inserts a
    collective-permute) whatever the normalisation. ``block_size=1`` is dropout with
    the same drop statistics (calibrated: the same seed mask as ``dropout``'s).

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
      calibration: ``"exact"`` (default) or ``"paper"``: how the seed probability
        ``gamma`` follows from ``rate``, see above.
      normalize_per_example: count kept units per example (True) or over the whole
        input (False, default).

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      Ghiasi, Lin, Le. "DropBlock: A regularization method for convolutional networks."
      NeurIPS 2018.
    """
    fn = "drop_block"
    key, x, rate, early = _rate.check_op_args(fn, key, x, rate)
    shared_channels = check_bool(fn, "shared_channels", shared_channels)
    calibration = check_choice(fn, "calibration", calibration, CALIBRATIONS)
    per_example = check_bool(fn, "normalize_per_example", normalize_per_example)
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
    if calibration == "exact":
        # A Python rate takes the same float32 solve as a traced one: same masks.
        seed_rate = calibrated_seed_rate(rate, sizes, blocks)
    else:
        ratio = math.prod(sizes) / (math.prod(blocks) * math.prod(valid))
        if _rate.static(rate) is not None:
            seed_rate = min(rate * ratio, 1.0)
        else:
            seed_rate = jnp.minimum(jnp.clip(rate, 0.0, 1.0) * np.float32(ratio), 1.0)

    seed_shape = list(x.shape)
    for a, v in zip(spatial, valid, strict=True):
        seed_shape[a] = v
    if shared_channels:
        seed_shape[channel] = 1
    # A seed is a "dropped" draw of a Bernoulli keep-mask with drop rate seed_rate.
    seeds = (~_mask.draw_keep(key, tuple(seed_shape), seed_rate)).astype(jnp.uint8)

    # A position is dropped if a seed lies in the block-sized window ending at it: a
    # max over that window, done one axis at a time (separable, b_i reads per axis).
    dropped = seeds
    for a, b in zip(spatial, blocks, strict=True):
        window = tuple(b if i == a else 1 for i in range(x.ndim))
        padding = tuple((b - 1, b - 1) if i == a else (0, 0) for i in range(x.ndim))
        dropped = lax.reduce_window(dropped, np.uint8(0), lax.max, window, (1,) * x.ndim, padding)
    keep = dropped == 0
    axes = tuple(range(1, x.ndim)) if per_example else None
    kept = jnp.sum(keep, axis=axes, dtype=jnp.float32, keepdims=True)
    total = np.float32(keep.size if axes is None else keep.size // keep.shape[0])
    scale = jnp.where(kept > 0, total / jnp.maximum(kept, 1.0), 0.0)
    if _rate.static(rate) is None:
        keep = keep & (rate < 1.0)  # gamma < 1 at rate 1: drop everything explicitly
    out = jnp.where(keep, x * scale.astype(x.dtype), jnp.zeros((), x.dtype))
    return _rate.poison_invalid(out, rate)
