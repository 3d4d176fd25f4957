"""The compiled programs: one model's chunk, strategies (vmap / map), shard_map, probe."""

from __future__ import annotations

import concurrent.futures
import functools
import time
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxreg._checks import fail
from jaxreg.grid import _data, _evaluate, _keys, _state

PyTree = Any
PROBE_BIG_GROUP = 8
PROBE_STEPS = 4
PROBE_REPEATS = 3


class Plan(NamedTuple):
    """How a grid runs: ``strategy`` ("vmap" or "map") and ``group_size`` under "map".

    ``timings``: the probe's seconds for one chunk of each candidate (empty when the
    plan was not measured).
    """

    strategy: str
    group_size: int
    timings: dict

    @property
    def code(self) -> int:
        """The plan as ``GridState.plan`` records it: 0 vmap, g > 0 map in groups of g."""
        return 0 if self.strategy == "vmap" else self.group_size

    @staticmethod
    def from_code(code: int) -> Plan:
        """The plan of a ``GridState.plan`` value (>= 0)."""
        return Plan("vmap", 1, {}) if code == 0 else Plan("map", int(code), {})

    @property
    def name(self) -> str:
        """``"vmap"`` or ``"map(group_size=g)"``."""
        return "vmap" if self.strategy == "vmap" else f"map(group_size={self.group_size})"


def split_loss(out: Any, has_aux: bool) -> tuple[jax.Array, Any]:
    if has_aux:
        return out[0], out[1]
    return out, None


def model_chunk(
    trainer,
    plan: Plan,
    st: _state.GridState,
    steps: jax.Array,
    data,
    subsets,
    val_data,
    val_subsets,
    *,
    has_aux: bool,
) -> _state.GridState:
    """``steps`` (traced) training steps of one model, then its validation."""
    hp = st.hparams
    opt = trainer.optimizer(hp)
    subset = hp.get("subset")

    def loss_fn(params, batch, key):
        return split_loss(trainer.loss(params, hp, batch, key), has_aux)

    def step(_, carry):
        params, opt_state, n, loss_sum, aux_sum = carry
        batch_key, loss_key = _keys.step_keys(hp["seed"], n)
        batch = _data.draw_batch(batch_key, data, trainer.batch_size, subsets, subset)
        (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, loss_key)
        updates, opt_state = opt.update(grads, opt_state, params)
        loss_sum = loss_sum + value.astype(jnp.float32)
        if has_aux:
            aux_sum = jax.tree_util.tree_map(
                lambda s, a: s + jnp.asarray(a, jnp.float32), aux_sum, aux
            )
        return optax.apply_updates(params, updates), opt_state, n + 1, loss_sum, aux_sum

    def run(st):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, st.aux)
        carry = (st.params, st.opt_state, st.step, jnp.zeros((), jnp.float32), zeros)
        params, opt_state, n, loss_sum, aux_sum = jax.lax.fori_loop(0, steps, step, carry)
        count = steps.astype(jnp.float32)
        st = st._replace(
            params=params,
            opt_state=opt_state,
            step=n,
            loss=loss_sum / count,
            aux=jax.tree_util.tree_map(lambda a: a / count, aux_sum),
        )
        if trainer.validation is None:
            return st
        value = _evaluate.metric_value(
            "grid.Trainer.train", "validation", trainer.validation, st.params, hp, val_data,
            val_subsets, None,
        )  # fmt: skip
        if value.ndim:
            raise fail(
                "grid.Trainer.train",
                f"validation must return a scalar or per-example values, got shape "
                f"{value.shape} after averaging over the examples.",
            )
        return _state.record_validation(st, value, trainer.patience)

    def skip(st):  # a stopped model: nothing changes but the clock
        return st._replace(step=st.step + steps)

    st = st._replace(plan=jnp.int32(plan.code))
    return jax.lax.cond(st.active, run, skip, st)


def over_models(fn: Callable, strategy: str, group_size: int, num_shared: int) -> Callable:
    """``fn(model_tree, *shared)`` for one model -> the same over a leading model axis."""

    def local(tree, *shared):
        if strategy == "vmap":
            return jax.vmap(fn, in_axes=(0,) + (None,) * num_shared)(tree, *shared)
        # Groups of g > 1 are vmapped: XLA compiles each model as under "vmap" and the
        # numbers agree bit for bit. Groups of 1 run without a model axis (a loop inside
        # the program): fastest where vmap lowers badly (convolutions on a CPU), but
        # XLA may round differently than under vmap.
        return jax.lax.map(
            lambda t: fn(t, *shared), tree, batch_size=None if group_size == 1 else group_size
        )

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


def chunk_program(trainer, mesh, plan: Plan, *, has_aux: bool) -> Callable:
    """``(state, steps, data, subsets, val_data, val_subsets) -> state`` for the grid.

    ``steps`` is a runtime (replicated) int32, so one compile serves a chunk of any
    length: the probe's short runs and training's full chunks. Consumes ``state``.
    Trainers with the same functions and settings share the program (and its compiles).
    """
    settings = tuple(getattr(trainer, f) for f in PROGRAM_FIELDS)
    return _chunk_program(settings, mesh, plan.code, has_aux)


PROGRAM_FIELDS = ("init", "loss", "optimizer", "batch_size", "validation", "patience")


@functools.lru_cache(maxsize=64)
def _chunk_program(settings: tuple, mesh: Mesh, code: int, has_aux: bool) -> Callable:
    trainer = types.SimpleNamespace(**dict(zip(PROGRAM_FIELDS, settings, strict=True)))
    plan = Plan.from_code(code)

    def one(st, steps, data, subsets, val_data, val_subsets):
        return model_chunk(
            trainer, plan, st, steps, data, subsets, val_data, val_subsets, has_aux=has_aux
        )

    return sharded(over_models(one, plan.strategy, plan.group_size, 5), mesh, 5, donate=True)


def candidates(local_models: int) -> list[Plan]:
    """What ``"auto"`` measures: vmap, map one by one, map in groups of 8 (>= 16 models)."""
    plans = [Plan("vmap", 1, {}), Plan("map", 1, {})]
    if local_models >= 2 * PROBE_BIG_GROUP:
        plans.append(Plan("map", PROBE_BIG_GROUP, {}))
    return plans


@jax.jit
def copy(tree: PyTree) -> PyTree:
    """New buffers with the same values (for a program that consumes its input)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


def steps_arg(steps: int, mesh: Mesh) -> jax.Array:
    """A chunk length as the programs take it: an int32 replicated on ``mesh``."""
    return _data.put(np.int32(steps), mesh, models=False)


def probe(trainer, mesh, state, args: tuple) -> tuple[Plan, Callable]:
    """Times each candidate on ``PROBE_STEPS`` steps; returns the fastest and its program.

    The candidates' chunk programs are compiled in parallel threads, each is run once
    (1 step, to warm up) and then ``PROBE_REPEATS`` times for ``PROBE_STEPS`` steps on a
    copy of ``state``; its time is the fastest run. The probe's results are thrown
    away: training starts from ``state`` with the winner's compiled program. With
    several processes, process 0's choice is used by all.
    """
    plans = candidates(state.num_models // mesh.size)
    has_aux = state.aux is not None
    programs = [chunk_program(trainer, mesh, p, has_aux=has_aux) for p in plans]
    one, few = steps_arg(1, mesh), steps_arg(min(PROBE_STEPS, trainer.chunk_steps), mesh)
    lowered = [fn.lower(state, one, *args) for fn in programs]
    with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
        list(pool.map(lambda low: low.compile(), lowered))  # fills the compile cache
    timings = {}
    for plan, fn in zip(plans, programs, strict=True):
        jax.block_until_ready(fn(copy(state), one, *args))
        best = np.inf
        for _ in range(PROBE_REPEATS):
            start = jax.block_until_ready(copy(state))
            t0 = time.perf_counter()
            jax.block_until_ready(fn(start, few, *args))
            best = min(best, time.perf_counter() - t0)
        timings[plan.name] = best
    choice = int(np.argmin([timings[p.name] for p in plans]))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        choice = int(multihost_utils.broadcast_one_to_all(np.int32(choice)))
    return plans[choice]._replace(timings=timings), programs[choice]


@functools.lru_cache(maxsize=32)
def init_program(init: Callable, optimizer: Callable, mesh: Mesh, with_best: bool) -> Callable:
    """Fresh states from ``(hparams, valid, aux)``.

    Cached on the functions, so a second trainer of the same model compiles nothing new.
    """

    def one(tree):
        hp, valid, aux = tree
        params = init(_keys.init_key(hp["seed"]), hp)
        opt_state = optimizer(hp).init(params)
        return _state.fresh(params, opt_state, hp, aux, valid, with_best)

    return sharded(over_models(one, "vmap", 1, 0), mesh, 0, donate=False)


@functools.lru_cache(maxsize=64)
def evaluate_program(metrics: tuple, mesh, code: int, best: bool, batch_size) -> Callable:
    """Per-model metric values; shared by every trainer (keyed on the metric functions)."""
    plan = Plan.from_code(code)

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
