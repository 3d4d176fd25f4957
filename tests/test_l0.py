"""Hard-concrete gates and the L0 penalty (Louizos, Welling & Kingma 2018).

The generic promises (keys, jit, vmap, dtypes, bad keys) are the conformance table's
(tests/ops.py, row hard_concrete_gate); here: the gate's law against the closed form,
exact zeros at test time, finite gradients at the limits, composition with optax.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
import jaxreg.optax
from stats import SIGMAS

BETA, GAMMA, ZETA = 2 / 3, -0.1, 1.1
LOG_ALPHA = np.linspace(-4.0, 4.0, 1000, dtype=np.float32)
EXAMPLES = 1000  # 1e6 gates in all


def p_nonzero(log_alpha, beta=BETA):
    """P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)), in float64."""
    return 1 / (1 + np.exp(-(np.float64(log_alpha) - beta * math.log(-GAMMA / ZETA))))


def p_one(log_alpha):
    """P(z == 1) = P(s >= (1 - gamma) / (zeta - gamma))."""
    threshold = (1 - GAMMA) / (ZETA - GAMMA)
    return 1 / (1 + np.exp(-(np.float64(log_alpha) - BETA * math.log(threshold / (1 - threshold)))))


def z_score(count, probabilities):
    """Count of independent Bernoulli(p_i) successes against its mean."""
    return (count - probabilities.sum()) / math.sqrt(np.sum(probabilities * (1 - probabilities)))


@jax.jit
def gates(key):
    """One gate per example and unit: (EXAMPLES, 1000) draws for 1000 log_alphas."""
    return jaxreg.hard_concrete_gate(key, jnp.asarray(LOG_ALPHA), shape=(EXAMPLES, 1000))


@pytest.mark.slow
def test_expected_l0_equals_monte_carlo_and_exact_ones_follow_the_law():
    z = np.asarray(gates(jax.random.key(0)))
    assert ((z >= 0) & (z <= 1)).all()
    expected = np.tile(p_nonzero(LOG_ALPHA), EXAMPLES)
    penalty = float(jaxreg.l0_penalty(jnp.asarray(LOG_ALPHA))) * EXAMPLES
    np.testing.assert_allclose(penalty, expected.sum(), rtol=1e-5)  # closed form
    assert abs(z_score((z != 0).sum(), expected)) < SIGMAS
    assert abs(z_score((z == 1).sum(), np.tile(p_one(LOG_ALPHA), EXAMPLES))) < SIGMAS
    # Every log_alpha on its own (1000 draws each): no column far off (6 sigma).
    per_unit = ((z != 0).sum(0) - EXAMPLES * p_nonzero(LOG_ALPHA)) / np.sqrt(
        EXAMPLES * p_nonzero(LOG_ALPHA) * (1 - p_nonzero(LOG_ALPHA))
    )
    assert np.abs(per_unit).max() < 6
    # Negative control: the closed form with beta 0.7 instead of 2/3 is rejected.
    wrong = np.tile(p_nonzero(LOG_ALPHA, beta=0.7), EXAMPLES)
    assert abs(z_score((z != 0).sum(), wrong)) > SIGMAS


def test_per_example_gates_are_independent_rows_and_default_shape_is_log_alphas():
    z = jaxreg.hard_concrete_gate(jax.random.key(1), jnp.zeros(8), shape=(4, 8))
    assert z.shape == (4, 8) and len({tuple(row) for row in np.asarray(z)}) == 4
    assert jaxreg.hard_concrete_gate(jax.random.key(2), jnp.zeros((3, 2))).shape == (3, 2)


def test_test_time_gates_are_exactly_zero_where_pruned_and_one_where_saturated():
    threshold = math.log(-GAMMA / ZETA)  # about -2.398: sigmoid * 1.2 - 0.1 = 0
    one = math.log((1 - GAMMA) / -GAMMA)  # sigmoid(a) * 1.2 - 0.1 = 1 at a = log 11
    la = jnp.array([-jnp.inf, -50.0, threshold - 1e-3, threshold + 1e-2, 0.0, one + 1e-2, 50.0])
    z = np.asarray(jaxreg.hard_concrete_gate_inference(la))
    np.testing.assert_array_equal(z[:3], 0.0)  # exact zeros: prunable
    assert 0 < z[3] < z[4] < 1
    np.testing.assert_array_equal(z[5:], 1.0)
    np.testing.assert_allclose(z[4], 0.5, rtol=1e-6)  # sigmoid(0) * 1.2 - 0.1
    bf16 = jaxreg.hard_concrete_gate_inference(la.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.bfloat16 and (np.asarray(bf16, np.float32)[:3] == 0).all()


EXTREMES = jnp.array([-jnp.inf, -1e30, -60.0, -2.0, 0.0, 2.0, 60.0, 1e30, jnp.inf])


@jax.jit
def gradients(key):
    def gate_sum(la):
        return jnp.sum(jaxreg.hard_concrete_gate(key, la))

    return (
        jax.grad(gate_sum)(EXTREMES),
        jax.grad(lambda la: jnp.sum(jaxreg.hard_concrete_gate_inference(la)))(EXTREMES),
        jax.grad(jaxreg.l0_penalty)(EXTREMES),
    )


def test_gradients_are_finite_at_the_limits_and_zero_where_saturated():
    sampled, inference, penalty = map(np.asarray, gradients(jax.random.key(3)))
    for g in (sampled, inference, penalty):
        assert np.isfinite(g).all(), g
        np.testing.assert_array_equal(g[[0, 1, 7, 8]], 0.0)
    assert (penalty[2:7] >= 0).all() and penalty[4] > 0  # more gates open, more L0


def test_sampled_gate_gradient_is_the_reparameterization_derivative():
    key = jax.random.key(4)
    la = jnp.linspace(-3, 3, 64)
    z, vjp = jax.vjp(lambda a: jaxreg.hard_concrete_gate(key, a), la)
    (g,) = vjp(jnp.ones_like(z))
    inside = (z > 0) & (z < 1)
    s = (z + 0.1) / 1.2  # the unclipped Concrete sample where inside
    expected = np.where(inside, 1.2 * s * (1 - s) / BETA, 0.0)
    np.testing.assert_allclose(g, expected, rtol=2e-4, atol=1e-6)
    assert inside.sum() > 20


def test_l0_penalty_sums_selected_leaves_and_composes_with_add_penalty():
    params = {"dense": {"kernel": jnp.ones((2, 3)), "log_alpha": jnp.array([-1.0, 0.0, 1.0])}}
    only = lambda p: jaxreg.by_path(p, "log_alpha")  # noqa: E731
    penalty = jaxreg.l0_penalty(params, where=only, strength=0.5)
    np.testing.assert_allclose(penalty, 0.5 * p_nonzero(np.array([-1.0, 0.0, 1.0])).sum(), 1e-6)
    optimizer = optax.chain(
        jaxreg.optax.add_penalty(jaxreg.l0_penalty, strength=0.1, where=only), optax.sgd(1.0)
    )
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    la = np.array([-1.0, 0.0, 1.0])
    q = p_nonzero(la)
    np.testing.assert_allclose(updates["dense"]["log_alpha"], -0.1 * q * (1 - q), rtol=1e-5)
    np.testing.assert_array_equal(updates["dense"]["kernel"], 0.0)


def test_l0_penalty_traced_strength_and_beta():
    f = jax.jit(lambda s, b: jaxreg.l0_penalty(jnp.zeros(4), strength=s, beta=b))
    np.testing.assert_allclose(f(2.0, BETA), 2 * 4 * p_nonzero(0.0), rtol=1e-6)
    assert np.isnan(f(-1.0, BETA)) and np.isnan(f(1.0, 0.0))


@pytest.mark.parametrize(
    "fn, kwargs, exc, match",
    [
        ("hard_concrete_gate", {"limits": (0.0, 1.1)}, ValueError, "limits must satisfy gamma"),
        ("hard_concrete_gate", {"limits": (-0.1, 1.0)}, ValueError, "limits must satisfy"),
        ("hard_concrete_gate", {"limits": -0.1}, TypeError, "limits must be a pair"),
        ("hard_concrete_gate", {"beta": 0.0}, ValueError, "beta must be > 0"),
        ("hard_concrete_gate", {"shape": (3, 5)}, ValueError, r"log_alpha of shape \(4,\)"),
        ("hard_concrete_gate_inference", {"limits": (-0.1,)}, TypeError, "limits must be"),
        ("l0_penalty", {"strength": -1.0}, ValueError, "strength must be >= 0"),
        ("l0_penalty", {"beta": "2/3"}, TypeError, "beta must be a number > 0"),
    ],
)
def test_bad_arguments_name_the_function_and_argument(fn, kwargs, exc, match):
    la = jnp.zeros(4)
    args = (jax.random.key(5), la) if fn == "hard_concrete_gate" else (la,)
    with pytest.raises(exc, match=rf"^jaxreg\.{fn}: {match}"):
        getattr(jaxreg, fn)(*args, **kwargs)
