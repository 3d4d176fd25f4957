"""Monte Carlo dropout prediction: predictive mean and variance over dropout masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import check_callable, check_key, check_positive_int, describe, fail
from jaxreg._types import Array


def _moment_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 for int and bool outputs (and narrower floats); wider floats stay."""
    return jnp.promote_types(dtype, jnp.float32)


def _output_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Floating outputs keep their dtype; int and bool ones get float32 moments."""
    return dtype if jnp.issubdtype(dtype, jnp.floating) else _moment_dtype(dtype)


def _moments(outputs: Any, valid: Array) -> tuple[Array, Any, Any]:
    """(count, mean, sum of squared deviations) over axis 0 where ``valid``, float32+."""
    count = jnp.sum(valid, dtype=jnp.float32)

    def mean(y):
        y = y.astype(_moment_dtype(y.dtype))
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


def _trace_once(name: str, fn: Callable[..., Any], key: Array, args: tuple) -> Any:
    """The output structure of ``fn(key, *args)``; a failure names mc_predict's contract."""
    try:
        return jax.eval_shape(lambda k: fn(k, *args), jax.ShapeDtypeStruct((), key.dtype))
    except Exception as err:
        swapped = any(
            jnp.issubdtype(getattr(a, "dtype", jnp.float32), jax.dtypes.prng_key) for a in args
        )
        hint = (
            " One of *args is a PRNG key: pass the key to mc_predict itself, as its first "
            "argument (mc_predict(key, fn, *args)), and let fn take it first."
            if swapped
            else ""
        )
        raise fail(
            name,
            f"calling fn(key, *args) with a single PRNG key first failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} fn must "
            f"take the key as its first argument, then *args: fn(key, *args), e.g. "
            f"lambda key, x: model(x, key).{hint}",
            exc=type(err) if isinstance(err, (TypeError, ValueError)) else TypeError,
        ) from err


def mc_predict(
    key: Any,
    fn: Callable[..., Any],
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
      key: a PRNG key; consumed by one ``jax.random.split``.
      fn: ``fn(key, *args) -> pytree of arrays``; must be traceable by ``jax.vmap``.
      *args: passed unchanged to every call.
      num_samples: number of Monte Carlo samples (>= 1).
      chunk_size: samples per vmapped chunk (default: all at once).

    Returns:
      ``(mean, variance)``, pytrees like ``fn``'s output, in its dtypes (accumulated in at
      least float32); for integer or bool outputs (e.g. predicted classes or
      indicators) the moments are float32, never truncated to the output's dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> f = lambda k, x: jaxreg.dropout(k, x, rate=0.5)
      >>> mean, var = jaxreg.mc_predict(jax.random.key(0), f, jnp.ones(3), num_samples=64)
      >>> mean.shape, var.shape
      ((3,), (3,))

    References:
      Gal, Ghahramani. "Dropout as a Bayesian Approximation: Representing Model
      Uncertainty in Deep Learning." ICML 2016.
    """
    name = "mc_predict"
    if callable(key) and not callable(fn):
        raise fail(
            name,
            f"got a function as key and {describe(fn)} as fn: the arguments look swapped. "
            "The key comes first: jaxreg.mc_predict(key, fn, *args, num_samples=...).",
            exc=TypeError,
        )
    check_callable(name, "fn", fn, "fn(key, *args)")
    key = check_key(name, key)
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
    template = _trace_once(name, fn, key, args)

    def body(stats, block):
        block_keys, block_valid = block
        outputs = jax.vmap(lambda k: fn(k, *args))(block_keys)
        return _combine(stats, _moments(outputs, block_valid)), None

    zeros = jax.tree.map(lambda t: jnp.zeros(t.shape, _moment_dtype(t.dtype)), template)
    init = (jnp.float32(0.0), zeros, zeros)
    (_, mean, m2), _ = jax.lax.scan(body, init, (keys, valid))
    mean = jax.tree.map(lambda v, t: v.astype(_output_dtype(t.dtype)), mean, template)
    var = jax.tree.map(lambda v, t: (v / num_samples).astype(_output_dtype(t.dtype)), m2, template)
    return mean, var
