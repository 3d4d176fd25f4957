"""Learned-regularization layers: linen ConcreteDropout / L0Dense, NNX ConcreteDropout /
L0Linear, and the runnable code blocks of docs/learned.md."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxreg
from jaxreg import linen as jnn
from jaxreg import nnx as jnnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
X = jax.random.normal(jax.random.key(0), (4, 6))
PENALTY = {"num_examples": 100, "length_scale": 0.1}


class LinenNet(nn.Module):
    per_unit: bool = False
    gate: str = "units"

    @nn.compact
    def __call__(self, x, deterministic):
        x = jnn.ConcreteDropout(nn.Dense(5), per_unit=self.per_unit, **PENALTY)(x, deterministic)
        return jnn.L0Dense(3, gate=self.gate, strength=0.01)(nn.relu(x), deterministic)


def linen_step(model, variables, key):
    """One Adam step on the mean output plus the collected penalties."""

    def loss(params):
        y, state = model.apply(
            {"params": params}, X, False, rngs={"dropout": key}, mutable=["losses"]
        )
        return jnp.mean(y) + sum(jax.tree.leaves(state["losses"])), state["losses"]

    (_, losses), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    optimizer = optax.adam(0.1)
    updates, _ = optimizer.update(grads, optimizer.init(variables["params"]))
    return optax.apply_updates(variables["params"], updates), losses, grads


def test_linen_learned_parameters_move_and_penalties_are_collected():
    # A rate per feature and a gate per weight here; NNX's test has the other options.
    per_unit, gate = True, "weights"
    model = LinenNet(per_unit=per_unit, gate=gate)
    variables = model.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, X, False)
    params = variables["params"]
    logit = params["ConcreteDropout_0"]["rate_logit"]
    assert logit.shape == ((6,) if per_unit else ())
    np.testing.assert_allclose(jax.nn.sigmoid(logit), 0.1, rtol=1e-6)  # initial_rate
    assert params["L0Dense_0"]["log_alpha"].shape == ((3,) if gate == "units" else (5, 3))
    new, losses, grads = jax.jit(lambda v, k: linen_step(model, v, k))(
        {"params": params}, jax.random.key(3)
    )
    for leaf in ("rate_logit",):
        assert np.all(np.asarray(grads["ConcreteDropout_0"][leaf]) != 0)
        assert np.all(new["ConcreteDropout_0"][leaf] != params["ConcreteDropout_0"][leaf])
    assert np.any(new["L0Dense_0"]["log_alpha"] != params["L0Dense_0"]["log_alpha"])
    expected = jaxreg.concrete_dropout_penalty(
        params["Dense_0"]["kernel"], rate=jax.nn.sigmoid(logit), **PENALTY
    )
    np.testing.assert_allclose(losses["ConcreteDropout_0"]["concrete_dropout"], expected, 1e-6)
    l0 = jaxreg.l0_penalty(params["L0Dense_0"]["log_alpha"], strength=0.01)
    np.testing.assert_allclose(losses["L0Dense_0"]["l0"], l0, rtol=1e-6)


def test_linen_deterministic_mode_is_the_plain_layer_with_test_time_gates():
    model = LinenNet()
    params = model.init(jax.random.key(4), X, True)["params"]
    # Prune unit 1 and fully open unit 2 of the L0 layer.
    log_alpha = jnp.array([0.0, -5.0, 5.0])
    params = {**params, "L0Dense_0": {**params["L0Dense_0"], "log_alpha": log_alpha}}
    y = model.apply({"params": params}, X, True)  # no rngs needed
    dense = nn.Dense(5).apply({"params": params["Dense_0"]}, X)
    l0 = params["L0Dense_0"]
    plain = nn.relu(dense) @ l0["kernel"] + l0["bias"]
    np.testing.assert_allclose(y, plain * jnp.array([0.5, 0.0, 1.0]), rtol=1e-6)
    np.testing.assert_array_equal(y[:, 1], 0.0)  # exactly zero: prunable
    kept = jnn.L0Dense(3).apply({"params": l0}, method=jnn.L0Dense.num_kept)
    assert int(kept) == 2


def test_linen_per_example_gates_and_errors():
    layer = jnn.L0Dense(3, per_example=True)
    v = layer.init(jax.random.key(5), X, True)
    rows = layer.apply(v, jnp.ones((4, 6)), False, rngs={"dropout": jax.random.key(6)})
    assert len({tuple(r) for r in np.asarray(rows)}) == 4  # one gate draw per example
    with pytest.raises(ValueError, match=r"^jaxreg\.linen\.L0Dense: gate must be one of"):
        jnn.L0Dense(3, gate="rows").init(jax.random.key(7), X, True)
    with pytest.raises(ValueError, match=r"^jaxreg\.linen\.L0Dense: per_example=True needs"):
        jnn.L0Dense(3, gate="weights", per_example=True).init(jax.random.key(7), X, True)
    with pytest.raises(ValueError, match=r"^jaxreg\.linen\.L0Dense: needs a PRNG key"):
        layer.apply(v, X, False)
    with pytest.raises(ValueError, match=r"^jaxreg\.linen\.ConcreteDropout: initial_rate must"):
        jnn.ConcreteDropout(nn.Dense(2), initial_rate=0.0, **PENALTY).init(
            jax.random.key(8), X, True
        )
    with pytest.raises(TypeError, match=r"^jaxreg\.linen\.ConcreteDropout: layer must have a"):
        jnn.ConcreteDropout(nn.LayerNorm(), **PENALTY).init(jax.random.key(8), X, True)
    with pytest.raises(ValueError, match=r"^jaxreg\.linen\.ConcreteDropout: length_scale must"):
        jnn.ConcreteDropout(nn.Dense(2), num_examples=10, length_scale=-1.0).init(
            jax.random.key(8), X, True
        )


class NNXNet(nnx.Module):
    def __init__(self, rngs, gate="units", per_unit=True):
        self.drop = jnnx.ConcreteDropout(
            nnx.Linear(6, 5, rngs=rngs), per_unit=per_unit, rngs=rngs, **PENALTY
        )
        self.l0 = jnnx.L0Linear(5, 3, gate=gate, strength=0.01, rngs=rngs)

    def __call__(self, x):
        return self.l0(nnx.relu(self.drop(x)))


@nnx.jit
def nnx_step(model, optimizer):
    def loss(model):
        return jnp.mean(model(X)) + jnnx.total_penalty(model)

    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)
    return grads


def test_nnx_learned_parameters_move_and_penalty_is_the_sum():
    model = NNXNet(nnx.Rngs(0), "units", per_unit=False)
    np.testing.assert_allclose(model.drop.rate, 0.1, rtol=1e-6)
    total = model.drop.penalty() + model.l0.penalty()
    np.testing.assert_allclose(jnnx.total_penalty(model), total, rtol=1e-6)
    expected = jaxreg.concrete_dropout_penalty(model.drop.layer.kernel[...], rate=0.1, **PENALTY)
    np.testing.assert_allclose(model.drop.penalty(), expected, rtol=1e-5)
    before = (model.drop.rate_logit[...], model.l0.log_alpha[...])
    optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
    grads = nnx_step(model, optimizer)
    assert np.all(np.asarray(grads["drop"]["rate_logit"][...]) != 0)
    assert np.all(model.drop.rate_logit[...] != before[0])
    assert np.any(model.l0.log_alpha[...] != before[1])


def test_nnx_eval_mode_and_exact_zeros_and_errors():
    model = NNXNet(nnx.Rngs(1))
    model.l0.log_alpha[...] = jnp.array([0.0, -5.0, 5.0])
    model.eval()
    y = model(X)
    plain = nnx.relu(model.drop.layer(X)) @ model.l0.kernel[...] + model.l0.bias[...]
    np.testing.assert_allclose(y, plain * jnp.array([0.5, 0.0, 1.0]), rtol=1e-6)
    assert int(model.l0.num_kept()) == 2
    model.train()
    assert not np.allclose(model(X), y)  # noise again
    rngs = nnx.Rngs(2)
    with pytest.raises(TypeError, match=r"^jaxreg\.nnx\.ConcreteDropout: layer must have a"):
        jnnx.ConcreteDropout(nnx.LayerNorm(4, rngs=rngs), **PENALTY)
    with pytest.raises(ValueError, match=r"^jaxreg\.nnx\.ConcreteDropout: num_examples must"):
        jnnx.ConcreteDropout(nnx.Linear(2, 2, rngs=rngs), num_examples=0, length_scale=1.0)
    with pytest.raises(ValueError, match=r"^jaxreg\.nnx\.L0Linear: limits must satisfy"):
        jnnx.L0Linear(2, 2, limits=(0.1, 1.1), rngs=rngs)
    with pytest.raises(ValueError, match=r"^jaxreg\.nnx\.ConcreteDropout: needs a PRNG key"):
        jnnx.ConcreteDropout(nnx.Linear(6, 2, rngs=rngs), **PENALTY)(X)
