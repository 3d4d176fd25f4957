"""Monte Carlo dropout prediction: predictive mean and variance over dropout masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import _bits
from jaxreg._checks import check_positive_int, fail

Array = jax.Array


def _moments(outputs: Any) -> tuple[Any, Any, Any]:
    """(count, mean, sum of squared deviations) of a batch of samples (axis 0), float32+."""

    def one(y):
        y = y.astype(jnp.promote_types(y.dtype, jnp.float32))
        mean = jnp.mean(y, axis=0)
        return mean, jnp.sum(jnp.square(y - mean), axis=0)

    stats = jax.tree.map(one, outputs)
    count = jnp.asarray(jax.tree.leaves(outputs)[0].shape[0], jnp.float32)
    means = jax.tree.map(lambda s: s[0], stats, is_leaf=lambda s: isinstance(s, tuple))
    m2s = jax.tree.map(lambda s: s[1], stats, is_leaf=lambda s: isinstance(s, tuple))
    return count, means, m2s


def _combine(a: tuple, b: tuple) -> tuple:
    """Chan et al.'s pairwise update of (count, mean, M2); stable for many samples."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    w = n_b / n

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

    Calls ``fn(key_i, *args)`` for ``num_samples`` keys split from ``key`` (MC dropout:
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
    chunk = num_samples if chunk_size is None else check_positive_int(name, "chunk_size", chunk_size)
    chunk = min(chunk, num_samples)
    keys = jax.random.split(key, num_samples)
    full, rest = divmod(num_samples, chunk)

    def run(chunk_keys):
        return _moments(jax.vmap(lambda k: fn(k, *args))(chunk_keys))

    stats = run(keys[:chunk])
    if full > 1:
        blocks = keys[chunk : full * chunk].reshape(full - 1, chunk)

        def body(carry, block_keys):
            return _combine(carry, run(block_keys)), None

        stats, _ = jax.lax.scan(body, stats, blocks)
    if rest:
        stats = _combine(stats, run(keys[full * chunk :]))
    _, mean, m2 = stats
    template = jax.eval_shape(lambda k: fn(k, *args), keys[0])
    mean = jax.tree.map(lambda v, t: v.astype(t.dtype), mean, template)
    var = jax.tree.map(lambda v, t: (v / num_samples).astype(t.dtype), m2, template)
    return mean, var
