"""The compiled programs: one model's chunk, strategies (vmap / map), shard_map, probe."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxreg.grid import _data, _evaluate, _keys, _state

PyTree = Any
PROBE_STEPS = 4
PROBE_REPEATS = 5
PROBE_BIG_GROUP = 8


class Plan(NamedTuple):
    """How a grid runs: ``strategy`` ("vmap" or "map"), ``group_size`` under "map", and
    the probe's seconds per probe call for each candidate (empty when not measured)."""

    strategy: str
    group_size: int
    timings: dict


def split_loss(out: Any, has_aux: bool) -> tuple[jax.Array, Any]:
    if has_aux:
        return out[0], out[1]
    return out, None


def model_chunk(
    trainer,
    st: _state.GridState,
    data,
    subsets,
    val_data,
    val_subsets,
    *,
    steps: int,
    has_aux: bool,
) -> _state.GridState:
    """``steps`` training steps of one model, then its validation (early stopping)."""
    hp = st.hparams
    opt = trainer.optimizer(hp)
    subset = hp.get("subset")

    def loss_fn(params, batch, key):
        return split_loss(trainer.loss(params, hp, batch, key), has_aux)

    def step(carry, _):
        params, opt_state, n = carry
        batch_key, loss_key = _keys.step_keys(hp["seed"], n)
        batch = _data.draw_batch(batch_key, data, trainer.batch_size, subsets, subset)
        (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, loss_key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, n + 1), (value, aux)

    def run(st):
        carry = (st.params, st.opt_state, st.step)
        (params, opt_state, n), (values, auxs) = jax.lax.scan(step, carry, None, length=steps)
        st = st._replace(
            params=params,
            opt_state=opt_state,
            step=n,
            loss=jnp.mean(values.astype(jnp.float32)),
            aux=_state.mean_float(auxs) if has_aux else None,
        )
        if trainer.validation is None:
            return st
        value = _evaluate.metric_value(
            "grid.Trainer.train", "validation", trainer.validation, st.params, hp, val_data,
            val_subsets, None,
        )  # fmt: skip
        if value.ndim:
            raise _evaluate.fail(
                "grid.Trainer.train",
                f"validation must return a scalar or per-example values, got shape "
                f"{value.shape} after averaging over the examples.",
            )
        return _state.record_validation(st, value, trainer.patience)

    def skip(st):  # a stopped model: nothing changes but the clock
        return st._replace(step=st.step + steps)

    return jax.lax.cond(st.active, run, skip, st)


def over_models(fn: Callable, strategy: str, group_size: int, num_shared: int) -> Callable:
    """``fn(model_tree, *shared)`` for one model -> the same over a leading model axis."""

    def local(tree, *shared):
        if strategy == "vmap":
            return jax.vmap(fn, in_axes=(0,) + (None,) * num_shared)(tree, *shared)
        one = lambda t: fn(t, *shared)  # noqa: E731
        return jax.lax.map(one, tree, batch_size=None if group_size == 1 else group_size)

    return local


def sharded(local: Callable, mesh: Mesh, num_shared: int, *, donate: bool) -> Callable:
    """``local`` on every device's block of models (``shard_map``): no communication."""
    axis = mesh.axis_names[0]
    f = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis),) + (P(),) * num_shared,
        out_specs=P(axis),
        check_vma=False,
    )
    return jax.jit(f, donate_argnums=(0,) if donate else ())


def chunk_program(trainer, mesh, plan: Plan, *, steps: int, has_aux: bool, donate: bool):
    def one(st, data, subsets, val_data, val_subsets):
        return model_chunk(
            trainer, st, data, subsets, val_data, val_subsets, steps=steps, has_aux=has_aux
        )

    return sharded(over_models(one, plan.strategy, plan.group_size, 4), mesh, 4, donate=donate)


def candidates(local_models: int) -> list[Plan]:
    """What ``"auto"`` measures: vmap, map one by one, map in groups of 8 (>= 16 models)."""
    if local_models == 1:
        return [Plan("vmap", 1, {})]
    plans = [Plan("vmap", 1, {}), Plan("map", 1, {})]
    if local_models >= 2 * PROBE_BIG_GROUP:
        plans.append(Plan("map", PROBE_BIG_GROUP, {}))
    return plans


def probe(trainer, mesh, state, args: tuple, *, has_aux: bool) -> tuple[Plan, Callable | None]:
    """Times a ``PROBE_STEPS``-step chunk under each candidate; returns the fastest.

    Each candidate is compiled once and run ``PROBE_REPEATS + 1`` times on the same
    (not donated) state; its time is the minimum over the timed runs. With several
    processes, process 0's choice is used by all. Also returns the winner's program
    when the probe's chunk is the trainer's (``chunk_steps <= PROBE_STEPS``), else None.
    """
    local_models = state.num_models // mesh.size
    plans = candidates(local_models)
    if len(plans) == 1:
        return plans[0], None
    steps = min(PROBE_STEPS, trainer.chunk_steps)
    timings, programs = {}, []
    for plan in plans:
        fn = chunk_program(trainer, mesh, plan, steps=steps, has_aux=has_aux, donate=False)
        jax.block_until_ready(fn(state, *args))  # compiles
        best = np.inf
        for _ in range(PROBE_REPEATS):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(state, *args))
            best = min(best, time.perf_counter() - t0)
        timings[name(plan)] = best
        programs.append(fn)
    choice = int(np.argmin([timings[name(p)] for p in plans]))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        choice = int(multihost_utils.broadcast_one_to_all(np.int32(choice)))
    reuse = programs[choice] if steps == trainer.chunk_steps else None
    return plans[choice]._replace(timings=timings), reuse


def name(plan: Plan) -> str:
    return "vmap" if plan.strategy == "vmap" else f"map(group_size={plan.group_size})"


@functools.lru_cache(maxsize=32)
def init_program(init: Callable, optimizer: Callable, mesh: Mesh, with_best: bool) -> Callable:
    """Fresh states from ``(hparams, valid, aux)`` (shared by trainers with the same
    functions, so a second trainer of the same model compiles nothing new)."""

    def one(tree):
        hp, valid, aux = tree
        params = init(_keys.init_key(hp["seed"]), hp)
        opt_state = optimizer(hp).init(params)
        return _state.fresh(params, opt_state, hp, aux, valid, with_best)

    return sharded(over_models(one, "vmap", 1, 0), mesh, 0, donate=False)


def evaluate_program(metrics: tuple, mesh, plan: Plan, *, best: bool, batch_size) -> Callable:
    def one(st, data, subsets):
        params = st.best_params if best else st.params
        return {
            n: _evaluate.metric_value(
                "grid.Trainer.evaluate", f"metrics[{n!r}]", fn, params, st.hparams, data,
                subsets, batch_size,
            )
            for n, fn in metrics
        }  # fmt: skip

    return sharded(over_models(one, plan.strategy, plan.group_size, 2), mesh, 2, donate=False)
