"""Monte Carlo dropout prediction: predictive mean and variance over dropout masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import _bits
from jaxreg._checks import check_positive_int, fail

Array = jax.Array


def _moments(outputs: Any, valid: Array) -> tuple[Array, Any, Any]:
    """(count, mean, sum of squared deviations) over axis 0 where ``valid``, float32+."""
    count = jnp.sum(valid, dtype=jnp.float32)

    def mean(y):
        y = y.astype(jnp.promote_types(y.dtype, jnp.float32))
        w = valid.reshape((-1,) + (1,) * (y.ndim - 1))
        return jnp.sum(jnp.where(w, y, 0), axis=0) / jnp.maximum(count, 1.0)

    def m2(y, m):
        y = y.astype(m.dtype)
        w = valid.reshape((-1,) + (1,) * (y.ndim - 1))
        return jnp.sum(jnp.where(w, jnp.square(y - m), 0), axis=0)

    means = jax.tree.map(mean, outputs)
    return count, means, jax.tree.map(m2, outputs, means)


def _combine(a: tuple, b: tuple) -> tuple:
    """Chan et al.'s pairwise update of (count, mean, M2); stable for many samples."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    w = n_b / jnp.maximum(n, 1.0)

    def mean(ma, mb):
        return ma + (mb - ma) * w

    def m2(ma, mb, sa, sb):
        return sa + sb + jnp.square(mb - ma) * (n_a * w)

    return (
        n,
        jax.tree.map(mean, mean_a, mean_b),
        jax.tree.map(m2, mean_a, mean_b, m2_a, m2_b),
    )


def mc_predict(
    fn: Callable[..., Any],
    key: Any,
    *args: Any,
    num_samples: int,
    chunk_size: int | None = None,
) -> tuple[Any, Any]:
    """Predictive mean and variance of a stochastic function over independent keys.

    Calls ``fn(key_i, *args)`` for ``num_samples`` keys from ``jax.random.split(key)`` (MC dropout:
    ``fn`` runs the model with dropout on) and returns the mean and the variance
    (``ddof=0``) of its outputs, leaf by leaf for a pytree output. Samples are computed
    with ``jax.vmap`` in chunks of ``chunk_size`` inside a ``lax.scan``, and combined
    with a numerically stable pairwise update, so memory grows with ``chunk_size``, not
    with ``num_samples``.

    Args:
      fn: ``fn(key, *args) -> pytree of arrays``; must be traceable by ``jax.vmap``.
      key: a PRNG key; consumed by one ``jax.random.split``.
      *args: passed unchanged to every call.
      num_samples: number of Monte Carlo samples (>= 1).
      chunk_size: samples per vmapped chunk (default: all at once).

    Returns:
      ``(mean, variance)``, pytrees like ``fn``'s output, in its dtypes (accumulated in at
      least float32).

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> f = lambda k, x: jaxreg.dropout(k, x, rate=0.5)
      >>> mean, var = jaxreg.mc_predict(f, jax.random.key(0), jnp.ones(3), num_samples=64)
      >>> mean.shape, var.shape
      ((3,), (3,))

    References:
      Gal, Ghahramani. "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning." ICML 2016.
    """
    name = "mc_predict"
    if not callable(fn):
        raise fail(name, f"fn must be callable, got {type(fn).__name__}.", exc=TypeError)
    key = _bits.check_key(name, key)
    num_samples = check_positive_int(name, "num_samples", num_samples)
    chunk = (
        num_samples if chunk_size is None else check_positive_int(name, "chunk_size", chunk_size)
    )
    chunk = min(chunk, num_samples)
    blocks = -(-num_samples // chunk)
    # One key array, reshaped (not sliced twice) so the key-reuse checker sees each key
    # used once; the last block's surplus samples are computed and masked out.
    keys = jax.random.split(key, blocks * chunk).reshape(blocks, chunk)
    valid = (jnp.arange(blocks * chunk) < num_samples).reshape(blocks, chunk)
    template = jax.eval_shape(lambda k: fn(k, *args), jax.ShapeDtypeStruct((), key.dtype))

    def body(stats, block):
        block_keys, block_valid = block
        outputs = jax.vmap(lambda k: fn(k, *args))(block_keys)
        return _combine(stats, _moments(outputs, block_valid)), None

    zeros = jax.tree.map(
        lambda t: jnp.zeros(t.shape, jnp.promote_types(t.dtype, jnp.float32)), template
    )
    init = (jnp.float32(0.0), zeros, zeros)
    (_, mean, m2), _ = jax.lax.scan(body, init, (keys, valid))
    mean = jax.tree.map(lambda v, t: v.astype(t.dtype), mean, template)
    var = jax.tree.map(lambda v, t: (v / num_samples).astype(t.dtype), m2, template)
    return mean, var
