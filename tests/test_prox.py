import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg

RNG = np.random.default_rng(0)
V = jnp.asarray(RNG.normal(size=(6, 5)), jnp.float32)


def test_prox_l1_is_soft_thresholding_with_exact_zeros():
    t = 0.7
    got = np.asarray(jaxreg.prox_l1(V, strength=t))
    v = np.asarray(V)
    expected = np.sign(v) * np.maximum(np.abs(v) - t, 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert int(np.sum(got == 0.0)) == int(np.sum(np.abs(v) <= t)) > 0
    np.testing.assert_array_equal(jaxreg.prox_l1(V, strength=0.0), V)


def test_prox_l1_example_values():
    got = jaxreg.prox_l1(jnp.array([0.5, -2.0, 1.5, -1.0]), strength=1.0)
    np.testing.assert_array_equal(got, [0.0, -1.0, 0.5, 0.0])


def _argmin_on_grid(objective, v, half_width=4.0, n=400001):
    xs = np.linspace(v - half_width, v + half_width, n)
    return xs[np.argmin(objective(xs))]


@pytest.mark.parametrize("v", [-2.3, -0.4, 0.0, 0.25, 1.7])
def test_scalar_prox_is_the_argmin(v):
    a, b = 0.5, 0.75
    l1 = _argmin_on_grid(lambda x: a * np.abs(x) + 0.5 * (x - v) ** 2, v)
    assert float(jaxreg.prox_l1(jnp.float32(v), strength=a)) == pytest.approx(l1, abs=1e-4)
    en = _argmin_on_grid(lambda x: a * np.abs(x) + b * x**2 + 0.5 * (x - v) ** 2, v)
    got = jaxreg.prox_elastic_net(jnp.float32(v), strength=a + b, l1_ratio=a / (a + b))
    assert float(got) == pytest.approx(en, abs=1e-4)


def test_prox_elastic_net_formula():
    got = jaxreg.prox_elastic_net(V, strength=0.8, l1_ratio=0.375)  # l1 0.3, l2 0.5
    expected = jaxreg.prox_l1(V, strength=0.3) / 2.0  # 1 + 2 * 0.5
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_prox_group_lasso_is_the_argmin_and_zeroes_groups():
    t = 1.2
    got = np.asarray(jaxreg.prox_group_lasso(V, strength=t, axis=1))
    norms = np.linalg.norm(np.asarray(V), axis=1, keepdims=True)
    expected = np.asarray(V) * np.maximum(0.0, 1 - t / norms)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert int(np.sum(np.all(got == 0.0, axis=1))) == int(np.sum(norms <= t))

    # Optimality: no random perturbation improves the prox objective.
    v = np.array([[0.9, -0.4], [2.0, 1.0]])
    x = np.asarray(jaxreg.prox_group_lasso(jnp.asarray(v), strength=t, axis=1), np.float64)

    def objective(z):
        return t * np.linalg.norm(z, axis=-1).sum(-1) + 0.5 * ((z - v) ** 2).sum((-1, -2))

    assert np.all(x[0] == 0.0) and not np.all(x[1] == 0.0)
    trials = x + RNG.normal(scale=0.05, size=(2000, 2, 2))
    assert objective(x) <= objective(trials).min() + 1e-6


def test_prox_where_passes_unselected_leaves_through():
    params = {"w": V, "b": jnp.array([0.1, -0.1])}
    where = {"w": True, "b": False}
    for out in (
        jaxreg.prox_l1(params, strength=0.5, where=where),
        jaxreg.prox_elastic_net(params, strength=0.6, where=where),
        jaxreg.prox_group_lasso(params, strength=0.5, where=where),
    ):
        assert out["b"] is params["b"]
        assert not np.array_equal(out["w"], V)


def test_prox_keeps_dtype():
    x = V.astype(jnp.bfloat16)
    for out in (
        jaxreg.prox_l1(x, strength=0.5),
        jaxreg.prox_elastic_net(x, strength=0.6),
        jaxreg.prox_group_lasso(x, strength=0.5),
    ):
        assert out.dtype == jnp.bfloat16 and out.shape == x.shape


def test_prox_computes_in_float32_for_bfloat16():
    # Every prox computes in float32 and rounds once to bf16 at the end; the threshold
    # itself is not rounded to bf16 first (0.3 would become 0.30078125).
    x = V.astype(jnp.bfloat16)
    x32 = x.astype(jnp.float32)
    for prox in (
        lambda p: jaxreg.prox_l1(p, strength=0.3),
        lambda p: jaxreg.prox_elastic_net(p, strength=0.45, l1_ratio=2 / 3),
        lambda p: jaxreg.prox_group_lasso(p, strength=0.3),
    ):
        out = prox(x)
        assert out.dtype == jnp.bfloat16
        np.testing.assert_array_equal(out, prox(x32).astype(jnp.bfloat16))


def test_vmap_and_jit_over_strengths():
    ts = jnp.array([0.0, 0.5, 1.5])
    got = jax.vmap(lambda t: jaxreg.prox_l1(V, strength=t))(ts)
    for i, t in enumerate([0.0, 0.5, 1.5]):
        np.testing.assert_allclose(got[i], jaxreg.prox_l1(V, strength=t), rtol=1e-6)
    got = jax.vmap(lambda t: jaxreg.prox_group_lasso(V, strength=t))(ts)
    np.testing.assert_allclose(got[2], jaxreg.prox_group_lasso(V, strength=1.5), rtol=1e-6)
    got = jax.vmap(lambda t: jaxreg.prox_elastic_net(V, strength=t))(ts)
    np.testing.assert_allclose(got[1], jaxreg.prox_elastic_net(V, strength=0.5), rtol=1e-6)
    jitted = jax.jit(lambda t: jaxreg.prox_l1(V, strength=t))
    assert bool(jnp.all(jnp.isnan(jitted(-1.0))))  # traced negative strength: NaN
    by_step = jax.jit(lambda e: jaxreg.prox_l1(V, strength=0.5, step_size=e))
    np.testing.assert_allclose(by_step(2.0), jaxreg.prox_l1(V, strength=1.0), rtol=1e-6)
    assert bool(jnp.all(jnp.isnan(by_step(-1.0))))  # traced negative step size: NaN
    ratio = jax.jit(lambda r: jaxreg.prox_elastic_net(V, l1_ratio=r))
    assert bool(jnp.all(jnp.isnan(ratio(1.5))))  # traced l1_ratio outside [0, 1]: NaN


@pytest.mark.parametrize(
    "prox, kw",
    [
        (jaxreg.prox_l1, {}),
        (jaxreg.prox_elastic_net, {"l1_ratio": 0.3}),
        (jaxreg.prox_group_lasso, {"axis": 1}),
    ],
)
def test_prox_of_step_size_times_penalty(prox, kw):
    # prox_X(strength=s, step_size=eta) is the prox of eta * X_penalty(strength=s), which
    # is X_penalty(strength=eta * s): the two spellings agree.
    np.testing.assert_allclose(
        prox(V, strength=0.4, step_size=2.5, **kw), prox(V, strength=1.0, **kw), rtol=1e-6
    )
    np.testing.assert_array_equal(prox(V, step_size=0.0, **kw), V)  # no step: no change


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^jaxreg\.prox_l1: strength must be >= 0, got -1\.0\.$"):
        jaxreg.prox_l1(V, strength=-1.0)
    with pytest.raises(ValueError, match=r"^jaxreg\.prox_l1: step_size must be >= 0, got -1\.0"):
        jaxreg.prox_l1(V, step_size=-1.0)
    with pytest.raises(ValueError, match=r"jaxreg\.prox_elastic_net: l1_ratio must be in \[0, 1\]"):
        jaxreg.prox_elastic_net(V, l1_ratio=-0.1)
    with pytest.raises(ValueError, match=r"jaxreg\.prox_group_lasso: strength must be finite"):
        jaxreg.prox_group_lasso(V, strength=float("inf"))
    with pytest.raises(ValueError, match=r"jaxreg\.prox_group_lasso: axis holds axis 2, out of"):
        jaxreg.prox_group_lasso(V, strength=1.0, axis=2)
    with pytest.raises(TypeError, match=r"jaxreg\.prox_l1: params leaf 'n' must be a float"):
        jaxreg.prox_l1({"n": jnp.arange(3)}, strength=1.0)
    with pytest.raises(ValueError, match=r"jaxreg\.prox_l1: where must have the same pytree"):
        jaxreg.prox_l1({"a": V, "b": V}, strength=1.0, where={"a": True})


@pytest.mark.parametrize(
    "name, call",
    [
        ("group_lasso_penalty", lambda p: jaxreg.group_lasso_penalty(p, axis=2)),
        ("prox_group_lasso", lambda p: jaxreg.prox_group_lasso(p, strength=1.0, axis=2)),
        ("max_norm", lambda p: jaxreg.max_norm(p, max_value=1.0, axis=2)),
        ("unit_norm", lambda p: jaxreg.unit_norm(p, axis=2)),
    ],
)
def test_group_norm_users_share_one_axis_check(name, call):
    # One helper (jaxreg._trees.group_norms) checks axes for all four functions.
    message = rf"^jaxreg\.{name}: axis holds axis 2, out of range .* Params leaf: 'dense/w'\.$"
    with pytest.raises(ValueError, match=message):
        call({"dense": {"w": V}})
