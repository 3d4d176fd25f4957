"""The trainer's input checks (one place for every error message) and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg._checks import describe, fail
from jaxreg.grid import _data, _keys, _state

PyTree = Any


def check_loss(trainer, fn: str, hparams: dict, data: PyTree) -> Any:
    """Traces ``loss`` for one model on one batch; returns the aux shapes (or None)."""
    hp = {k: jax.ShapeDtypeStruct((), v.dtype) for k, v in hparams.items()}
    key = jax.eval_shape(lambda: jax.random.key(0))
    params = jax.eval_shape(trainer.init, key, hp)
    batch = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct((trainer.batch_size, *np.shape(a)[1:]), a.dtype), data
    )
    out = jax.eval_shape(trainer.loss, params, hp, batch, key)
    has_aux = isinstance(out, (tuple, list)) and len(out) == 2
    value = out[0] if has_aux else out
    if not isinstance(value, jax.ShapeDtypeStruct) or value.shape != ():
        got = f"shape {value.shape}" if hasattr(value, "shape") else describe(value)
        raise fail(
            fn,
            f"loss must return a scalar or (scalar, aux), got {got}. Average over the "
            "batch, e.g. optax.softmax_cross_entropy_with_integer_labels(...).mean().",
        )
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise fail(fn, f"loss must return a floating-point scalar, got dtype {value.dtype}.")
    return out[1] if has_aux else None


def check_state(fn: str, state: Any, mesh) -> None:
    """A ``GridState`` whose model axis splits evenly over ``mesh``."""
    if not isinstance(state, _state.GridState):
        raise fail(
            fn, f"state must be a GridState (from init_state), got {describe(state)}.",
            exc=TypeError,
        )  # fmt: skip
    if state.num_models % mesh.size:
        raise fail(
            fn,
            f"mesh of {mesh.size} devices cannot hold the {state.num_models} models of "
            "state (the model axis must split evenly over the devices). Make the state "
            "with this trainer's init_state, or use a mesh whose size divides "
            f"{state.num_models}.",
        )


def _smallest_used(subsets: _data.Subsets, used: np.ndarray) -> int:
    sizes = np.where(np.isin(np.arange(len(subsets.sizes)), used), subsets.sizes, 2**31 - 1)
    return int(np.argmin(sizes))


def prepare(trainer, fn, state, data, subsets, validation_data, validation_subsets):
    """Checks ``train``'s inputs; returns the device arguments of the chunk program."""
    check_state(fn, state, trainer.mesh)
    n = _data.num_examples(fn, "data", data)
    hp_host = None
    if subsets is not None:
        subsets = _data.pack_subsets(fn, "subsets", subsets, n)
        hp_host = _data.to_host(state.hparams)
        s = _smallest_used(subsets, _data.check_subset_hparam(fn, "subsets", subsets, hp_host))
        if trainer.batch_size > subsets.sizes[s]:
            raise fail(
                fn,
                f"batch_size {trainer.batch_size} is larger than subsets[{s}] "
                f"({subsets.sizes[s]} examples), which a model uses. Use a smaller "
                "batch_size or larger subsets.",
            )
    elif trainer.batch_size > n:
        raise fail(
            fn,
            f"batch_size {trainer.batch_size} is larger than the {n} examples of data. Use a "
            "smaller batch_size.",
        )
    if (trainer.validation is None) != (validation_data is None):
        raise fail(
            fn,
            "validation_data must be given exactly when the trainer has a validation "
            f"function, got validation={trainer.validation!r} and validation_data "
            f"{'given' if validation_data is not None else 'None'}.",
        )
    if validation_data is not None:
        m = _data.num_examples(fn, "validation_data", validation_data)
    if validation_subsets is not None:
        if validation_data is None:
            raise fail(fn, "validation_subsets needs validation_data, got None.")
        validation_subsets = _data.pack_subsets(fn, "validation_subsets", validation_subsets, m)
        hp_host = _data.to_host(state.hparams) if hp_host is None else hp_host
        _data.check_subset_hparam(fn, "validation_subsets", validation_subsets, hp_host)
    mesh = trainer.mesh
    return (
        _data.put(data, mesh, models=False),
        _data.as_device_subsets(subsets, mesh),
        None if validation_data is None else _data.put(validation_data, mesh, models=False),
        _data.as_device_subsets(validation_subsets, mesh),
    )


def _name(f: Any) -> str | None:
    if f is None:
        return None
    return f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__name__)}"


def fingerprint(trainer, grid, data: PyTree, extra: Any) -> str:
    """See ``Trainer.fingerprint``."""
    shapes = None
    if data is not None:
        shapes = [[list(np.shape(a)), str(np.result_type(a))] for a in jax.tree.leaves(data)]
    spec = {
        "grid": grid.fingerprint(),
        "key_rule": [_keys.INIT_STREAM, _keys.STEP_STREAM],
        "batch_size": trainer.batch_size,
        "chunk_steps": trainer.chunk_steps,
        "patience": trainer.patience,
        "functions": [
            _name(f) for f in (trainer.init, trainer.loss, trainer.optimizer, trainer.validation)
        ],
        "data": shapes,
        "extra": repr(extra),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
