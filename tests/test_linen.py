"""jaxreg.linen: drop-in flax.linen layers over the core ops."""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from jaxreg import linen as jnn
from stats import assert_binomial


def key(seed=7):
    """A fresh key object (JAX's key-reuse checker is on for the suite)."""
    return jax.random.key(seed)


X = jax.random.normal(jax.random.key(1), (4, 6, 8))


def _flax_key(key):
    """The key flax's make_rng('dropout') gives a top-level layer for rngs={'dropout': key}."""
    return nn.Dropout(0.5).apply({}, rngs={"dropout": key}, method=lambda m: m.make_rng("dropout"))


def _train(layer, x=X):
    return layer.apply({}, x, deterministic=False, rngs={"dropout": key()})


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("broadcast_dims", [(), (0,), (1,)])
def test_dropout_equals_flax_and_core(dtype, broadcast_dims):
    x = X.astype(dtype)
    ours = _train(jnn.Dropout(0.3, broadcast_dims=broadcast_dims), x)
    theirs = _train(nn.Dropout(0.3, broadcast_dims=broadcast_dims), x)
    assert ours.dtype == dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(theirs, np.float32))
    core = jaxreg.dropout(_flax_key(key()), x, rate=0.3, broadcast_dims=broadcast_dims)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(core, np.float32))
    assert 0 < int((ours == 0).sum()) < x.size  # the mask did something


def _model(lib):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            x = nn.Dense(16)(x)
            x = lib.Dropout(0.5)(x, deterministic=not train)
            x = lib.Dropout(0.0)(x, deterministic=not train)  # rate 0: draws nothing
            x = lib.Dropout(0.3, deterministic=True)(x)  # never draws
            x = x + lib.Dropout(1.0)(x, deterministic=not train)  # zeros, draws nothing
            x = lib.Dropout(0.2, broadcast_dims=(0,))(x, deterministic=not train)
            x = nn.Dense(8)(x)
            return lib.Dropout(0.6)(x, deterministic=not train)

    return Model()


def test_whole_model_equals_flax_call_for_call():
    x = jnp.ones((5, 8))
    variables = _model(nn).init(jax.random.key(0), x, train=False)
    ours = jax.jit(_model(jnn).apply, static_argnames="train")
    theirs = jax.jit(_model(nn).apply, static_argnames="train")
    for seed in (1, 2):
        got = ours(variables, x, train=True, rngs={"dropout": key(seed)})
        np.testing.assert_array_equal(
            got, theirs(variables, x, train=True, rngs={"dropout": key(seed)})
        )
    eager = _model(jnn).apply(variables, x, train=True, rngs={"dropout": key(1)})
    np.testing.assert_array_equal(eager, ours(variables, x, train=True, rngs={"dropout": key(1)}))
    np.testing.assert_array_equal(
        ours(variables, x, train=False), theirs(variables, x, train=False)
    )
    # Not vacuous: another key gives another output.
    other = ours(variables, x, train=True, rngs={"dropout": key(3)})
    assert not np.array_equal(other, theirs(variables, x, train=True, rngs={"dropout": key(4)}))


def test_layers_equal_their_core_op_for_the_same_key():
    x4 = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    cases = [
        (jnn.SpatialDropout(0.4), jaxreg.spatial_dropout, {}, x4),
        (jnn.VariationalDropout(0.4, time_axis=1), jaxreg.variational_dropout, {}, X),
        (jnn.GaussianDropout(0.4), jaxreg.gaussian_dropout, {}, X),
        (jnn.AlphaDropout(0.4), jaxreg.alpha_dropout, {}, X),
        (jnn.DropPath(0.4, per_example=True), jaxreg.drop_path, {}, X),
        (jnn.DropBlock(0.4, block_size=3), jaxreg.drop_block, {"block_size": 3}, x4),
        (jnn.Dropout(0.4, sampler="fast"), jaxreg.dropout, {"sampler": "fast"}, X),
    ]
    for layer, op, kwargs, x in cases:
        got = layer.apply({}, x, deterministic=False, rng=key())
        np.testing.assert_array_equal(got, op(key(), x, rate=0.4, **kwargs), err_msg=str(layer))
        assert layer.apply({}, x, deterministic=True) is x


def test_deterministic_is_merged_as_in_flax():
    assert jnn.Dropout(0.5, deterministic=True).apply({}, X) is X
    assert jnn.Dropout(0.5).apply({}, X, deterministic=True) is X
    with pytest.raises(ValueError, match="deterministic"):
        jnn.Dropout(0.5).apply({}, X)  # neither set
    with pytest.raises(ValueError, match="deterministic"):
        jnn.Dropout(0.5, deterministic=True).apply({}, X, deterministic=False)  # both set
    with pytest.raises(TypeError, match=r"jaxreg\.linen\.Dropout: deterministic must be"):
        jnn.Dropout(0.5).apply({}, X, deterministic=jnp.array(True), rng=key())


def test_rate_zero_and_one_and_deterministic_never_touch_the_rng():
    # No rngs at all: flax's make_rng would fail, so nothing was asked for.
    assert jnn.Dropout(0.0).apply({}, X, deterministic=False) is X
    np.testing.assert_array_equal(jnn.Dropout(1.0).apply({}, X, deterministic=False), 0 * X)
    assert jnn.DropPath(0.0).apply({}, X, deterministic=False) is X


def test_vmap_over_rates_is_one_program():
    traces = []

    class Net(nn.Module):
        rate: jax.Array

        @nn.compact
        def __call__(self, x):
            traces.append(1)
            return jnn.Dropout(self.rate, deterministic=False)(x)

    rates = jnp.array([0.1, 0.3, 0.5, 0.9])
    x = jnp.ones((400, 250))  # 1e5 units per rate

    @jax.jit
    def run(rates, key):
        return jax.vmap(lambda r: Net(r).apply({}, x, rngs={"dropout": key}))(rates)

    ys = run(rates, key())
    run(rates + 0.05, jax.random.key(8))  # new rates and key: no retrace
    assert len(traces) == 1
    for r, y in zip(np.asarray(rates), ys, strict=True):
        kept = int((y != 0).sum())
        assert_binomial(kept, x.size, 1 - float(r))
        np.testing.assert_allclose(y[y != 0], 1 / (1 - r), rtol=1e-6)
    with pytest.raises(AssertionError):  # negative control: the wrong rate is rejected
        assert_binomial(int((ys[1] != 0).sum()), x.size, 1 - 0.32)


def test_missing_rng_bad_rate_and_core_errors_speak_linen():
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.Dropout: .*rngs=\{'dropout': key\}"):
        jnn.Dropout(0.5).apply({}, X, deterministic=False)
    with pytest.raises(ValueError, match=r"rngs=\{'noise': key\}"):
        jnn.GaussianDropout(0.5, rng_collection="noise").apply({}, X, deterministic=False)
    with pytest.raises(
        ValueError, match=r"jaxreg\.linen\.Dropout: rate must be in \[0, 1\], got 1.5"
    ):
        jnn.Dropout(1.5).apply({}, X, deterministic=False, rng=key())
    with pytest.raises(TypeError, match=r"jaxreg\.linen\.DropPath: rate must be a number"):
        jnn.DropPath("0.5").apply({}, X, deterministic=False, rng=key())
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.Dropout: broadcast_dims holds axis 5"):
        jnn.Dropout(0.5, broadcast_dims=(5,)).apply({}, X, deterministic=False, rng=key())
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.DropBlock: "):
        jnn.DropBlock(0.5, block_size=3).apply({}, X[0, 0], deterministic=False, rng=key())


def test_gaussian_noise_layer():
    layer = jnn.GaussianNoise(0.5)
    got = layer.apply({}, X, deterministic=False, rngs={"dropout": key()})
    np.testing.assert_array_equal(got, jaxreg.gaussian_noise(_flax_key(key()), X, stddev=0.5))
    assert layer.apply({}, X, deterministic=True) is X
    assert jnn.GaussianNoise(0.0).apply({}, X, deterministic=False) is X  # no rng asked for
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.GaussianNoise: stddev must be >= 0"):
        jnn.GaussianNoise(-1.0).apply({}, X, deterministic=False, rng=key())
    stddevs = jnp.array([0.0, 2.0])  # traced: one program for both
    ys = jax.vmap(lambda s: jnn.GaussianNoise(s).apply({}, X, deterministic=False, rng=key()))(
        stddevs
    )
    np.testing.assert_array_equal(ys[0], X)
    np.testing.assert_allclose(ys[1], jaxreg.gaussian_noise(key(), X, stddev=2.0), rtol=1e-6)


# DropConnectDense


def _pair(**kwargs):
    """An nn.Dense and a DropConnectDense under the same module name."""

    def wrap(cls, **extra):
        class Net(nn.Module):
            @nn.compact
            def __call__(self, x, train=False):
                layer = cls(5, name="Dense_0", **kwargs, **extra)
                return layer(x, deterministic=not train) if extra else layer(x)

        return Net()

    return wrap(nn.Dense), wrap(jnn.DropConnectDense, rate=0.5)


def test_drop_connect_dense_loads_a_dense_checkpoint_and_is_dense_at_inference():
    x = X.reshape(-1, 8)
    dense, ours = _pair()
    params = dense.init(jax.random.key(3), x)
    mine = ours.init(jax.random.key(3), x)
    assert jax.tree.map(jnp.shape, mine) == jax.tree.map(jnp.shape, params)
    jax.tree.map(np.testing.assert_array_equal, mine, params)  # same initialisers
    np.testing.assert_array_equal(ours.apply(params, x), dense.apply(params, x))
    for kw in ({"use_bias": False}, {"dtype": jnp.bfloat16, "param_dtype": jnp.bfloat16}):
        dense, ours = _pair(**kw)
        params = dense.init(jax.random.key(3), x)
        got = ours.apply(params, x)
        assert got.dtype == dense.apply(params, x).dtype
        np.testing.assert_array_equal(got, dense.apply(params, x))


def test_drop_connect_dense_training_equals_the_core_op():
    x = X.reshape(-1, 8)
    layer = jnn.DropConnectDense(5, rate=0.4, precision="highest")
    params = layer.init(key(), x, deterministic=True)
    k, b = params["params"]["kernel"], params["params"]["bias"]
    for per_example in (False, True):
        layer = jnn.DropConnectDense(5, rate=0.4, per_example=per_example, precision="highest")
        got = layer.apply(params, x, deterministic=False, rng=key())
        want = jaxreg.drop_connect_dense(
            key(), x, k, b, rate=0.4, per_example=per_example, precision="highest"
        )
        np.testing.assert_array_equal(got, want)
    relu = jnn.DropConnectDense(5, rate=0.4, activation=jax.nn.relu)
    got = relu.apply(params, x, deterministic=False, rngs={"dropout": key()})
    want = jaxreg.drop_connect_dense(_flax_key(key()), x, k, b, rate=0.4)
    np.testing.assert_array_equal(got, jax.nn.relu(want))


def test_drop_connect_dense_moments_inference_and_dot_general():
    x = X.reshape(-1, 8)
    layer = jnn.DropConnectDense(
        5, rate=0.4, method="moments", activation=jax.nn.relu, num_samples=64
    )
    params = layer.init(key(), x, deterministic=True, rng=key())
    k, b = params["params"]["kernel"], params["params"]["bias"]
    got = layer.apply(params, x, deterministic=True, rng=key())
    want = jaxreg.drop_connect_inference(
        key(), x, k, b, rate=0.4, activation=jax.nn.relu, num_samples=64
    )
    np.testing.assert_array_equal(got, want)
    calls = []

    def dot_general(*args, **kwargs):
        calls.append(kwargs.get("precision"))
        return jax.lax.dot_general(*args, **kwargs)

    layer = jnn.DropConnectDense(5, rate=0.4, dot_general=dot_general, precision="highest")
    layer.apply(params, x, deterministic=False, rng=key())
    layer.apply(params, x, deterministic=True)
    assert calls == ["highest", "highest"]
    layer = jnn.DropConnectDense(5, 0.4, dot_general_cls=lambda: dot_general)  # as nn.Dense
    layer.apply(params, x, deterministic=True)
    assert calls == ["highest", "highest", None]
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.DropConnectDense: dot_general is not"):
        layer.clone(per_example=True).apply(params, x, deterministic=False, rng=key())
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.DropConnectDense: activation must be"):
        jnn.DropConnectDense(5, 0.5, method="moments").apply(params, x, deterministic=True)
    with pytest.raises(ValueError, match=r"jaxreg\.linen\.DropConnectDense: method must be"):
        jnn.DropConnectDense(5, 0.5, method="mean").apply(params, x, deterministic=True)


def test_drop_connect_dense_rate_is_the_second_field_and_use_bias_a_bool():
    assert jnn.DropConnectDense(10, 0.5).rate == 0.5
    with pytest.raises(TypeError, match=r"DropConnectDense.__init__\(\) missing 1 required"):
        jnn.DropConnectDense(10)  # no default rate
    with pytest.raises(TypeError, match=r"linen\.DropConnectDense: use_bias must be a bool"):
        jnn.DropConnectDense(10, 0.5, 0.3)


def test_public_classes_are_documented():
    assert sorted(jnn.__all__) == jnn.__all__
    for name in jnn.__all__:
        doc = inspect.getdoc(getattr(jnn, name)) or ""
        assert "Attributes:" in doc and "References:" in doc, name
        assert inspect.getdoc(getattr(jnn, name).__call__), name
