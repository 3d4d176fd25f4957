import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from ops import SCALARS

W = jnp.array([[1.0, -2.0, 0.0], [3.0, 0.5, -1.0]])
B = jnp.array([0.5, -0.5, 2.0])
PARAMS = {"dense": {"kernel": W, "bias": B}}
KERNEL = {"dense": {"kernel": True, "bias": False}}


def test_l1_and_l2_closed_forms():
    # sum|W| = 7.5, sum|B| = 3; sum W^2 = 15.25, sum B^2 = 4.5
    assert float(jaxreg.l1_penalty(PARAMS)) == pytest.approx(10.5)
    assert float(jaxreg.l1_penalty(PARAMS, strength=0.1, where=KERNEL)) == pytest.approx(0.75)
    assert float(jaxreg.l2_penalty(PARAMS)) == pytest.approx(19.75)
    assert float(jaxreg.l2_penalty(PARAMS, strength=0.5, where=KERNEL)) == pytest.approx(7.625)
    # Keras's L1L2(l1=0.1, l2=0.5) is strength=l1 + l2, l1_ratio=l1 / (l1 + l2).
    got = jaxreg.elastic_net_penalty(PARAMS, strength=0.6, l1_ratio=0.1 / 0.6, where=KERNEL)
    assert float(got) == pytest.approx(0.75 + 7.625)
    assert float(jaxreg.elastic_net_penalty(PARAMS)) == pytest.approx(0.5 * 10.5 + 0.5 * 19.75)
    assert float(jaxreg.elastic_net_penalty(PARAMS, l1_ratio=1.0)) == pytest.approx(10.5)
    assert float(jaxreg.elastic_net_penalty(PARAMS, l1_ratio=0.0)) == pytest.approx(19.75)


def test_penalty_returns_float32_scalar_for_low_precision_params():
    x = {"w": jnp.full((4096,), 1.0, jnp.bfloat16)}
    out = jaxreg.l2_penalty(x)
    assert out.shape == () and out.dtype == jnp.float32
    assert float(out) == 4096.0  # bf16 accumulation would stop growing at 256


def test_unselected_leaves_contribute_zero():
    only_bias = {"dense": {"kernel": False, "bias": True}}
    assert float(jaxreg.l1_penalty(PARAMS, where=only_bias)) == pytest.approx(3.0)
    none = {"dense": {"kernel": False, "bias": False}}
    for fn in (jaxreg.l1_penalty, jaxreg.l2_penalty, jaxreg.group_lasso_penalty):
        assert float(fn(PARAMS, where=none)) == 0.0


def test_group_lasso_closed_form_per_axis():
    w = jnp.array([[3.0, 0.0], [4.0, 1.0]])
    # axis=0: column norms 5 and 1; axis=1: row norms 3 and sqrt(17).
    assert float(jaxreg.group_lasso_penalty(w, axis=0)) == pytest.approx(6.0)
    assert float(jaxreg.group_lasso_penalty(w, strength=2.0, axis=1)) == pytest.approx(
        2 * (3 + np.sqrt(17)), rel=1e-6
    )
    assert float(jaxreg.group_lasso_penalty(w, axis=(0, 1))) == pytest.approx(np.sqrt(26))
    conv = jnp.arange(24.0).reshape(2, 3, 4)
    expected = np.linalg.norm(np.asarray(conv).reshape(6, 4), axis=0).sum()
    got = jaxreg.group_lasso_penalty(conv, axis=(0, 1))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(jaxreg.group_lasso_penalty(conv, axis=(-3, -2))) == pytest.approx(float(got))


def test_orthogonal_penalty_frobenius():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 3)))
    assert float(jaxreg.orthogonal_penalty(jnp.asarray(q, jnp.float32))) == pytest.approx(
        0.0, abs=1e-10
    )
    w = jnp.array([[1.0, 1.0], [0.0, 1.0]])
    # W^T W = [[1, 1], [1, 2]] -> minus I = [[0, 1], [1, 1]] -> squared sum 3
    assert float(jaxreg.orthogonal_penalty(w, strength=2.0)) == pytest.approx(6.0)
    conv = jnp.ones((2, 1, 2))  # flattened to (2, 2) ones: W^T W - I = [[1, 2], [2, 1]]
    assert float(jaxreg.orthogonal_penalty(conv)) == pytest.approx(10.0)


def test_orthogonal_penalty_cosine():
    w = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    # columns e1, (1,1), 2*e2: |cos| = 1/sqrt2, 0, 1/sqrt2 -> mean over 3 pairs
    expected = (2 / np.sqrt(2)) / 3
    assert float(jaxreg.orthogonal_penalty(w, mode="cosine")) == pytest.approx(expected, 1e-6)
    assert float(jaxreg.orthogonal_penalty(jnp.ones((3, 1)), mode="cosine")) == 0.0
    tree = {"a": w, "b": jnp.ones(3)}
    got = jaxreg.orthogonal_penalty(tree, mode="cosine", where=jaxreg.kernels_only)
    assert float(got) == pytest.approx(expected, 1e-6)


def test_orthogonal_penalty_cosine_zero_column_is_orthogonal_with_finite_gradient():
    w = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    assert float(jaxreg.orthogonal_penalty(w, mode="cosine")) == 0.0
    grad = jax.grad(lambda w: jaxreg.orthogonal_penalty(w, mode="cosine"))(w)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # A zero column next to two non-orthogonal ones: only the non-zero pair counts.
    w3 = jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    expected = 2 * (1 / np.sqrt(2)) / 6
    assert float(jaxreg.orthogonal_penalty(w3, mode="cosine")) == pytest.approx(expected, 1e-6)
    grad3 = jax.grad(lambda w: jaxreg.orthogonal_penalty(w, mode="cosine"))(w3)
    assert bool(jnp.all(jnp.isfinite(grad3)))


def test_gradients_match_closed_forms():
    s = 0.3
    g2 = jax.grad(lambda p: jaxreg.l2_penalty(p, strength=s))(PARAMS)
    np.testing.assert_allclose(g2["dense"]["kernel"], 2 * s * W, rtol=1e-6)
    g1 = jax.grad(lambda p: jaxreg.l1_penalty(p, strength=s, where=KERNEL))(PARAMS)
    np.testing.assert_allclose(g1["dense"]["kernel"], s * jnp.sign(W))
    assert float(g1["dense"]["kernel"][0, 2]) == 0.0  # subgradient 0 at an exact zero
    np.testing.assert_array_equal(g1["dense"]["bias"], 0.0)
    w = jnp.array([[3.0, 0.0], [4.0, 0.0]])
    gg = jax.grad(lambda x: jaxreg.group_lasso_penalty(x, strength=s))(w)
    np.testing.assert_allclose(gg, [[s * 0.6, 0.0], [s * 0.8, 0.0]], rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(gg)))  # zero group: gradient 0, not NaN
    go = jax.grad(jaxreg.orthogonal_penalty)(jnp.array([[1.0, 1.0], [0.0, 1.0]]))
    # d/dW ||W^T W - I||^2 = 4 W (W^T W - I)
    m = np.array([[1.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(go, 4 * m @ (m.T @ m - np.eye(2)), rtol=1e-6)


PENALTIES = {
    "l1": lambda p, s: jaxreg.l1_penalty(p, strength=s),
    "l2": lambda p, s: jaxreg.l2_penalty(p, strength=s),
    "elastic_net": lambda p, s: jaxreg.elastic_net_penalty(p, strength=s, l1_ratio=0.3),
    "group_lasso": lambda p, s: jaxreg.group_lasso_penalty(p, strength=s),
    "orthogonal": lambda p, s: jaxreg.orthogonal_penalty(p["dense"]["kernel"], strength=s),
}


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_vmap_and_jit_over_strengths(name):
    fn = PENALTIES[name]
    strengths = jnp.array([0.0, 0.5, 2.0])
    got = jax.vmap(lambda s: fn(PARAMS, s))(strengths)
    expected = [float(fn(PARAMS, float(s))) for s in strengths]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(got[0]) == 0.0
    np.testing.assert_allclose(jax.jit(fn)(PARAMS, 0.5), expected[1], rtol=1e-6)
    assert bool(jnp.isnan(jax.jit(fn)(PARAMS, -1.0)))  # traced negative strength: NaN


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: jaxreg.l1_penalty(PARAMS, strength=-1.0),
            r"^jaxreg\.l1_penalty: strength must be >= 0, got -1\.0\.$",
        ),
        (
            lambda: jaxreg.l2_penalty(PARAMS, strength=jnp.array(-0.5)),
            r"^jaxreg\.l2_penalty: strength must be >= 0, got -0\.5\.$",
        ),
        (
            lambda: jaxreg.elastic_net_penalty(PARAMS, l1_ratio=1.5),
            r"^jaxreg\.elastic_net_penalty: l1_ratio must be in \[0, 1\], got 1\.5\.$",
        ),
        (
            lambda: jaxreg.group_lasso_penalty(PARAMS, strength=float("nan")),
            r"jaxreg\.group_lasso_penalty: strength must be >= 0, got nan",
        ),
        (
            lambda: jaxreg.l2_penalty(PARAMS, strength=jnp.ones(2)),
            r"jaxreg\.l2_penalty: strength must be a scalar, got shape \(2,\)\. .*jax\.vmap",
        ),
        (
            lambda: jaxreg.group_lasso_penalty(PARAMS, axis=1),
            r"jaxreg\.group_lasso_penalty: axis holds axis 1, out of range for an input of "
            r"rank 1 .*Params leaf: 'dense/bias'",
        ),
        (
            lambda: jaxreg.orthogonal_penalty(PARAMS),
            r"jaxreg\.orthogonal_penalty: every selected leaf must have rank >= 2, got shape "
            r"\(3,\) at 'dense/bias'\. .*kernels_only",
        ),
        (
            lambda: jaxreg.orthogonal_penalty(W, mode="rows"),
            r"jaxreg\.orthogonal_penalty: mode must be one of 'frobenius', 'cosine', got 'rows'",
        ),
    ],
)
def test_bad_values_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match=r"jaxreg\.l2_penalty: params leaf 'w' must be a float"):
        jaxreg.l2_penalty({"w": jnp.arange(3)})
    with pytest.raises(TypeError, match=r"jaxreg\.l1_penalty: strength must be a number"):
        jaxreg.l1_penalty(PARAMS, strength="0.1")
    with pytest.raises(TypeError, match=r"params leaf 'w' must be a floating-point array"):
        jaxreg.l2_penalty({"w": jnp.arange(3)}, where={"w": True})


def test_penalty_in_a_loss_under_jit():
    def loss(p, s):
        return jnp.sum(p["dense"]["kernel"]) + jaxreg.l2_penalty(
            p, strength=s, where=functools.partial(jaxreg.by_path, pattern="kernel$")
        )

    g = jax.jit(jax.grad(loss))(PARAMS, 0.25)
    np.testing.assert_allclose(g["dense"]["kernel"], 1 + 0.5 * W, rtol=1e-6)
    np.testing.assert_array_equal(g["dense"]["bias"], 0.0)


# Per-layer strengths, checked against Keras's per-layer regularizers computed by hand
# from Keras's documented formulas: L1(l1) = l1 * sum|w|, L2(l2) = l2 * sum(w**2),
# L1L2(l1, l2) = l1 * sum|w| + l2 * sum(w**2) (no factor 1/2).
RNG = np.random.default_rng(15)
TWO_LAYERS = {
    "dense1": {
        "kernel": jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32),
        "bias": jnp.asarray(RNG.normal(size=3), jnp.float32),
    },
    "dense2": {
        "kernel": jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32),
        "bias": jnp.asarray(RNG.normal(size=2), jnp.float32),
    },
}


def _keras(params):
    """Dense1(kernel_regularizer=L2(0.01), bias_regularizer=L1(0.02)) and
    Dense2(kernel_regularizer=L1L2(l1=0.001, l2=0.003)): each layer's loss by hand."""
    k1, b1 = (np.asarray(params["dense1"][n], np.float64) for n in ("kernel", "bias"))
    k2 = np.asarray(params["dense2"]["kernel"], np.float64)
    return {
        "dense1": 0.01 * np.sum(k1**2) + 0.02 * np.sum(np.abs(b1)),
        "dense2": 0.001 * np.sum(np.abs(k2)) + 0.003 * np.sum(k2**2),
    }


def test_per_layer_strengths_equal_kerass_per_layer_regularizers():
    keras = _keras(TWO_LAYERS)
    l1 = {"dense1": {"kernel": 0.0, "bias": 0.02}, "dense2": {"kernel": 0.001, "bias": 0.0}}
    l2 = {"dense1": {"kernel": 0.01, "bias": 0.0}, "dense2": {"kernel": 0.003, "bias": 0.0}}
    total = jaxreg.l1_penalty(TWO_LAYERS, strength=l1) + jaxreg.l2_penalty(TWO_LAYERS, strength=l2)
    assert float(total) == pytest.approx(keras["dense1"] + keras["dense2"], rel=1e-6)
    # Layer by layer: a strength tree that is a prefix of params (one value per layer).
    only = {"dense1": {"kernel": False, "bias": False}, "dense2": {"kernel": True, "bias": False}}
    dense2 = jaxreg.elastic_net_penalty(
        TWO_LAYERS, strength={"dense1": 0.0, "dense2": 0.004}, l1_ratio=0.25, where=only
    )
    assert float(dense2) == pytest.approx(keras["dense2"], rel=1e-6)
    # Built with a filter: 0.01 on kernels, 0 elsewhere.
    kernels = jax.tree.map(lambda k: 0.01 if k else 0.0, jaxreg.kernels_only(TWO_LAYERS))
    expected = 0.01 * sum(float(jnp.sum(TWO_LAYERS[n]["kernel"] ** 2)) for n in TWO_LAYERS)
    assert float(jaxreg.l2_penalty(TWO_LAYERS, strength=kernels)) == pytest.approx(expected)
    # Negative control: one shared strength is not the per-layer sum.
    shared = jaxreg.l2_penalty(TWO_LAYERS, strength=0.01)
    assert float(shared) != pytest.approx(expected, rel=1e-3)


def test_per_layer_strength_tree_works_for_every_penalty_and_prox():
    # A tree {"dense1": s, "dense2": 0} equals strength s with where on dense1.
    where = {"dense1": {"kernel": True, "bias": True}, "dense2": {"kernel": False, "bias": False}}
    tree = {"dense1": 0.3, "dense2": 0.0}
    kernel = {"dense1": {"kernel": True, "bias": False}, "dense2": {"kernel": True, "bias": False}}
    for fn, kw in [
        (jaxreg.l1_penalty, {}),
        (jaxreg.l2_penalty, {}),
        (jaxreg.elastic_net_penalty, {"l1_ratio": 0.4}),
        (jaxreg.group_lasso_penalty, {"axis": 0}),
        (jaxreg.orthogonal_penalty, {}),
    ]:
        sel = {k: {n: v and kernel[k][n] for n, v in w.items()} for k, w in where.items()}
        if fn is not jaxreg.orthogonal_penalty:
            sel = where
        all_on = kernel if fn is jaxreg.orthogonal_penalty else None
        got = fn(TWO_LAYERS, strength=tree, where=all_on, **kw)
        assert float(got) == pytest.approx(float(fn(TWO_LAYERS, strength=0.3, where=sel, **kw)))
    for prox, kw in [
        (jaxreg.prox_l1, {}),
        (jaxreg.prox_elastic_net, {"l1_ratio": 0.4}),
        (jaxreg.prox_group_lasso, {}),
    ]:
        got = prox(TWO_LAYERS, strength=tree, step_size=2.0, **kw)
        expected = prox(TWO_LAYERS, strength=0.3, step_size=2.0, where=where, **kw)
        jax.tree.map(np.testing.assert_array_equal, got, expected)
        assert not np.allclose(got["dense1"]["kernel"], TWO_LAYERS["dense1"]["kernel"])


_grid = jax.jit(
    jax.vmap(lambda s: jaxreg.l2_penalty(TWO_LAYERS, strength={"dense1": s, "dense2": 0.5}))
)


def test_traced_per_layer_strength_under_vmap_varies_one_layer():
    strengths = jnp.array([0.0, 0.01, 0.1, -1.0])  # a grid over dense1's strength
    got = np.asarray(_grid(strengths))
    sq = {n: sum(float(jnp.sum(v**2)) for v in TWO_LAYERS[n].values()) for n in TWO_LAYERS}
    for i, s in enumerate([0.0, 0.01, 0.1]):
        assert got[i] == pytest.approx(s * sq["dense1"] + 0.5 * sq["dense2"], rel=1e-6)
    assert np.isnan(got[3])  # a traced negative strength poisons the value
    grad = jax.grad(lambda s: jaxreg.l2_penalty(TWO_LAYERS, strength={"dense1": s, "dense2": 0.5}))(
        jnp.float32(-1.0)
    )
    assert np.isnan(grad)


def test_strength_tree_errors():
    with pytest.raises(
        ValueError, match=r"^jaxreg\.l2_penalty: strength\['dense2'\] must be >= 0, got -1\.0\.$"
    ):
        jaxreg.l2_penalty(TWO_LAYERS, strength={"dense1": 0.1, "dense2": -1.0})
    with pytest.raises(ValueError, match=r"jaxreg\.l1_penalty: strength must be .* prefix"):
        jaxreg.l1_penalty(TWO_LAYERS, strength={"dense1": 0.1})
    with pytest.raises(ValueError, match=r"jaxreg\.prox_l1: strength must be .* prefix"):
        jaxreg.prox_l1(TWO_LAYERS, strength={"dense1": 0.1, "dense3": 0.1})
    with pytest.raises(TypeError, match=r"strength\['dense1'\] must be a number"):
        jaxreg.l1_penalty(TWO_LAYERS, strength={"dense1": "0.1", "dense2": 0.1})


@pytest.mark.parametrize("dtype", sorted(SCALARS))
def test_low_and_high_precision_scalar_strengths_are_accepted(dtype):
    # bf16 used to be rejected: NumPy's dtype kind of bfloat16 is "V", not "f".
    s = SCALARS[dtype](0.5)
    expected = float(jaxreg.l2_penalty(PARAMS, strength=float(s)))
    assert float(jaxreg.l2_penalty(PARAMS, strength=s)) == pytest.approx(expected, rel=1e-6)
    assert float(jax.jit(jaxreg.l2_penalty)(PARAMS, strength=s)) == pytest.approx(expected)
    out = jaxreg.prox_l1(PARAMS, strength=s)
    assert out["dense"]["kernel"].dtype == W.dtype
    with pytest.raises(ValueError, match=r"strength must be >= 0, got -0\.5"):
        jaxreg.l2_penalty(PARAMS, strength=SCALARS[dtype](-0.5))
