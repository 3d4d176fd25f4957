"""The grid state (a plain pytree, model axis first) and per-model early stopping."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxreg.grid import _data

PyTree = Any


class GridState(NamedTuple):
    """Every model's training state; every array leaf has the (padded) model axis first.

    Attributes:
      params: the parameters.
      opt_state: the optimizer state.
      hparams: dict of per-model hyperparameters (always with an int32 ``seed``).
      step: int32, steps done (the same for every model: the grid's clock).
      active: bool, False once a model has stopped early (it no longer changes).
      stop_step: int32, the step at which the model stopped; -1 while active.
      best_step: int32, the step of the best validation value; -1 before any.
      best_metric: float32, the best (lowest) validation value; +inf before any.
      bad_evals: int32, evaluations since the last improvement.
      best_params: the parameters at ``best_step`` (None without ``validation``).
      metric: float32, the latest validation value (NaN before any).
      loss: float32, the mean training loss over the latest chunk (NaN before any).
      aux: the mean over the latest chunk of the loss's aux output (None without aux).
      valid: bool, False for the models added to pad the grid to the mesh.
      plan: int32, how the state was last trained (the same for every model): -1 not
        yet, 0 ``vmap``, g > 0 ``map`` in groups of g. ``strategy="auto"`` keeps it, so
        a resumed run computes exactly what the uninterrupted one would.
    """

    params: PyTree
    opt_state: PyTree
    hparams: dict
    step: Any
    active: Any
    stop_step: Any
    best_step: Any
    best_metric: Any
    bad_evals: Any
    best_params: PyTree
    metric: Any
    loss: Any
    aux: PyTree
    valid: Any
    plan: Any

    @property
    def num_models(self) -> int:
        """Models on the model axis, padding included."""
        return int(self.valid.shape[0])

    def to_host(self, tree: PyTree = None) -> PyTree:
        """Numpy copies of ``tree`` (default: the whole state) without the padded models.

        Every leaf must have the model axis first; with several processes every process
        gets the full arrays.
        """
        tree = self if tree is None else tree
        valid = _data.to_host(self.valid)
        return jax.tree_util.tree_map(lambda a: a[valid], _data.to_host(tree))


def fresh(params, opt_state, hparams, aux, valid, with_best: bool) -> GridState:
    """A model's state before its first step (called per model, inside vmap)."""
    return GridState(
        params=params,
        opt_state=opt_state,
        hparams=hparams,
        step=jnp.zeros((), jnp.int32),
        active=jnp.ones((), bool),
        stop_step=jnp.full((), -1, jnp.int32),
        best_step=jnp.full((), -1, jnp.int32),
        best_metric=jnp.full((), jnp.inf, jnp.float32),
        bad_evals=jnp.zeros((), jnp.int32),
        best_params=jax.tree_util.tree_map(jnp.copy, params) if with_best else None,
        metric=jnp.full((), jnp.nan, jnp.float32),
        loss=jnp.full((), jnp.nan, jnp.float32),
        aux=None
        if aux is None
        else jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, jnp.float32), aux),
        valid=valid,
        plan=jnp.full((), -1, jnp.int32),
    )


def record_validation(st: GridState, value: jax.Array, patience: int | None) -> GridState:
    """One model's early-stopping update after a chunk (``value``: lower is better)."""
    value = jnp.asarray(value, jnp.float32)
    improved = value < st.best_metric  # NaN never improves
    bad = jnp.where(improved, 0, st.bad_evals + 1)
    st = st._replace(
        metric=value,
        best_metric=jnp.where(improved, value, st.best_metric),
        best_step=jnp.where(improved, st.step, st.best_step),
        best_params=jax.tree_util.tree_map(
            lambda p, b: jnp.where(improved, p, b), st.params, st.best_params
        ),
        bad_evals=bad,
    )
    if patience is None:
        return st
    stop = st.active & (bad >= patience)
    return st._replace(active=st.active & ~stop, stop_step=jnp.where(stop, st.step, st.stop_step))


def padded_size(num_models: int, num_devices: int) -> int:
    return -(-num_models // num_devices) * num_devices
