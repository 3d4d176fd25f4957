"""Data on the mesh: placement, per-model subsets as index tables, minibatches, host copies."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxreg._checks import describe, fail

PyTree = Any


class Subsets(NamedTuple):
    """Index sets into a data set, padded to one length: row ``s`` is ``indices[s, :sizes[s]]``."""

    indices: Any  # (S, m) int32
    sizes: Any  # (S,) int32


def num_examples(fn: str, name: str, data: PyTree) -> int:
    """The common leading length of ``data``'s leaves (an error if they differ)."""
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise fail(fn, f"{name} must be a pytree of arrays, got {describe(data)}.", exc=TypeError)
    lengths = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(lengths) != 1 or None in lengths:
        shapes = [np.shape(a) for a in leaves][:6]
        raise fail(
            fn,
            f"{name} must be arrays with one common leading (example) axis, got shapes {shapes}.",
        )
    n = lengths.pop()
    if n == 0:
        raise fail(fn, f"{name} must hold at least one example, got 0.")
    return int(n)


def pack_subsets(fn: str, name: str, subsets: Any, n: int) -> Subsets:
    """``subsets`` (a sequence of index arrays, or a 2-D array) as a padded table."""
    if isinstance(subsets, Subsets):
        return subsets
    if isinstance(subsets, (np.ndarray, jax.Array)) and np.ndim(subsets) == 2:
        rows = list(np.asarray(subsets))
    elif isinstance(subsets, (list, tuple)) and subsets:
        rows = [np.asarray(r) for r in subsets]
    else:
        raise fail(
            fn,
            f"{name} must be a non-empty list of 1-D index arrays, got {describe(subsets)}.",
            exc=TypeError,
        )
    for s, r in enumerate(rows):
        if r.ndim != 1 or r.size == 0 or r.dtype.kind not in "iu":
            raise fail(
                fn,
                f"{name}[{s}] must be a non-empty 1-D integer array, got dtype {r.dtype} and "
                f"shape {r.shape}.",
                exc=TypeError,
            )
        if r.min() < 0 or r.max() >= n:
            raise fail(
                fn,
                f"{name}[{s}] must index the {n} examples of the data, got values in "
                f"[{r.min()}, {r.max()}].",
            )
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), np.int32)
    for s, r in enumerate(rows):
        table[s, : len(r)] = r
    return Subsets(table, np.array([len(r) for r in rows], np.int32))


def check_subset_hparam(fn: str, name: str, subsets: Subsets, hparams: dict) -> np.ndarray:
    """The ``subset`` hyperparameter of every model, checked against the table."""
    if "subset" not in hparams:
        raise fail(
            fn,
            f"{name} needs a grid with an integer 'subset' axis that picks each model's "
            "row, got none. Add one, e.g. jaxreg.grid.product(subset=range(len(subsets)), "
            "...).",
        )
    s = np.asarray(hparams["subset"])
    if s.dtype.kind not in "iu" or s.min() < 0 or s.max() >= len(subsets.sizes):
        raise fail(
            fn,
            f"the 'subset' hyperparameter must be integers in [0, {len(subsets.sizes)}) "
            f"(rows of {name}), got {np.unique(s)[:8].tolist()}.",
        )
    return s


def draw_batch(key: jax.Array, data: PyTree, batch_size: int, subsets, subset) -> PyTree:
    """One model's minibatch: ``batch_size`` examples uniformly with replacement."""
    if subsets is None:
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        idx = jax.random.randint(key, (batch_size,), 0, n)
    else:
        j = jax.random.randint(key, (batch_size,), 0, subsets.sizes[subset])
        idx = subsets.indices[subset, j]
    return jax.tree_util.tree_map(lambda a: a[idx], data)


# --- the mesh ------------------------------------------------------------------------


def check_mesh(fn: str, mesh: Any) -> Mesh:
    """A 1-D mesh (default: every device of every process)."""
    if mesh is None:
        return Mesh(np.array(jax.devices()), ("models",))
    if not isinstance(mesh, Mesh):
        raise fail(
            fn, f"mesh must be a jax.sharding.Mesh or None, got {describe(mesh)}.", exc=TypeError
        )
    if len(mesh.axis_names) != 1:
        raise fail(
            fn,
            f"mesh must have one axis (the models), got axes {mesh.axis_names} of shape "
            f"{tuple(mesh.devices.shape)}. Use Mesh(np.array(devices), ('models',)).",
        )
    return mesh


def sharding(mesh: Mesh, models: bool) -> NamedSharding:
    return NamedSharding(mesh, P(mesh.axis_names[0]) if models else P())


def put(tree: PyTree, mesh: Mesh, *, models: bool) -> PyTree:
    """Host (or device) arrays onto the mesh: model axis split, or replicated.

    Every process holds the full host array and contributes its own devices' shards.
    Arrays already placed this way are not copied.
    """
    target = sharding(mesh, models)

    def place(a):
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(target, a.ndim):
            return a
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, target, lambda index: a[index])

    return jax.tree_util.tree_map(place, tree)


def to_host(tree: PyTree) -> PyTree:
    """Full numpy copies of (possibly sharded, possibly multi-process) arrays."""

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(fetch, tree)


def first_value(a: jax.Array) -> Any:
    """The first element of a (possibly multi-process) model-sharded array, on the host."""
    shard = min(a.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.asarray(shard.data).reshape(-1)[0]


def pad_models(tree: PyTree, size: int) -> PyTree:
    """Pads each leaf's leading (model) axis to ``size`` by repeating its last entry."""

    def pad(a):
        a = np.asarray(a)
        extra = size - len(a)
        return np.concatenate([a, np.repeat(a[-1:], extra, axis=0)]) if extra else a

    return jax.tree_util.tree_map(pad, tree)


def as_device_subsets(subsets: Subsets | None, mesh: Mesh) -> Subsets | None:
    if subsets is None:
        return None
    return Subsets(*put((subsets.indices, subsets.sizes), mesh, models=False))


def gather_eval(data: PyTree, subsets: Subsets | None, subset, start, batch_size):
    """Examples ``[start, start + batch_size)`` of a model's evaluation set and their mask."""
    j = start + jnp.arange(batch_size)
    if subsets is None:
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        mask = j < n
        idx = jnp.minimum(j, n - 1)
    else:
        mask = j < subsets.sizes[subset]
        idx = subsets.indices[subset, jnp.minimum(j, subsets.indices.shape[1] - 1)]
    return jax.tree_util.tree_map(lambda a: a[idx], data), mask
