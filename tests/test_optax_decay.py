"""Decoupled weight decay: the wrapper, its placement guard, AdamW's options."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
import jaxreg.optax as jro

RNG = np.random.default_rng(3)
PARAMS = {
    "dense": {
        "kernel": jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32),
        "bias": jnp.asarray(RNG.normal(size=3), jnp.float32),
    }
}
X = jnp.asarray(RNG.normal(size=(16, 4)), jnp.float32)
Y = jnp.asarray(RNG.normal(size=(16, 3)), jnp.float32)
ALPHA, LAM = 0.01, 0.1
ETA = optax.cosine_decay_schedule(1.0, decay_steps=6)


def loss(p):
    return jnp.mean((X @ p["dense"]["kernel"] + p["dense"]["bias"] - Y) ** 2)


def run(tx, params=PARAMS, steps=6, grad=None):
    grad = jax.grad(loss) if grad is None else grad
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(steps):
        updates, state = update(grad(params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **kw)


@pytest.fixture(scope="module")
def paper_adamw():
    return run(jro.decoupled_adamw(ALPHA, weight_decay=LAM, multiplier=ETA))[0]


def test_wrapper_around_adam_is_the_papers_adamw(paper_adamw):
    tx = jro.with_decoupled_weight_decay(
        optax.adam(lambda t: ALPHA * ETA(t)), weight_decay=LAM, multiplier=ETA
    )
    ours, state = run(tx)
    assert_trees_close(ours, paper_adamw, rtol=1e-6, atol=1e-7)
    assert isinstance(state, jro.WithDecoupledWeightDecayState) and int(state.count) == 6
    # And both are optax.adamw with converted coefficients.
    ref, _ = run(optax.adamw(lambda t: ALPHA * ETA(t), weight_decay=LAM / ALPHA))
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_chain_equals_decoupled_adamw_only_when_adams_rate_is_alpha_times_eta(paper_adamw):
    scaled = optax.chain(
        optax.adam(lambda t: ALPHA * ETA(t)), jro.decoupled_weight_decay(LAM, multiplier=ETA)
    )
    assert_trees_close(run(scaled)[0], paper_adamw, rtol=1e-6, atol=1e-7)
    unscaled = optax.chain(optax.adam(ALPHA), jro.decoupled_weight_decay(LAM, multiplier=ETA))
    assert not np.allclose(run(unscaled)[0]["dense"]["kernel"], paper_adamw["dense"]["kernel"])


def test_wrapper_where_and_extra_args():
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    tx = jro.with_decoupled_weight_decay(
        optax.sgd(0.1), weight_decay=0.5, multiplier=0.2, where=jaxreg.kernels_only
    )
    u, _ = tx.update(zero, tx.init(PARAMS), PARAMS, value=jnp.float32(1.0))  # extra arg ignored
    np.testing.assert_allclose(u["dense"]["kernel"], -0.1 * PARAMS["dense"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(u["dense"]["bias"], 0.0)
    with pytest.raises(
        TypeError, match=r"^jaxreg\.optax\.with_decoupled_weight_decay: optimizer must be an optax"
    ):
        jro.with_decoupled_weight_decay(0.1, weight_decay=0.1)


def test_misplaced_decay_grows_weights_and_the_guard_says_so():
    w = {"w": jnp.ones(3)}
    misplaced = optax.chain(jro.decoupled_weight_decay(0.1), optax.adam(0.01))
    grown, _ = run(misplaced, w, steps=100, grad=lambda p: jax.tree.map(jnp.zeros_like, p))
    assert float(grown["w"][0]) > 1.5  # the bug the guard exists for: decay became growth
    message = r"^jaxreg\.optax\.check_decay_shrinks: one update with zero gradients takes "
    for tx in (
        misplaced,
        optax.chain(jro.decoupled_weight_decay(0.1), optax.sgd(0.1)),
        optax.chain(jro.decoupled_weight_decay(0.1), optax.sgd(0.1, momentum=0.9)),
        optax.chain(jro.decoupled_weight_decay(0.1, where=jaxreg.kernels_only), optax.adam(0.1)),
    ):
        with pytest.raises(ValueError, match=message + r"params leaf 'dense/(bias|kernel)'"):
            jro.check_decay_shrinks(tx, PARAMS)
    for tx in (
        jro.with_decoupled_weight_decay(optax.adam(0.1), weight_decay=0.1),
        jro.decoupled_adamw(0.1, weight_decay=0.1),
        optax.chain(optax.adam(0.1), jro.decoupled_weight_decay(0.1)),
        optax.chain(optax.sgd(0.1, momentum=0.9), jro.decoupled_weight_decay(0.1)),
        optax.adamw(0.1, weight_decay=0.1),
        optax.adam(0.1),
    ):
        assert jro.check_decay_shrinks(tx, PARAMS) is None


def test_guard_is_blind_where_the_decay_is_zero_at_the_probed_step():
    warmup = optax.linear_schedule(0.0, 1.0, transition_steps=5)
    misplaced = optax.chain(jro.decoupled_weight_decay(0.1, multiplier=warmup), optax.adam(0.1))
    jro.check_decay_shrinks(misplaced, PARAMS)  # step 0: no decay, nothing to see
    state = misplaced.init(PARAMS)
    state = (state[0]._replace(count=jnp.int32(3)), state[1])
    with pytest.raises(ValueError, match="grows the weights"):
        jro.check_decay_shrinks(misplaced, PARAMS, state)


def test_decoupled_adamw_mu_dtype_matches_optax_adamw():
    ours, state = run(jro.decoupled_adamw(ALPHA, weight_decay=LAM, mu_dtype=jnp.bfloat16))
    ref, ref_state = run(optax.adamw(ALPHA, weight_decay=LAM / ALPHA, mu_dtype=jnp.bfloat16))
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-7)
    assert state[0].mu["dense"]["kernel"].dtype == jnp.bfloat16
    assert ref_state[0].mu["dense"]["kernel"].dtype == jnp.bfloat16


def test_complex_parameters_decay_like_optax_adamw():
    # Decision: decoupled decay supports complex parameters (w <- w - eta*lambda*w), as
    # optax.adamw does; penalties and prox operators stay real-only (TypeError).
    c = jnp.asarray(RNG.normal(size=(3, 2)) + 1j * RNG.normal(size=(3, 2)), jnp.complex64)
    params = {"c": c}
    target = jnp.asarray(RNG.normal(size=(3, 2)), jnp.complex64)
    grad = jax.grad(lambda p: jnp.sum(jnp.abs(p["c"] - target) ** 2))
    ours, _ = run(jro.decoupled_adamw(ALPHA, weight_decay=LAM), params, steps=3, grad=grad)
    ref, _ = run(optax.adamw(ALPHA, weight_decay=LAM / ALPHA), params, steps=3, grad=grad)
    assert ours["c"].dtype == jnp.complex64
    np.testing.assert_allclose(ours["c"], ref["c"], rtol=1e-5, atol=1e-7)
    tx = jro.decoupled_weight_decay(0.5, multiplier=0.2)
    u, _ = tx.update({"c": jnp.zeros_like(c)}, tx.init(params), params)
    np.testing.assert_allclose(u["c"], -0.1 * c, rtol=1e-6)
    assert jaxreg.kernels_only(params) == {"c": True}
    with pytest.raises(TypeError, match=r"jaxreg\.optax\.add_penalty: params leaf 'c' must be"):
        tx = jro.add_penalty(jaxreg.l2_penalty, strength=0.1)
        tx.update({"c": jnp.zeros_like(c)}, tx.init(params), params)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"b1": 1.5}, ValueError, r"b1 must be a scalar in \[0, 1\), got 1\.5\."),
        ({"b1": -0.1}, ValueError, r"b1 must be a scalar in \[0, 1\)"),
        ({"b2": 1.0}, ValueError, r"b2 must be a scalar in \[0, 1\), got 1\.0\."),
        ({"b2": "0.9"}, TypeError, r"b2 must be a number in \[0, 1\), got '0\.9' \(a str\)"),
        ({"b2": jnp.float32(1.2)}, ValueError, r"b2 must be a scalar in \[0, 1\)"),
        ({"eps": -1e-8}, ValueError, r"eps must be >= 0"),
        ({"eps": float("inf")}, ValueError, r"eps must be finite, got inf"),
        ({"eps_root": -1.0}, ValueError, r"eps_root must be >= 0"),
        ({"mu_dtype": jnp.int32}, TypeError, r"mu_dtype must be None or a floating dtype"),
        ({"mu_dtype": "float"}, None, None),
        ({"weight_decay": float("inf")}, ValueError, r"weight_decay must be finite, got inf"),
        ({"multiplier": jnp.float32(np.inf)}, ValueError, r"multiplier must be finite"),
        ({"learning_rate": float("inf")}, ValueError, r"learning_rate must be finite"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(v),
)
def test_decoupled_adamw_validates_every_hyperparameter(kwargs, exc, match):
    args = {"learning_rate": 0.1, "weight_decay": 0.1, **kwargs}
    lr = args.pop("learning_rate")
    if exc is None:
        jro.decoupled_adamw(lr, **args)
        return
    with pytest.raises(exc, match=r"^jaxreg\.optax\.decoupled_adamw: " + match):
        jro.decoupled_adamw(lr, **args)


def test_infinite_strength_is_rejected_everywhere():
    inf = float("inf")
    for make, name in [
        (lambda: jro.decoupled_weight_decay(inf), "decoupled_weight_decay: weight_decay"),
        (lambda: jro.decoupled_weight_decay(0.1, multiplier=inf), "weight_decay: multiplier"),
        (
            lambda: jro.with_decoupled_weight_decay(optax.sgd(0.1), weight_decay=inf),
            "with_decoupled_weight_decay: weight_decay",
        ),
        (lambda: jro.add_penalty(jaxreg.l2_penalty, strength=inf), "add_penalty: strength"),
        (lambda: jro.proximal_l1(inf, strength=0.1), "proximal_l1: learning_rate"),
        (lambda: jro.proximal_elastic_net(0.1, strength=inf), "proximal_elastic_net: strength"),
    ]:
        with pytest.raises(ValueError, match=name + " must be finite, got inf"):
            make()


def test_wrapper_under_inject_hyperparams():
    tx = optax.inject_hyperparams(jro.with_decoupled_weight_decay)(
        optimizer=optax.adam(ALPHA), weight_decay=LAM, multiplier=0.5
    )
    plain = jro.with_decoupled_weight_decay(optax.adam(ALPHA), weight_decay=LAM, multiplier=0.5)
    assert_trees_close(run(tx, steps=2)[0], run(plain, steps=2)[0], rtol=1e-6, atol=1e-7)
