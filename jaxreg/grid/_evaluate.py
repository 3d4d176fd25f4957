"""Per-model evaluation of user metric functions (nothing assumed about the task)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg._checks import fail
from jaxreg.grid import _data

PyTree = Any


def _per_example(fn: str, name: str, out: Any, batch: int) -> jax.Array:
    out = jnp.asarray(out, jnp.float32)
    if out.ndim == 0 or out.shape[0] != batch:
        raise fail(
            fn,
            f"{name} must return per-example values (a leading axis of {batch}) when "
            f"evaluating in batches or on subsets, got shape {out.shape}. Return the "
            "values before averaging, e.g. (predictions != labels).astype(jnp.float32).",
        )
    return out


def metric_value(
    fn: str,
    name: str,
    metric: Callable,
    params: PyTree,
    hparams: dict,
    data: PyTree,
    subsets: _data.Subsets | None,
    batch_size: int | None,
) -> jax.Array:
    """One model's value of ``metric`` on ``data`` (scalar, or per-example values averaged).

    Whole data at once without ``subsets`` and ``batch_size``; otherwise masked batches
    of the model's subset (or of the data), and ``metric`` must return per-example values.
    """
    if subsets is None and batch_size is None:
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        out = jnp.asarray(metric(params, hparams, data), jnp.float32)
        if out.ndim == 0:
            return out
        return jnp.mean(_per_example(fn, name, out, n), axis=0)
    total = (
        jax.tree_util.tree_leaves(data)[0].shape[0] if subsets is None else subsets.indices.shape[1]
    )
    size = total if batch_size is None else min(batch_size, total)
    num_batches = -(-total // size)
    subset = None if subsets is None else hparams["subset"]

    def one(carry, b):
        batch, mask = _data.gather_eval(data, subsets, subset, b * size, size)
        v = _per_example(fn, name, metric(params, hparams, batch), size)
        m = mask.reshape((size,) + (1,) * (v.ndim - 1))
        return (carry[0] + jnp.sum(jnp.where(m, v, 0.0), 0), carry[1] + jnp.sum(mask)), None

    probe = jax.eval_shape(
        lambda: _per_example(
            fn,
            name,
            metric(params, hparams, _data.gather_eval(data, subsets, subset, 0, size)[0]),
            size,
        )
    )
    zero = (jnp.zeros(probe.shape[1:], jnp.float32), jnp.zeros((), jnp.int32))
    (sums, count), _ = jax.lax.scan(one, zero, jnp.arange(num_batches))
    return sums / count
