"""Generic semantics that every transform factory of jaxreg.optax must hold.

One row of TRANSFORMS per factory. A new factory joins every test below by adding a
row: its numeric hyperparameters (those that accept a number, a scalar array or an
optax schedule) and its other arguments (callables, axes, an inner optimizer), which
``optax.inject_hyperparams`` must treat as static.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxreg
import jaxreg.optax as jro


@dataclasses.dataclass(frozen=True)
class Tx:
    """One transform factory as the generic tests see it.

    Attributes:
      name: test id.
      factory: the public factory, called as ``factory(**numeric, **static, where=...)``.
      numeric: hyperparameters with a number each: every one of them must also accept a
        scalar array and an optax schedule, and be injectable.
      static: the other keyword arguments (static under ``inject_hyperparams``).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    numeric: dict[str, float]
    static: dict[str, Any] = dataclasses.field(default_factory=dict)

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        return self.factory(**{**self.numeric, **self.static, **overrides})

    def injected(self, **overrides: Any) -> optax.GradientTransformation:
        static_args = (*self.static, "where")
        inject = optax.inject_hyperparams(self.factory, static_args=static_args)
        return inject(**{**self.numeric, **self.static, **overrides})

    def __str__(self) -> str:
        return self.name


TRANSFORMS: tuple[Tx, ...] = (
    Tx("add_penalty", jro.add_penalty, {"strength": 0.05}, {"penalty": jaxreg.l2_penalty}),
    Tx("proximal_l1", jro.proximal_l1, {"learning_rate": 0.1, "strength": 0.3}),
    Tx(
        "proximal_elastic_net",
        jro.proximal_elastic_net,
        {"learning_rate": 0.1, "strength": 0.5, "l1_ratio": 0.4},
    ),
    Tx(
        "proximal_group_lasso",
        jro.proximal_group_lasso,
        {"learning_rate": 0.1, "strength": 2.0},
        {"axis": (0,)},
    ),
    Tx(
        "constrain",
        jro.constrain,
        {},
        {"projection": functools.partial(jaxreg.max_norm, max_value=0.8)},
    ),
    Tx(
        "decoupled_weight_decay",
        jro.decoupled_weight_decay,
        {"weight_decay": 0.2, "multiplier": 0.5},
    ),
    Tx(
        "with_decoupled_weight_decay",
        jro.with_decoupled_weight_decay,
        {"weight_decay": 0.1, "multiplier": 0.5},
        {"optimizer": optax.adam(0.01)},
    ),
    Tx(
        "decoupled_adamw",
        jro.decoupled_adamw,
        {"learning_rate": 0.01, "weight_decay": 0.1, "multiplier": 0.5},
    ),
)

params = pytest.mark.parametrize("tx", TRANSFORMS, ids=str)
HYPERPARAMETERS = [(tx, name) for tx in TRANSFORMS for name in tx.numeric]
hyperparams = pytest.mark.parametrize(
    "tx, name", HYPERPARAMETERS, ids=[f"{tx}-{name}" for tx, name in HYPERPARAMETERS]
)

RNG = np.random.default_rng(3)


def _normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


PARAMS = {
    "dense": {"kernel": _normal(4, 3), "bias": _normal(3)},
    "out": {"kernel": _normal(3, 2), "bias": _normal(2)},
}
GRADS = [jax.tree.map(lambda p: _normal(*p.shape), PARAMS) for _ in range(3)]


def run(tx, params=PARAMS, grads=GRADS, update=None, before_step=None):
    """Applies ``tx`` for len(grads) steps; returns every step's updates and the state."""
    update = update or tx.update
    state = tx.init(params)
    history = []
    for g in grads:
        if before_step is not None:
            state = before_step(state)
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
        history.append(updates)
    return history, state


# A float32 hyperparameter rounds products (learning_rate * multiplier) differently
# from a Python float: a few float32 ulps on the updates.
ARRAY_VS_FLOAT = {"rtol": 2e-5, "atol": 1e-7}


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_table_lists_every_factory():
    # check_decay_shrinks is a check on an optimizer, not a transform factory.
    factories = {n for n in jro.__all__ if not n.endswith("State")} - {"check_decay_shrinks"}
    assert factories == {tx.factory.__name__ for tx in TRANSFORMS}


@params
def test_jit_equals_no_jit_and_no_retrace_across_steps(tx):
    traces = []

    def update(*args):
        traces.append(None)
        return tx.make().update(*args)

    eager, eager_state = run(tx.make())
    jitted, jitted_state = run(tx.make(), update=jax.jit(update))
    assert len(traces) == 1
    assert_trees_close(jitted, eager)
    assert_trees_close(jitted_state, eager_state)
    # The transform did something: the updates differ from the gradients.
    assert not all(
        np.allclose(u, g)
        for u, g in zip(jax.tree.leaves(eager), jax.tree.leaves(GRADS), strict=True)
    )


@params
def test_numeric_hyperparameters_accept_scalar_arrays(tx):
    arrays = {k: jnp.float32(v) for k, v in tx.numeric.items()}
    assert_trees_close(run(tx.make(**arrays))[0], run(tx.make())[0], **ARRAY_VS_FLOAT)


@params
def test_inject_hyperparams_equals_plain_and_new_values_need_no_retrace(tx):
    injected = tx.injected()
    assert_trees_close(run(injected)[0], run(tx.make())[0], **ARRAY_VS_FLOAT)
    traces = []

    @jax.jit
    def update(g, state, p):
        traces.append(None)
        return injected.update(g, state, p)

    state = injected.init(PARAMS)
    for scale in (1.0, 0.5, 2.0):
        for name, value in tx.numeric.items():
            state.hyperparams[name] = jnp.asarray(scale * value, jnp.float32)
        got, state = update(GRADS[0], state, PARAMS)
        fresh = tx.make(**{k: scale * v for k, v in tx.numeric.items()})
        # The inner state has made as many steps (schedules, Adam's moments, which do
        # not depend on these hyperparameters): replay them with the new values.
        assert_trees_close(
            got, _last_of_steps_on_fixed_params(fresh, int(state.count)), **ARRAY_VS_FLOAT
        )
    assert len(traces) == 1


def _last_of_steps_on_fixed_params(tx, steps):
    """The updates of the last of ``steps`` updates with GRADS[0] at PARAMS."""
    state = tx.init(PARAMS)
    for _ in range(steps):
        updates, state = tx.update(GRADS[0], state, PARAMS)
    return updates


def _schedule(value):
    # A different value at each of the steps run here, starting at ``value``.
    return optax.linear_schedule(value, 3 * value, transition_steps=4)


@hyperparams
def test_schedule_equals_injecting_its_value_at_each_step(tx, name):
    schedule = _schedule(tx.numeric[name])
    scheduled, _ = run(tx.make(**{name: schedule}))
    injected = tx.injected()

    def set_value(state):
        state.hyperparams[name] = jnp.asarray(schedule(state.count), jnp.float32)
        return state

    expected, _ = run(injected, before_step=set_value)
    assert_trees_close(scheduled, expected, **ARRAY_VS_FLOAT)
    # Negative control: the constant value gives other updates after the first step.
    constant, _ = run(tx.make())
    assert_trees_close(scheduled[0], constant[0], **ARRAY_VS_FLOAT)
    assert not np.allclose(
        jax.tree.leaves(scheduled[-1])[0] - jax.tree.leaves(constant[-1])[0], 0.0
    )


def _on_subtree(tx, selected):
    """``tx`` run on the selected top-level entries of PARAMS alone."""
    sub = {k: PARAMS[k] for k in selected}
    return run(tx.make(), params=sub, grads=[{k: g[k] for k in selected} for g in GRADS])[0]


@params
def test_inside_optax_masked(tx):
    mask = {"dense": {"kernel": True, "bias": True}, "out": {"kernel": False, "bias": False}}
    got, _ = run(optax.masked(tx.make(), mask))
    expected = _on_subtree(tx, ["dense"])
    for step, g in enumerate(GRADS):
        assert_trees_close(got[step]["dense"], expected[step]["dense"])
        jax.tree.map(np.testing.assert_array_equal, got[step]["out"], g["out"])


@params
def test_inside_optax_partition(tx):
    labels = {
        "dense": {"kernel": "plain", "bias": "plain"},
        "out": {"kernel": "reg", "bias": "reg"},
    }
    got, _ = run(optax.partition({"reg": tx.make(), "plain": optax.set_to_zero()}, labels))
    expected = _on_subtree(tx, ["out"])
    for step in range(len(GRADS)):
        assert_trees_close(got[step]["out"], expected[step]["out"])
        jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), got[step]["dense"])


def _containers():
    """The same two layers as a dict, a FrozenDict, an nnx.State and an equinox module."""
    mlp = eqx.nn.MLP(4, 2, width_size=3, depth=1, key=jax.random.key(0))
    mlp = eqx.tree_at(
        lambda m: (m.layers[0].weight, m.layers[0].bias, m.layers[1].weight, m.layers[1].bias),
        mlp,
        (
            PARAMS["dense"]["kernel"].T,
            PARAMS["dense"]["bias"],
            PARAMS["out"]["kernel"].T,
            PARAMS["out"]["bias"],
        ),
    )

    class Model(nnx.Module):
        def __init__(self):
            self.dense = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
            self.out = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

    model = Model()
    for layer in ("dense", "out"):
        getattr(model, layer).kernel.value = PARAMS[layer]["kernel"]
        getattr(model, layer).bias.value = PARAMS[layer]["bias"]
    return {
        "dict": PARAMS,
        "FrozenDict": flax.core.FrozenDict(PARAMS),
        "nnx.State": nnx.state(model, nnx.Param),
        "equinox": eqx.filter(mlp, eqx.is_inexact_array),
    }


CONTAINERS = _containers()


@params
@pytest.mark.parametrize("container", list(CONTAINERS))
def test_bool_pytree_where_selects_leaf_by_leaf(tx, container):
    p = CONTAINERS[container]
    where = jaxreg.kernels_only(p)
    assert sum(jax.tree.leaves(where)) == 2  # the two kernels, not the biases
    nothing = jax.tree.map(lambda _: False, where)
    grads = [jax.tree.map(lambda x, s=s: x * (1.0 + s), p) for s in (0.5, -0.3, 2.0)]
    selected, _ = run(tx.make(where=where), params=p, grads=grads)
    everything, _ = run(tx.make(where=None), params=p, grads=grads)
    none, _ = run(tx.make(where=nothing), params=p, grads=grads)
    assert jax.tree.structure(selected[0]) == jax.tree.structure(p)
    flags = jax.tree.leaves(where)
    for step in range(len(grads)):
        for flag, s, e, n in zip(
            flags,
            jax.tree.leaves(selected[step]),
            jax.tree.leaves(everything[step]),
            jax.tree.leaves(none[step]),
            strict=True,
        ):
            np.testing.assert_allclose(s, e if flag else n, rtol=1e-6, atol=1e-7)
    # The selection matters: some selected leaf differs from the unselected update.
    assert any(
        not np.allclose(e, n)
        for flag, e, n in zip(
            flags, jax.tree.leaves(everything[-1]), jax.tree.leaves(none[-1]), strict=True
        )
        if flag
    )


STRENGTHS = [
    (tx, name) for tx in TRANSFORMS for name in ("strength", "weight_decay") if name in tx.numeric
]


@pytest.mark.parametrize("tx, name", STRENGTHS, ids=[f"{tx}-{n}" for tx, n in STRENGTHS])
def test_per_layer_strength_tree_equals_where_on_that_layer(tx, name):
    # One strength per layer (a prefix of the params): 0 for "out" is "out" unselected.
    value = tx.numeric[name]
    per_layer, _ = run(tx.make(**{name: {"dense": value, "out": 0.0}}))
    dense_only = jax.tree.map(lambda _: False, PARAMS) | {"dense": {"kernel": True, "bias": True}}
    selected, _ = run(tx.make(where=dense_only))
    for a, b in zip(per_layer, selected, strict=True):
        assert_trees_close(a, b, rtol=1e-6, atol=1e-6)
    # Negative control: the same strength on both layers differs on "out".
    both, _ = run(tx.make())
    assert not np.allclose(both[-1]["out"]["kernel"], per_layer[-1]["out"]["kernel"])
    # A tree that is not a prefix of the params fails in update, naming the argument.
    wrong = tx.make(**{name: {"dense": value}})
    with pytest.raises(ValueError, match=rf"jaxreg\.optax\.\w+: {name} must be .* prefix"):
        wrong.update(GRADS[0], wrong.init(PARAMS), PARAMS)
