import functools
import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
import jaxreg.optax as jro

RNG = np.random.default_rng(2)
PARAMS = {
    "dense": {
        "kernel": jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32),
        "bias": jnp.asarray(RNG.normal(size=3), jnp.float32),
    }
}
X = jnp.asarray(RNG.normal(size=(16, 4)), jnp.float32)
Y = jnp.asarray(RNG.normal(size=(16, 3)), jnp.float32)


def loss(p):
    return jnp.mean((X @ p["dense"]["kernel"] + p["dense"]["bias"] - Y) ** 2)


def run(tx, params=PARAMS, steps=5, loss_fn=loss):
    state = tx.init(params)
    update = jax.jit(tx.update)
    history = []
    for _ in range(steps):
        updates, state = update(jax.grad(loss_fn)(params), state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history, state


def assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **kw)


def test_import_jaxreg_does_not_import_optax():
    code = "import sys, jaxreg; assert 'optax' not in sys.modules, 'optax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("where", [None, jaxreg.kernels_only])
def test_coupled_l2_equals_add_decayed_weights_with_twice_the_strength(where):
    s, lr = 0.05, 0.1
    ours, _ = run(
        optax.chain(jro.add_penalty(jaxreg.l2_penalty, strength=s, where=where), optax.sgd(lr))
    )
    mask = None if where is None else where(PARAMS)
    ref, _ = run(optax.chain(optax.add_decayed_weights(2 * s, mask=mask), optax.sgd(lr)))
    for a, b in zip(ours, ref, strict=True):
        assert_trees_close(a, b, rtol=1e-6, atol=1e-7)
    if where is not None:  # the bias is not decayed (first step: same gradient)
        plain, _ = run(optax.sgd(lr), steps=1)
        np.testing.assert_array_equal(ours[0]["dense"]["bias"], plain[0]["dense"]["bias"])
        assert not np.allclose(ours[0]["dense"]["kernel"], plain[0]["dense"]["kernel"])


@pytest.mark.parametrize(
    "penalty",
    [
        functools.partial(jaxreg.l1_penalty, strength=0.1),
        functools.partial(jaxreg.group_lasso_penalty, strength=0.2, axis=0),
        functools.partial(jaxreg.elastic_net_penalty, strength=0.4, l1_ratio=0.25),
        functools.partial(jaxreg.orthogonal_penalty, strength=0.1, where=jaxreg.kernels_only),
    ],
)
def test_add_penalty_equals_penalty_in_the_loss(penalty):
    lr = 0.05
    if "where" in penalty.keywords:  # orthogonal: selection through add_penalty's where
        penalty = functools.partial(jaxreg.orthogonal_penalty, strength=0.1)
        where = jaxreg.kernels_only
    else:
        where = None
    ours, _ = run(optax.chain(jro.add_penalty(penalty, where=where), optax.sgd(lr)))
    ref, _ = run(optax.sgd(lr), loss_fn=lambda p: loss(p) + penalty(p, where=where))
    for a, b in zip(ours, ref, strict=True):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-6)


def test_proximal_l1_is_ista_with_exact_zeros():
    # Orthogonal design: 0.5 ||w - y||^2 + s |w|_1 is solved by one ISTA step with lr=1.
    y = jnp.asarray(RNG.normal(size=(50,)), jnp.float32)
    s = 0.6
    tx = optax.chain(optax.sgd(1.0), jro.proximal_l1(1.0, strength=s))
    (w,), _ = run(
        tx,
        jnp.asarray(RNG.normal(size=(50,)), jnp.float32),
        1,
        lambda w: 0.5 * jnp.sum((w - y) ** 2),
    )
    np.testing.assert_allclose(w, jaxreg.prox_l1(y, strength=s), atol=1e-6)
    assert int(jnp.sum(w == 0.0)) == int(jnp.sum(jnp.abs(y) <= s)) > 0


def test_proximal_steps_follow_the_learning_rate_schedule():
    schedule = optax.linear_schedule(0.2, 0.05, transition_steps=4)
    s = 0.3
    history, state = run(
        optax.chain(
            optax.sgd(schedule), jro.proximal_l1(schedule, strength=s, where=jaxreg.kernels_only)
        ),
        steps=4,
    )
    assert isinstance(state[1], jro.ScheduleState) and int(state[1].count) == 4
    params = PARAMS
    for t in range(4):
        g = jax.grad(loss)(params)
        lr = schedule(t)
        moved = jax.tree.map(lambda p, gi, lr=lr: p - lr * gi, params, g)
        expected = jaxreg.prox_l1(moved, strength=s, step_size=lr, where=jaxreg.kernels_only)
        assert_trees_close(history[t], expected, rtol=1e-5, atol=1e-6)
        params = history[t]
    assert int(jnp.sum(history[-1]["dense"]["kernel"] == 0.0)) > 0


def test_proximal_elastic_net_and_group_lasso_steps():
    lr = 0.5
    for tx, prox in [
        (
            jro.proximal_elastic_net(lr, strength=0.6, l1_ratio=2 / 3),
            lambda p: jaxreg.prox_elastic_net(p, strength=0.6, l1_ratio=2 / 3, step_size=lr),
        ),
        (
            jro.proximal_group_lasso(lr, strength=1.5, axis=0, where=jaxreg.kernels_only),
            lambda p: jaxreg.prox_group_lasso(
                p, strength=1.5, step_size=lr, axis=0, where=jaxreg.kernels_only
            ),
        ),
    ]:
        (p1,), _ = run(optax.chain(optax.sgd(lr), tx), steps=1)
        g = jax.grad(loss)(PARAMS)
        expected = prox(jax.tree.map(lambda p, gi: p - lr * gi, PARAMS, g))
        assert_trees_close(p1, expected, rtol=1e-5, atol=1e-6)
    zero_units = jnp.all(p1["dense"]["kernel"] == 0.0, axis=0)
    assert int(jnp.sum(zero_units)) > 0


def test_unselected_updates_are_kept_bit_for_bit():
    g = jax.tree.map(jnp.ones_like, PARAMS)
    base = optax.sgd(0.1)
    ref, _ = base.update(g, base.init(PARAMS))
    tx = optax.chain(base, jro.proximal_l1(0.1, strength=1.0, where=jaxreg.kernels_only))
    updates, _ = tx.update(g, tx.init(PARAMS), PARAMS)
    np.testing.assert_array_equal(updates["dense"]["bias"], ref["dense"]["bias"])


def test_decoupled_adamw_matches_optax_adamw_with_converted_coefficients():
    alpha, lam = 0.01, 0.1
    eta = optax.cosine_decay_schedule(1.0, decay_steps=6)
    ours, _ = run(jro.decoupled_adamw(alpha, weight_decay=lam, multiplier=eta), steps=6)
    ref, _ = run(optax.adamw(lambda t: alpha * eta(t), weight_decay=lam / alpha), steps=6)
    for a, b in zip(ours, ref, strict=True):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-7)
    # optax.adamw with the same weight_decay decays alpha times less per step.
    coupled, _ = run(optax.adamw(alpha, weight_decay=lam), steps=1)
    ours1, _ = run(jro.decoupled_adamw(alpha, weight_decay=lam), steps=1)
    assert not np.allclose(coupled[0]["dense"]["kernel"], ours1[0]["dense"]["kernel"])


def test_decoupled_weight_decay_alone_and_with_where():
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    tx = jro.decoupled_weight_decay(
        0.5, multiplier=lambda t: 0.1 * (t + 1), where=jaxreg.kernels_only
    )
    state = tx.init(PARAMS)
    u0, state = tx.update(zero, state, PARAMS)
    u1, state = tx.update(zero, state, PARAMS)
    np.testing.assert_allclose(u0["dense"]["kernel"], -0.05 * PARAMS["dense"]["kernel"], 1e-6)
    np.testing.assert_allclose(u1["dense"]["kernel"], -0.10 * PARAMS["dense"]["kernel"], 1e-6)
    np.testing.assert_array_equal(u1["dense"]["bias"], 0.0)
    assert isinstance(state, jro.ScheduleState) and int(state.count) == 2


def test_inject_hyperparams():
    schedule = optax.exponential_decay(0.3, transition_steps=1, decay_rate=0.5)
    injected = optax.inject_hyperparams(jro.proximal_l1)(learning_rate=0.1, strength=schedule)
    plain = jro.proximal_l1(0.1, strength=schedule)
    a, _ = run(optax.chain(optax.sgd(0.1), injected), steps=3)
    b, _ = run(optax.chain(optax.sgd(0.1), plain), steps=3)
    assert_trees_close(a[-1], b[-1], rtol=1e-6)

    tx = optax.inject_hyperparams(jro.add_penalty, static_args=("penalty", "where"))(
        jaxreg.l2_penalty, strength=0.05, where=jaxreg.kernels_only
    )
    state = tx.init(PARAMS)
    g = jax.tree.map(jnp.zeros_like, PARAMS)
    u, state = tx.update(g, state, PARAMS)
    np.testing.assert_allclose(u["dense"]["kernel"], 0.1 * PARAMS["dense"]["kernel"], 1e-6)
    state.hyperparams["strength"] = jnp.asarray(0.5)
    u, state = jax.jit(tx.update)(g, state, PARAMS)
    np.testing.assert_allclose(u["dense"]["kernel"], 1.0 * PARAMS["dense"]["kernel"], 1e-6)
    np.testing.assert_array_equal(u["dense"]["bias"], 0.0)

    wd = optax.inject_hyperparams(jro.decoupled_weight_decay)(weight_decay=0.2, multiplier=schedule)
    u, _ = wd.update(g, wd.init(PARAMS), PARAMS)
    np.testing.assert_allclose(u["dense"]["kernel"], -0.06 * PARAMS["dense"]["kernel"], 1e-6)
    gl = optax.inject_hyperparams(jro.proximal_group_lasso)(0.1, strength=0.2, axis=(0,))
    u, _ = gl.update(g, gl.init(PARAMS), PARAMS)
    expected = jaxreg.prox_group_lasso(PARAMS, strength=0.2, step_size=0.1, axis=0)
    assert_trees_close(optax.apply_updates(PARAMS, u), expected, rtol=1e-6)


def test_vmap_over_strengths_through_a_transform():
    g = jax.tree.map(jnp.zeros_like, PARAMS)

    def kernel_update(s):
        tx = jro.add_penalty(jaxreg.l2_penalty, strength=s)
        return tx.update(g, tx.init(PARAMS), PARAMS)[0]["dense"]["kernel"]

    strengths = jnp.array([0.0, 0.1, 1.0])
    got = jax.vmap(kernel_update)(strengths)
    for i, s in enumerate([0.0, 0.1, 1.0]):
        np.testing.assert_allclose(got[i], 2 * s * PARAMS["dense"]["kernel"], rtol=1e-6)


def test_bad_inputs():
    with pytest.raises(
        ValueError, match=r"^jaxreg\.optax\.add_penalty: strength must be >= 0, got -1\.0\.$"
    ):
        jro.add_penalty(jaxreg.l2_penalty, strength=-1.0)
    with pytest.raises(ValueError, match=r"jaxreg\.optax\.proximal_l1: learning_rate must be"):
        jro.proximal_l1(-0.1, strength=1.0)
    with pytest.raises(TypeError, match=r"jaxreg\.optax\.add_penalty: penalty must be callable"):
        jro.add_penalty(0.1)
    tx = jro.proximal_l1(0.1, strength=1.0, where={"dense": True})
    with pytest.raises(ValueError, match=r"jaxreg\.optax\.proximal_l1: where must have the same"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    tx = jro.constrain(jaxreg.non_negative)
    with pytest.raises(ValueError, match=r"jaxreg\.optax\.constrain: params must be passed"):
        tx.update(PARAMS, tx.init(PARAMS))


def test_decoupled_adamw_validates_its_own_arguments():
    with pytest.raises(
        ValueError,
        match=r"^jaxreg\.optax\.decoupled_adamw: learning_rate must be >= 0, got -0\.1\.$",
    ):
        jro.decoupled_adamw(-0.1, weight_decay=0.1)
    with pytest.raises(
        ValueError,
        match=r"^jaxreg\.optax\.decoupled_adamw: weight_decay must be >= 0, got -1\.0\.$",
    ):
        jro.decoupled_adamw(0.1, weight_decay=-1.0)
    with pytest.raises(
        ValueError, match=r"^jaxreg\.optax\.decoupled_adamw: multiplier must be >= 0, got -1\.0\.$"
    ):
        jro.decoupled_adamw(0.1, weight_decay=0.1, multiplier=-1.0)
    tx = jro.decoupled_adamw(0.1, weight_decay=0.1, where={"dense": True})
    with pytest.raises(ValueError, match=r"^jaxreg\.optax\.decoupled_adamw: where must have the"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    with pytest.raises(
        ValueError, match=r"^jaxreg\.optax\.decoupled_weight_decay: weight_decay must be >= 0"
    ):
        jro.decoupled_weight_decay(-1.0)


@pytest.mark.parametrize(
    "factory", [jro.proximal_l1, jro.proximal_elastic_net, jro.proximal_group_lasso]
)
def test_proximal_factories_take_learning_rate_positionally_and_the_rest_by_keyword(factory):
    params = list(inspect.signature(factory).parameters.values())
    assert params[0].name == "learning_rate"
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), params


def test_optax_all_is_complete_and_documented():
    # decoupled_weight_decay, with_decoupled_weight_decay, decoupled_adamw and
    # check_decay_shrinks live in jaxreg._optax_decay and are re-exported here.
    for name in jro.__all__:
        obj = getattr(jro, name)
        assert inspect.getdoc(obj), name
    for name in ("decoupled_weight_decay", "decoupled_adamw", "with_decoupled_weight_decay"):
        assert name in jro.__all__


def test_states_one_count_type_and_empty_for_constrain():
    for tx in (
        jro.add_penalty(jaxreg.l2_penalty, strength=0.1),
        jro.proximal_l1(0.1, strength=0.1),
        jro.proximal_elastic_net(0.1, strength=0.1),
        jro.proximal_group_lasso(0.1, strength=0.1),
        jro.decoupled_weight_decay(0.1),
    ):
        assert type(tx.init(PARAMS)) is jro.ScheduleState
    tx = jro.constrain(jaxreg.non_negative)
    state = tx.init(PARAMS)
    assert isinstance(state, optax.EmptyState)
    assert isinstance(tx.update(PARAMS, state, PARAMS)[1], optax.EmptyState)


NEGATIVE_AT_3 = optax.linear_schedule(0.1, -0.05, transition_steps=3)  # 0.1, 0.05, 0, -0.05


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda s: jro.add_penalty(jaxreg.l2_penalty, strength=s), "add_penalty: strength"),
        (lambda s: jro.proximal_l1(0.1, strength=s), "proximal_l1: strength"),
        (lambda s: jro.proximal_l1(s, strength=0.1), "proximal_l1: learning_rate"),
        (lambda s: jro.proximal_elastic_net(0.1, strength=s), "proximal_elastic_net: strength"),
        (lambda s: jro.proximal_group_lasso(0.1, strength=s), "proximal_group_lasso: strength"),
        (lambda s: jro.decoupled_weight_decay(s), "decoupled_weight_decay: weight_decay"),
        (lambda s: jro.decoupled_weight_decay(0.1, multiplier=s), "weight_decay: multiplier"),
        (
            lambda s: jro.with_decoupled_weight_decay(optax.sgd(0.1), weight_decay=s),
            "with_decoupled_weight_decay: weight_decay",
        ),
        (lambda s: jro.decoupled_adamw(0.1, weight_decay=s), "decoupled_adamw: weight_decay"),
        (lambda s: jro.decoupled_adamw(s, weight_decay=0.1), "decoupled_adamw: learning_rate"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_negative_schedule_is_an_error_eagerly_and_nan_under_jit(make, name):
    tx = make(NEGATIVE_AT_3)
    g = jax.tree.map(jnp.ones_like, PARAMS)
    state = tx.init(PARAMS)
    for _ in range(3):  # steps 0, 1, 2 are valid (eager: values checked)
        u, state = tx.update(g, state, PARAMS)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(u))
    with pytest.raises(
        ValueError,
        match=rf"^jaxreg\.optax\.\w*{name} \(from the schedule at step 3\) must be >= 0, "
        r"got -0\.05",
    ):
        tx.update(g, state, PARAMS)
    u, _ = jax.jit(tx.update)(g, state, PARAMS)  # traced: the updates are poisoned
    assert bool(jnp.all(jnp.isnan(u["dense"]["kernel"])))


def test_traced_invalid_constant_poisons_selected_updates_only():
    g = jax.tree.map(jnp.ones_like, PARAMS)

    def kernel_and_bias(s):
        tx = jro.add_penalty(jaxreg.l2_penalty, strength=s, where=jaxreg.kernels_only)
        u = tx.update(g, tx.init(PARAMS), PARAMS)[0]["dense"]
        return u["kernel"], u["bias"]

    kernel, bias = jax.vmap(kernel_and_bias)(jnp.array([0.1, -0.1, jnp.inf, jnp.nan]))
    assert bool(jnp.all(jnp.isfinite(kernel[0])))
    assert bool(jnp.all(jnp.isnan(kernel[1:])))
    np.testing.assert_array_equal(bias, 1.0)  # unselected: kept bit for bit


def test_injected_negative_value_names_the_transform():
    tx = optax.inject_hyperparams(jro.proximal_l1)(learning_rate=0.1, strength=0.3)
    state = tx.init(PARAMS)
    state.hyperparams["strength"] = jnp.asarray(-0.5)
    with pytest.raises(ValueError, match=r"^jaxreg\.optax\.proximal_l1: strength must be >= 0"):
        tx.update(PARAMS, state, PARAMS)
    u, _ = jax.jit(tx.update)(PARAMS, state, PARAMS)
    assert bool(jnp.all(jnp.isnan(u["dense"]["kernel"])))


@pytest.mark.parametrize(
    "factory, args, kwargs, match",
    [
        (
            jro.add_penalty,
            (jaxreg.l2_penalty,),
            {"strength": 0.1},
            r"jaxreg\.l2_penalty: params leaf ''",
        ),
        (
            jro.add_penalty,
            (jaxreg.l2_penalty,),
            {"strength": 0.1, "where": jaxreg.kernels_only},
            r"jaxreg\.l2_penalty: params leaf ''",
        ),
        (jro.constrain, (jaxreg.non_negative,), {}, r"jaxreg\.non_negative: params leaf ''"),
        (
            jro.proximal_group_lasso,
            (0.1,),
            {"strength": 0.1, "axis": 0},
            r"jaxreg\.optax\.proximal_group_lasso: axis must be an int or a tuple",
        ),
    ],
)
def test_inject_hyperparams_without_static_args_says_so(factory, args, kwargs, match):
    with pytest.raises(TypeError, match=match + r".*static_args"):
        optax.inject_hyperparams(factory)(*args, **kwargs).init(PARAMS)


def test_inject_hyperparams_callable_where_needs_static_args():
    tx = optax.inject_hyperparams(jro.add_penalty, static_args="penalty")(
        jaxreg.l2_penalty, strength=0.1, where=jaxreg.kernels_only
    )
    with pytest.raises(TypeError, match=r"add_penalty: where must be None.*got False.*static_args"):
        tx.init(PARAMS)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (
            lambda: jro.constrain(jaxreg.max_norm),
            TypeError,
            r"constrain: projection jaxreg\.max_norm needs max_value, which constrain does not "
            r"pass\. Bind it first: functools\.partial\(jaxreg\.max_norm, max_value=\.\.\.\)",
        ),
        (
            lambda: jro.add_penalty(jaxreg.max_norm),
            TypeError,
            r"add_penalty: penalty jaxreg\.max_norm needs max_value",
        ),
        (
            lambda: jro.add_penalty(lambda p, *, where: jaxreg.l2_penalty(p), strength=1.0),
            TypeError,
            r"add_penalty: penalty must accept the keyword 'strength'",
        ),
        (
            lambda: jro.constrain(lambda p: p),
            TypeError,
            r"constrain: projection must accept the keyword 'where'",
        ),
        (
            lambda: jro.add_penalty(jaxreg.l2_penalty, where="kernel"),
            TypeError,
            r"\w+: where must be a bool pytree or a callable, got 'kernel': a string is not a "
            r"selection\. Use where=jaxreg\.by_path\(params, 'kernel'\)",
        ),
        (
            lambda: jro.proximal_l1(0.1, strength=0.1, where=True),
            TypeError,
            r"\w+: where must be None, a callable or a pytree of bools, got True\. A lone bool",
        ),
        (
            lambda: jro.decoupled_weight_decay(0.1, where={"dense": {"kernel": 1, "bias": 0}}),
            TypeError,
            r"\w+: where must hold one bool per parameter leaf, got 0 \(an int\) at 'dense/bias'",
        ),
        (
            lambda: jro.add_penalty(jaxreg.l2_penalty, strength="0.1"),
            TypeError,
            r"\w+: strength must be a number, a scalar array or a schedule, got '0\.1' \(a str\)",
        ),
    ],
)
def test_construction_catches_what_does_not_need_params(make, exc, match):
    with pytest.raises(exc, match=r"^jaxreg\.optax\." + match):
        make()


def test_partial_and_kwargs_penalties_still_pass_the_signature_check():
    jro.constrain(functools.partial(jaxreg.max_norm, max_value=3.0))
    jro.add_penalty(functools.partial(jaxreg.elastic_net_penalty, l1_ratio=0.3))
    jro.add_penalty(lambda params, **kw: jaxreg.l2_penalty(params, **kw), strength=0.1)
    jro.constrain(max)  # a builtin without a signature: nothing to check, no error


def test_inner_errors_are_raised_under_the_transforms_name():
    for tx, inner in [
        (jro.proximal_group_lasso(0.1, strength=0.1, axis=3), "prox_group_lasso"),
        (jro.add_penalty(jaxreg.orthogonal_penalty, strength=0.1), "orthogonal_penalty"),
        (jro.constrain(functools.partial(jaxreg.max_norm, max_value=1.0, axis=5)), "max_norm"),
    ]:
        with pytest.raises(
            ValueError, match=rf"^jaxreg\.optax\.\w+: .* \(raised by jaxreg\.{inner}\)$"
        ):
            tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def test_decoupled_adamw_signature_is_optax_adamws_with_where_for_mask():
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    ours = inspect.signature(jro.decoupled_adamw).parameters
    theirs = inspect.signature(optax.adamw).parameters
    names = [n for n, p in theirs.items() if p.kind is positional]
    assert [n for n, p in ours.items() if p.kind is positional] == [
        "where" if n == "mask" else n for n in names
    ]
    for n in names:
        assert ours["where" if n == "mask" else n].default == theirs[n].default, n
    assert ours["multiplier"].kind is inspect.Parameter.KEYWORD_ONLY
    by_position, _ = run(jro.decoupled_adamw(0.01, 0.8, 0.99, 1e-7, 0.0, None, 0.1), steps=2)
    by_name, _ = run(
        jro.decoupled_adamw(0.01, b1=0.8, b2=0.99, eps=1e-7, weight_decay=0.1), steps=2
    )
    for a, b in zip(by_position, by_name, strict=True):
        assert_trees_close(a, b, rtol=0, atol=0)
