import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
import jaxreg.optax as jro

RNG = np.random.default_rng(1)
W = jnp.asarray(RNG.normal(size=(5, 4)) * 2, jnp.float32)


def test_max_norm_rescales_only_units_over_the_bound():
    c = 2.5
    out = jaxreg.max_norm(W, max_value=c)  # axis=0: one norm per column (unit)
    before = np.linalg.norm(np.asarray(W), axis=0)
    after = np.linalg.norm(np.asarray(out), axis=0)
    assert np.all(after <= c * (1 + 1e-6))
    over = before > c
    assert over.any() and (~over).any()
    np.testing.assert_allclose(after[over], c, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[:, ~over], np.asarray(W)[:, ~over])
    rows = jaxreg.max_norm(W, max_value=1.0, axis=1)
    assert np.all(np.linalg.norm(np.asarray(rows), axis=1) <= 1 + 1e-6)


def test_max_norm_conv_kernel_per_filter():
    k = jnp.asarray(RNG.normal(size=(3, 3, 2, 4)), jnp.float32)
    out = jaxreg.max_norm(k, max_value=1.0, axis=(0, 1, 2))
    norms = np.linalg.norm(np.asarray(out).reshape(-1, 4), axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)  # every filter had norm > 1


def test_unit_norm_and_non_negative():
    w = W.at[:, 1].set(0.0)
    out = np.asarray(jaxreg.unit_norm(w))
    norms = np.linalg.norm(out, axis=0)
    np.testing.assert_allclose(norms[[0, 2, 3]], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # a zero unit stays zero, no NaN
    nn = jaxreg.non_negative({"w": W, "b": -jnp.ones(2)}, where={"w": True, "b": False})
    np.testing.assert_array_equal(nn["w"], np.maximum(np.asarray(W), 0))
    np.testing.assert_array_equal(nn["b"], -1.0)


def test_vmap_over_max_value():
    cs = jnp.array([0.5, 1.0, 100.0])
    out = jax.vmap(lambda c: jaxreg.max_norm(W, max_value=c))(cs)
    np.testing.assert_array_equal(out[2], W)
    np.testing.assert_allclose(out[0], jaxreg.max_norm(W, max_value=0.5), rtol=1e-6)


def test_constraint_errors():
    with pytest.raises(ValueError, match=r"^jaxreg\.max_norm: max_value must be >= 0, got -1\.$"):
        jaxreg.max_norm(W, max_value=-1)
    with pytest.raises(ValueError, match=r"jaxreg\.unit_norm: axis holds axis 3, out of range"):
        jaxreg.unit_norm(W, axis=3)
    with pytest.raises(TypeError, match=r"jaxreg\.non_negative: params leaf 'i' must be"):
        jaxreg.non_negative({"i": jnp.arange(2)})


def _regression_problem():
    x = jnp.asarray(RNG.normal(size=(64, 5)), jnp.float32)
    true_w = jnp.asarray(RNG.normal(size=(5, 3)) * 4, jnp.float32)
    y = x @ true_w
    params = {"kernel": jnp.zeros((5, 3)), "bias": jnp.zeros(3)}

    def loss(p):
        return jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2)

    return params, loss


@pytest.mark.parametrize("optimizer", [optax.sgd(0.05, momentum=0.9), optax.adam(0.3)])
def test_constraints_hold_after_every_training_step(optimizer):
    params, loss = _regression_problem()
    c = 1.5
    tx = optax.chain(
        optimizer,
        jro.constrain(functools.partial(jaxreg.max_norm, max_value=c), where=jaxreg.kernels_only),
        jro.constrain(jaxreg.non_negative, where={"kernel": False, "bias": True}),
    )
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    reached = False
    for _ in range(25):
        params, state = step(params, state)
        norms = jnp.linalg.norm(params["kernel"], axis=0)
        assert bool(jnp.all(norms <= c * (1 + 1e-6)))
        assert bool(jnp.all(params["bias"] >= 0))
        reached |= bool(jnp.any(norms > c * (1 - 1e-3)))
    assert reached  # the constraint was active, not vacuous
