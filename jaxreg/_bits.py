"""The random-bit engine: every random number jaxreg draws comes from here.

``random_bits(key, shape)`` returns exactly ``jax.random.bits(key, shape, jnp.uint32)``.
For threefry keys (the default, typed or legacy) it computes the same Threefry-2x32
hash of the same counters, written as straight-line ``jnp`` uint32 operations. XLA
lowers JAX's own threefry primitive on CPU to a rolled loop that keeps its state in
memory and cannot fuse with what consumes the bits; the straight-line form fuses hash,
threshold and select into one pass over the data (see ``bench/``). Keys of other
implementations (rbg, unsafe_rbg, custom) use ``jax.random.bits`` itself.

The counters are those of ``jax_threefry_partitionable=True`` (JAX's default): element
``i`` (row-major flat index) hashes the 64-bit counter ``i`` split into two 32-bit
words. The counter array is built from one iota per axis, so XLA's SPMD partitioner
shards it like any elementwise computation: no collectives, and each device computes
only its own slice. If a user turns the partitionable flag off, jaxreg falls back to
``jax.random.bits`` so the bits stay identical to JAX's. Nothing here changes JAX's
global configuration.

References:
  Salmon, Moraes, Dror, Shaw. "Parallel random numbers: as easy as 1, 2, 3." SC 2011
  (the Threefry-2x32 counter-based generator, 20 rounds).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg._types import Array, Shape

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotl(x: Array, r: int) -> Array:
    return lax.shift_left(x, np.uint32(r)) | lax.shift_right_logical(x, np.uint32(32 - r))


def threefry2x32(k0: Array, k1: Array, c0: Array, c1: Array) -> tuple[Array, Array]:
    """Threefry-2x32 (20 rounds) on uint32 words, as straight-line ops that XLA fuses."""
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(_PARITY))
    x0 = c0 + ks[0]
    x1 = c1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def flat_counter(shape: Shape) -> Array:
    """Row-major flat index of every element of ``shape`` as uint32 (size < 2**32).

    Built from one iota per axis (not a reshaped 1-D iota) so that sharded outputs
    partition without communication.
    """
    if not shape:
        return jnp.zeros((), jnp.uint32)
    index = None
    stride = 1
    for axis in reversed(range(len(shape))):
        term = lax.broadcasted_iota(jnp.uint32, shape, axis)
        if stride != 1:
            term = term * np.uint32(stride)
        index = term if index is None else index + term
        stride *= shape[axis]
    return index


@functools.partial(jax.jit, static_argnums=1, inline=True)
def _threefry_bits(key: Array, shape: Shape) -> Array:
    data = jax.random.key_data(key)
    # Counter i is the 64-bit value i = (hi, lo); hi is 0 below 2**32 elements.
    x0, x1 = threefry2x32(data[0], data[1], jnp.zeros((), jnp.uint32), flat_counter(shape))
    return x0 ^ x1


def uses_fast_path(key: Array, shape: Shape) -> bool:
    """Whether ``random_bits`` computes the hash itself (True) or calls JAX (False)."""
    return (
        jax.random.key_impl(key) == "threefry2x32"
        and bool(jax.config.jax_threefry_partitionable)
        and math.prod(shape) < 2**32
    )


def consume(key: Array) -> Array:
    """Marks ``key`` as used for JAX's key-reuse checker (``jax_debug_key_reuse``).

    ``jax.random.key_data`` does not count as a use, so the fast path passes the key
    through an optimization barrier (an op the checker treats as consuming). It acts
    on the 8-byte key only and costs nothing measurable.
    """
    return lax.optimization_barrier(key)


def random_bits(key: Array, shape: Shape) -> Array:
    """Uniform uint32 bits, equal to ``jax.random.bits(key, shape, jnp.uint32)``.

    Args:
      key: a single typed PRNG key (see ``_checks.check_key``).
      shape: static output shape.

    Returns:
      A uint32 array of ``shape``.
    """
    shape = tuple(int(d) for d in shape)
    if math.prod(shape) == 0:  # nothing to draw (and no counter for huge empty axes)
        consume(key)  # but the key is used, as by jax.random.bits
        return jnp.zeros(shape, jnp.uint32)
    if uses_fast_path(key, shape):
        return _threefry_bits(consume(key), shape)
    return jax.random.bits(key, shape, jnp.uint32)


def keep_in_memory(words: Array) -> Array:
    """Returns ``words`` unchanged, but computed once and stored, not fused into readers.

    XLA fuses an elementwise producer into every consumer and recomputes it per consumer
    element: a hash word read by 8 mask bytes would be hashed 8 times, and a mask read
    by the forward and the backward pass twice. A ``while`` loop whose trip count XLA
    cannot see is a fusion boundary (an ``optimization_barrier`` around the data is not:
    XLA strips it). The loop runs exactly once and xors the buffer with its index, 0:
    a no-op. (Touching a single element instead would save a pass but costs an
    all-reduce when the buffer is sharded.)

    The trip count is a constant 1 hidden from XLA behind an ``optimization_barrier``,
    so it never depends on the data or the key. A trip count computed from the key
    would be batched under ``jax.vmap`` over keys (one model per key), and a batched
    ``while`` predicate is reduced over the batch: with the model axis sharded, XLA
    then emits a ``pred[]`` all-reduce in every training step.

    Args:
      words: any array.
    """
    trips = lax.optimization_barrier(jnp.ones((), jnp.int32))
    return lax.fori_loop(0, trips, lambda i, w: w ^ i.astype(w.dtype), words)


def after(words: Array, anchor: Array) -> Array:
    """Returns ``words`` (an integer array) unchanged, computed only once ``anchor`` is.

    ``words`` goes through a ``while`` loop (see ``keep_in_memory``) that also reads one
    element of ``anchor`` and xors the words with ``index & anchor_bits``: 0 in the only
    iteration, which XLA cannot tell. Whatever is computed from the result therefore
    waits for ``anchor`` and is never merged (CSE) with the same computation on
    ``words`` itself. A backward pass passes its stored mask through ``after(mask,
    cotangent)`` to recompute what it derives from the mask instead of keeping the
    forward pass's copy alive. XLA CPU drops the optimization barriers that
    ``jax.checkpoint`` relies on; this does not need them.
    """
    probe = lax.bitcast_convert_type(anchor.ravel()[0].astype(jnp.float32), jnp.uint32)
    trips = lax.optimization_barrier(jnp.ones((), jnp.int32))

    def body(i, carry):
        w, p = carry
        return w ^ (i.astype(jnp.uint32) & p).astype(w.dtype), p

    return lax.fori_loop(0, trips, body, (words, probe))[0]


@functools.partial(jax.jit, static_argnums=1, inline=True)
def _threefry_bytes(key: Array, shape: Shape) -> Array:
    rows, length = shape[:-1], shape[-1]
    hashes = -(-length // 8)
    data = jax.random.key_data(key)
    x0, x1 = threefry2x32(
        data[0], data[1], jnp.zeros((), jnp.uint32), flat_counter((*rows, hashes))
    )
    words = keep_in_memory(jnp.stack([x0, x1], axis=-1))  # (*rows, hashes, 2)
    octets = lax.bitcast_convert_type(words, jnp.uint8)  # (*rows, hashes, 2, 4)
    return octets.reshape((*rows, hashes * 8))[..., :length]


def random_bytes(key: Array, shape: Shape) -> Array:
    """Uniform uint8 values, 8 per Threefry hash: jaxreg's fast mask stream.

    Along the last axis, element ``j`` of a row takes byte ``j % 8`` (little-endian,
    word ``x0`` then ``x1``) of the hash of counter ``row * ceil(L / 8) + j // 8``. The
    hash words are stored once and read by 8 elements each, so the cost per element is
    an eighth of ``random_bits``. This is not JAX's stream: the values differ from
    ``jax.random.bits(key, shape, jnp.uint8)``. Other key implementations use that.
    """
    shape = tuple(int(d) for d in shape)
    if not uses_fast_path(key, shape):
        return jax.random.bits(key, shape, jnp.uint8)
    if not shape:
        return _threefry_bytes(consume(key), (1,)).reshape(())
    if math.prod(shape) == 0:
        consume(key)
        return jnp.zeros(shape, jnp.uint8)
    return _threefry_bytes(consume(key), shape)


def uniform_from_bits(bits: Array, dtype: Any = jnp.float32) -> Array:
    """Floats in [0, 1) from uint32 bits, exactly as ``jax.random.uniform`` (float32).

    The top 23 bits become the mantissa of a float in [1, 2), minus 1.
    """
    one = np.array(1.0, np.float32).view(np.uint32)
    floats = lax.bitcast_convert_type((bits >> np.uint32(9)) | one, jnp.float32) - 1.0
    return floats.astype(dtype)


def standard_normal(key: Array, shape: Shape) -> Array:
    """float32 N(0, 1) samples, equal to ``jax.random.normal(key, shape)``."""
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    hi = np.float32(1.0)
    u = uniform_from_bits(random_bits(key, shape))
    u = lax.max(lo, u * (hi - lo) + lo)
    return np.float32(np.sqrt(2)) * lax.erf_inv(u)


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
