import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import FrozenDict

import jaxreg
from jaxreg._filters import resolve_where


def plain_params():
    return {
        "dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
        "norm": {"scale": jnp.ones(2), "offset": jnp.zeros(2)},
        "embed": {"table": jnp.ones((5, 3))},
        "conv": {"kernel": jnp.ones((3, 3, 2, 4))},
        "step": jnp.zeros((2, 2), jnp.int32),
    }


def test_kernels_only_plain_dict():
    got = jaxreg.kernels_only(plain_params())
    assert got == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False, "offset": False},
        "embed": {"table": False},
        "conv": {"kernel": True},
        "step": False,
    }
    assert jaxreg.kernels_only(plain_params(), include_embeddings=True)["embed"]["table"] is True


def test_kernels_only_frozendict_keeps_container():
    params = FrozenDict(plain_params())
    got = jaxreg.kernels_only(params)
    assert isinstance(got, FrozenDict)
    assert jax.tree.structure(got) == jax.tree.structure(params)
    assert got["dense"]["kernel"] is True and got["dense"]["bias"] is False
    # A mask built for a plain dict is the wrong structure for a FrozenDict.
    with pytest.raises(ValueError, match=r"containers differ"):
        jaxreg.l2_penalty(params, where=jaxreg.kernels_only(plain_params()))


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(10, 4)(tokens)
        x = nn.Conv(4, (3,))(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(3)(x)


def test_filters_on_linen_params():
    variables = LinenNet().init(jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
    params = variables["params"]
    got = jaxreg.kernels_only(params)
    assert got == {
        "Embed_0": {"embedding": False},
        "Conv_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False, "bias": False},
        "Dense_0": {"kernel": True, "bias": False},
    }
    with_embed = jaxreg.kernels_only(params, include_embeddings=True)
    assert with_embed["Embed_0"]["embedding"] is True
    by = jaxreg.by_path(params, r"^(Conv|Dense)_0/bias$")
    assert by["Conv_0"]["bias"] and by["Dense_0"]["bias"] and not by["LayerNorm_0"]["bias"]
    expected = sum(float(jnp.sum(params[m]["kernel"] ** 2)) for m in ("Conv_0", "Dense_0"))
    np.testing.assert_allclose(jaxreg.l2_penalty(params, where=jaxreg.kernels_only), expected, 1e-6)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.emb = nnx.Embed(10, 4, rngs=rngs)
        self.conv = nnx.Conv(4, 4, (3,), rngs=rngs)
        self.dense = nnx.Linear(4, 3, rngs=rngs)
        self.ln = nnx.LayerNorm(3, rngs=rngs)


def test_filters_on_nnx_state():
    state = nnx.state(NnxNet(nnx.Rngs(0)), nnx.Param)
    got = jaxreg.kernels_only(state)
    assert jax.tree.structure(got) == jax.tree.structure(state)
    flags = {"/".join(str(k.key) for k in p[:2]): v for p, v in jax.tree.leaves_with_path(got)}
    assert flags == {
        "conv/bias": False,
        "conv/kernel": True,
        "dense/bias": False,
        "dense/kernel": True,
        "emb/embedding": False,
        "ln/bias": False,
        "ln/scale": False,
    }
    # Paths drop nnx's trailing ".value": "dense/kernel", as in linen.
    by = jaxreg.by_path(state, r"^dense/kernel$")
    assert sum(jax.tree.leaves(by)) == 1
    kernel = state["dense"]["kernel"][...]
    np.testing.assert_allclose(
        jaxreg.l1_penalty(state, where=by), jnp.sum(jnp.abs(kernel)), rtol=1e-6
    )
    projected = jaxreg.max_norm(state, max_value=0.1, where=jaxreg.kernels_only)
    assert isinstance(projected, nnx.State)
    norms = jnp.linalg.norm(projected["dense"]["kernel"][...], axis=0)
    assert jnp.all(norms <= 0.1 * (1 + 1e-6))


def test_filters_on_equinox_modules():
    mlp = eqx.nn.MLP(2, 3, 4, 1, key=jax.random.key(0))
    got = jaxreg.kernels_only(mlp)
    assert jax.tree.structure(got) == jax.tree.structure(mlp)
    assert got.layers[0].weight is True and got.layers[1].weight is True
    assert got.layers[0].bias is False
    assert got.activation is False  # a function leaf, never selected
    by = jaxreg.by_path(mlp, r"^layers/1/weight$")
    assert by.layers[1].weight is True and by.layers[0].weight is False
    # where=None selects every array leaf and skips the activation functions.
    expected = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(eqx.filter(mlp, eqx.is_array)))
    np.testing.assert_allclose(jaxreg.l2_penalty(mlp), expected, rtol=1e-6)
    projected = jaxreg.max_norm(mlp, max_value=0.1, axis=1, where=jaxreg.kernels_only)
    assert projected.activation is mlp.activation
    assert jnp.all(jnp.linalg.norm(projected.layers[0].weight, axis=1) <= 0.1 * (1 + 1e-6))
    assert projected.layers[0].bias is mlp.layers[0].bias


def test_equinox_none_leaves_and_explicit_true_on_function():
    linear = eqx.nn.Linear(3, 2, use_bias=False, key=jax.random.key(1))
    assert linear.bias is None
    assert jaxreg.kernels_only(linear).weight is True
    np.testing.assert_allclose(jaxreg.l2_penalty(linear), jnp.sum(linear.weight**2), rtol=1e-6)
    mlp = eqx.nn.MLP(2, 3, 4, 1, key=jax.random.key(0))
    everything = jax.tree.map(lambda _: True, mlp)
    with pytest.raises(TypeError, match=r"jaxreg.l2_penalty: params leaf 'activation'"):
        jaxreg.l2_penalty(mlp, where=everything)


def test_resolve_where_callable_and_pytree_agree():
    params = plain_params()
    mask = jaxreg.kernels_only(params)
    assert resolve_where("f", params, jaxreg.kernels_only) == mask
    assert resolve_where("f", params, mask) == mask


def test_resolve_where_is_not_public():
    # Its first argument is an internal error label: it stays in jaxreg._filters.
    assert "resolve_where" not in jaxreg.__all__
    assert not hasattr(jaxreg, "resolve_where")


def test_where_none_rejects_integer_params():
    with pytest.raises(TypeError, match=r"jaxreg.l1_penalty: params leaf 'step' .*dtype int32"):
        jaxreg.l1_penalty(plain_params())


def test_where_prefix_is_an_error_not_a_guess():
    params = {"a": {"w": jnp.ones(2), "b": jnp.ones(2)}, "c": jnp.ones(2)}
    with pytest.raises(
        ValueError,
        match=r"^jaxreg\.l2_penalty: where must have the same pytree structure as params .*"
        r"got PyTreeDef\(\{'a': \*, 'c': \*\}\) for params PyTreeDef\(\{'a': \{",
    ):
        jaxreg.l2_penalty(params, where={"a": True, "c": False})
    with pytest.raises(ValueError, match=r"params leaf \['a'\]\['b'\] has no entry in where"):
        jaxreg.l2_penalty(params, where={"a": {"w": True}, "c": False})
    with pytest.raises(ValueError, match=r"where has \['d'\], which params lacks"):
        jaxreg.prox_l1(
            params, strength=1.0, where={"a": {"w": True, "b": True}, "c": False, "d": True}
        )


def test_where_leaves_must_be_bools():
    params = {"w": jnp.ones(2)}
    message = r"where must hold one bool per parameter leaf, got 1 \(an int\)"
    with pytest.raises(TypeError, match=message):
        jaxreg.l2_penalty(params, where={"w": 1})
    with pytest.raises(TypeError, match=r"got an array of dtype bool and shape \(2,\)"):
        jaxreg.l2_penalty(params, where={"w": jnp.ones(2, bool)})
    assert float(jaxreg.l2_penalty(params, where={"w": np.bool_(False)})) == 0.0


def test_by_path_rejects_non_regex():
    message = r"jaxreg.by_path: pattern must be a regex string, got 3 \(an int\)"
    with pytest.raises(TypeError, match=message):
        jaxreg.by_path({"w": jnp.ones(2)}, 3)


def test_by_path_never_selects_integer_leaves():
    got = jaxreg.by_path(plain_params(), ".*")
    assert got["step"] is False and got["dense"]["bias"] is True


def test_callable_where_on_a_bare_array():
    # A function and a bare array are both pytree leaves: where must still be called.
    w = jnp.asarray([[3.0, 0.0], [4.0, 1.0]])
    np.testing.assert_allclose(
        jaxreg.l2_penalty(w, where=jaxreg.kernels_only), jnp.sum(w**2), rtol=1e-6
    )
    np.testing.assert_array_equal(
        jaxreg.prox_l1(w, strength=1.0, where=lambda p: True), jaxreg.prox_l1(w, strength=1.0)
    )
    np.testing.assert_array_equal(
        jaxreg.max_norm(w, max_value=1.0, where=lambda p: True), jaxreg.max_norm(w, max_value=1.0)
    )
    np.testing.assert_allclose(
        jaxreg.orthogonal_penalty(w, where=jaxreg.kernels_only), jaxreg.orthogonal_penalty(w)
    )
    assert float(jaxreg.l2_penalty(w, where=lambda p: False)) == 0.0
    np.testing.assert_array_equal(jaxreg.prox_l1(w, strength=1.0, where=lambda p: False), w)


@pytest.mark.parametrize("where", ["kernel", __import__("re").compile("kernel")])
def test_a_string_is_not_a_selection(where):
    with pytest.raises(
        TypeError,
        match=r"^jaxreg\.l2_penalty: where must be a bool pytree or a callable, got .*: a "
        r"string is not a selection\. Use where=jaxreg\.by_path\(params, 'kernel'\)",
    ):
        jaxreg.l2_penalty(plain_params()["dense"], where=where)
    with pytest.raises(TypeError, match=r"a string is not a selection"):
        jaxreg.prox_l1(plain_params()["dense"], strength=1.0, where=lambda p: "kernel")


@pytest.mark.parametrize("flag", [True, False, np.bool_(True)])
def test_a_lone_bool_is_not_all_or_none(flag):
    # Decision: rejected, not read as all/none. None already means every leaf; "none"
    # is leaving the regularizer out; and optax.inject_hyperparams turns a callable
    # where (not in static_args) into exactly such a lone bool, which must not pass
    # silently as "decay nothing".
    params = plain_params()["dense"]
    with pytest.raises(
        TypeError,
        match=r"^jaxreg\.l2_penalty: where must have one bool per parameter leaf, got "
        r"(True|False) for a params pytree with 2 leaves\. A lone bool is not",
    ):
        jaxreg.l2_penalty(params, where=flag)
    with pytest.raises(TypeError, match=r"jaxreg\.max_norm: .*A lone bool"):
        jaxreg.max_norm(params, max_value=1.0, where=lambda p: bool(flag))
    # For a single array, one bool *is* the pytree of one bool per leaf.
    w = jnp.full((2, 2), 2.0)
    assert float(jaxreg.l2_penalty(w, where=bool(flag))) == (16.0 if flag else 0.0)


def test_by_path_invalid_regex_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"^jaxreg\.by_path: pattern is not a valid regular expression: '\('"
    ):
        jaxreg.by_path(plain_params(), "(")
    with pytest.raises(TypeError, match=r"pattern must be a regex string, got 3 \(an int\)"):
        jaxreg.by_path(plain_params(), 3)


def test_complex_kernels_are_selected_and_penalties_refuse_them():
    # kernels_only/by_path select complex kernels, so a real-only penalty raises instead
    # of silently skipping them (decoupled weight decay accepts them: test_optax_decay).
    params = {"w": jnp.ones((2, 2), jnp.complex64), "b": jnp.ones(2, jnp.complex64)}
    assert jaxreg.kernels_only(params) == {"w": True, "b": False}
    assert jaxreg.by_path(params, "w") == {"w": True, "b": False}
    with pytest.raises(TypeError, match=r"jaxreg\.l2_penalty: params leaf 'w' must be a floating"):
        jaxreg.l2_penalty(params, where=jaxreg.kernels_only)


def test_integer_scalar_params_hint_at_inject_hyperparams():
    with pytest.raises(TypeError, match=r"jaxreg\.l1_penalty: params leaf '' .*static_args"):
        jaxreg.l1_penalty(jnp.zeros((), jnp.int32))
    with pytest.raises(TypeError, match=r"dtype int32\. Exclude it .*float dtype\.$"):
        jaxreg.l1_penalty(jnp.zeros((2,), jnp.int32))
