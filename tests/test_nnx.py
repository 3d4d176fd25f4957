"""jaxreg.nnx: drop-in flax.nnx layers over the core ops, and the NNX transform recipes."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxreg
from jaxreg import nnx as jnnx
from stats import assert_binomial

X = jax.random.normal(jax.random.key(1), (4, 6, 8))


def key(seed=7):
    """A fresh key object (JAX's key-reuse checker is on for the suite)."""
    return jax.random.key(seed)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("broadcast_dims", [(), (0,), (1,)])
def test_dropout_equals_nnx_and_core(dtype, broadcast_dims):
    x = X.astype(dtype)
    ours = jnnx.Dropout(0.3, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=5))
    theirs = nnx.Dropout(0.3, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(dropout=5))
    for _ in range(2):  # the forked stream advances the same way
        got, want = ours(x), theirs(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    core = jaxreg.dropout(key(), x, rate=0.3, broadcast_dims=broadcast_dims)
    np.testing.assert_array_equal(ours(x, rngs=key()), core)  # call-time key
    np.testing.assert_array_equal(theirs(x, rngs=key()), core)
    assert 0 < int((core == 0).sum()) < x.size


class _Model(nnx.Module):
    def __init__(self, lib, rngs):
        self.linear = nnx.Linear(8, 16, rngs=rngs)
        self.d1 = lib.Dropout(0.5, rngs=rngs)
        self.d0 = lib.Dropout(0.0, rngs=rngs)  # draws nothing
        self.fixed = lib.Dropout(0.3, deterministic=True, rngs=rngs)  # never draws
        self.d_all = lib.Dropout(1.0, rngs=rngs)  # zeros, draws nothing
        self.shared = lib.Dropout(0.2, broadcast_dims=(0,), rngs=rngs)
        self.late = lib.Dropout(0.6)  # no stream: keys come at call time

    def __call__(self, x, rngs=None):
        x = self.linear(x)
        x = self.fixed(self.d0(self.d1(x)))
        x = self.shared(x + self.d_all(x))
        return self.late(x, rngs=rngs)


def test_whole_model_equals_nnx_call_for_call():
    x = jnp.ones((5, 8))
    ours = _Model(jnnx, nnx.Rngs(0, dropout=1))
    theirs = _Model(nnx, nnx.Rngs(0, dropout=1))
    pairs = [  # call-time rngs for the last layer: Rngs, RngStream, key
        (nnx.Rngs(dropout=3), nnx.Rngs(dropout=3)),
        (nnx.Rngs(dropout=4).dropout, nnx.Rngs(dropout=4).dropout),
        (key(5), key(5)),
    ]
    for mine, flaxs in pairs:
        np.testing.assert_array_equal(ours(x, rngs=mine), theirs(x, rngs=flaxs))
    step = nnx.jit(lambda model, k: model(x, rngs=k))
    np.testing.assert_array_equal(step(ours, key(6)), step(theirs, key(6)))
    assert not np.array_equal(ours(x, rngs=key(8)), theirs(x, rngs=key(9)))  # not vacuous
    ours.eval(), theirs.eval()
    np.testing.assert_array_equal(ours(x), theirs(x))
    ours.train()
    assert not ours.d1.deterministic
    np.testing.assert_array_equal(nnx.view(ours, deterministic=True)(x), theirs(x))


def test_layers_equal_their_core_op_for_the_same_key():
    x4 = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    cases = [
        (jnnx.SpatialDropout(0.4), jaxreg.spatial_dropout, {}, x4),
        (jnnx.VariationalDropout(0.4), jaxreg.variational_dropout, {}, X),
        (jnnx.GaussianDropout(0.4), jaxreg.gaussian_dropout, {}, X),
        (jnnx.AlphaDropout(0.4), jaxreg.alpha_dropout, {}, X),
        (jnnx.DropPath(0.4, per_example=False), jaxreg.drop_path, {"per_example": False}, X),
        (jnnx.DropBlock(0.4, block_size=3), jaxreg.drop_block, {"block_size": 3}, x4),
        (jnnx.Dropout(0.4, sampler="fast"), jaxreg.dropout, {"sampler": "fast"}, X),
    ]
    for layer, op, kwargs, x in cases:
        np.testing.assert_array_equal(
            layer(x, rngs=key()), op(key(), x, rate=0.4, **kwargs), err_msg=str(type(layer))
        )
        assert layer(x, deterministic=True) is x
        layer.eval()
        assert layer(x) is x


def test_rate_zero_one_and_eval_take_no_key():
    stream = nnx.Rngs(dropout=0).dropout
    assert jnnx.Dropout(0.0)(X, rngs=stream) is X
    np.testing.assert_array_equal(jnnx.Dropout(1.0)(X, rngs=stream), 0 * X)
    assert jnnx.Dropout(0.5, deterministic=True)(X, rngs=stream) is X
    assert int(stream.count[...]) == 0
    jnnx.Dropout(0.5)(X, rngs=stream)
    assert int(stream.count[...]) == 1


def test_ensemble_members_get_their_own_masks_and_rates():
    """flax #4195: split the rngs so that each vmapped member has its own stream."""
    rates = jnp.array([0.1, 0.5, 0.5, 0.9])

    class Member(nnx.Module):
        def __init__(self, rate, rngs):
            self.drop = jnnx.Dropout(nnx.Variable(rate), rngs=rngs)

        def __call__(self, x):
            return self.drop(x)

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=(0, 0))
    def create(rate, rngs):
        return Member(rate, rngs)

    ensemble = create(rates, nnx.Rngs(dropout=0))
    x = jnp.ones((400, 250))  # 1e5 units per member
    forward = nnx.jit(nnx.vmap(lambda m, x: m(x), in_axes=(0, None)))
    ys = forward(ensemble, x)
    for r, y in zip(np.asarray(rates), ys, strict=True):
        assert_binomial(int((y != 0).sum()), x.size, 1 - float(r))
    assert not np.array_equal(ys[1], ys[2])  # same rate, own masks
    with pytest.raises(AssertionError):  # negative control: a wrong rate is rejected
        assert_binomial(int((ys[1] != 0).sum()), x.size, 1 - 0.52)
    # Without the split (#4195), a broadcast key gives every member the same mask.
    shared = nnx.vmap(lambda m, k: m.drop(x[:8], rngs=k), in_axes=(0, None))(ensemble, key())
    assert np.array_equal(shared[1] != 0, shared[2] != 0)
    unsplit = nnx.vmap(Member, in_axes=(0, None))(rates, nnx.Rngs(dropout=0))  # no split_rngs
    ys = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(unsplit, x[:8])
    assert np.array_equal(ys[1] != 0, ys[2] != 0)


def test_jit_with_the_rate_as_model_state_does_not_retrace():
    traces = []

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.drop = jnnx.Dropout(nnx.Variable(jnp.array(0.2)), rngs=rngs)

        def __call__(self, x):
            traces.append(1)
            return self.drop(x)

    net = Net(nnx.Rngs(dropout=0))
    run = nnx.jit(lambda net, x: net(x))
    x = jnp.ones((400, 250))
    for rate in (0.2, 0.7):
        net.drop.rate[...] = jnp.array(rate)
        assert_binomial(int((run(net, x) != 0).sum()), x.size, 1 - rate)
    assert len(traces) == 1


def test_scanned_stack_built_with_vmap_trains():
    """flax #4589, #5158: a vmapped stack with split rngs, run with nnx.scan."""

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(8, 8, rngs=rngs)
            self.drop = jnnx.Dropout(0.3, rngs=rngs)

        def __call__(self, x):
            return x + self.drop(jax.nn.relu(self.linear(x)))

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,))
    def create(rngs):
        return Block(rngs)

    stack = create(nnx.Rngs(0))
    optimizer = nnx.Optimizer(stack, optax.sgd(0.05), wrt=nnx.Param)
    x = jax.random.normal(key(1), (32, 8))
    target = jnp.roll(x, 1, axis=-1)

    @nnx.jit
    def step(stack, optimizer):
        def loss_fn(stack):
            @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
            def run(block, h):
                return block(h)

            return jnp.mean((run(stack, x) - target) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(stack)
        optimizer.update(stack, grads)
        return loss

    losses = [float(step(stack, optimizer)) for _ in range(30)]
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    counts = np.asarray(stack.drop.rngs.count[...])
    assert counts.shape == (3,) and (counts == 30).all()  # each block drew once per step


def test_drop_connect_linear_mirrors_nnx_linear():
    x = X.reshape(-1, 8)
    ours = jnnx.DropConnectLinear(8, 5, rate=0.4, rngs=nnx.Rngs(3))
    linear = nnx.Linear(8, 5, rngs=nnx.Rngs(3))
    assert jax.tree.map(jnp.shape, nnx.state(ours, nnx.Param)) == jax.tree.map(
        jnp.shape, nnx.state(linear, nnx.Param)
    )
    np.testing.assert_array_equal(ours.kernel[...], linear.kernel[...])  # same initialisers
    np.testing.assert_array_equal(ours(x, deterministic=True), linear(x))
    other = nnx.Linear(8, 5, rngs=nnx.Rngs(4))
    nnx.update(ours, nnx.state(other, nnx.Param))  # a Linear checkpoint loads
    ours.eval()
    np.testing.assert_array_equal(ours(x), other(x))
    ours.train()
    k, b = other.kernel[...], other.bias[...]
    for per_example in (False, True):
        ours.per_example = per_example
        want = jaxreg.drop_connect_dense(key(), x, k, b, rate=0.4, per_example=per_example)
        np.testing.assert_array_equal(ours(x, rngs=key()), want)
    bf16 = jnnx.DropConnectLinear(8, 5, 0.4, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(3))
    assert bf16(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    kw = {"param_dtype": jnp.bfloat16, "preferred_element_type": jnp.float32}
    kw["kernel_metadata"] = {"note": "k"}
    wide = jnnx.DropConnectLinear(8, 5, 0.4, **kw, rngs=nnx.Rngs(3))
    want = nnx.Linear(8, 5, **kw, rngs=nnx.Rngs(3))(x.astype(jnp.bfloat16))
    got = wide(x.astype(jnp.bfloat16), deterministic=True)
    assert got.dtype == want.dtype == jnp.float32 and wide.kernel.get_metadata()["note"] == "k"
    np.testing.assert_array_equal(got, want)
    moments = jnnx.DropConnectLinear(
        8,
        5,
        rate=0.4,
        method="moments",
        activation=jax.nn.relu,
        num_samples=64,
        rngs=nnx.Rngs(3),
    )
    k, b = moments.kernel[...], moments.bias[...]
    want = jaxreg.drop_connect_inference(
        key(), x, k, b, rate=0.4, activation=jax.nn.relu, num_samples=64
    )
    np.testing.assert_array_equal(moments(x, deterministic=True, rngs=key()), want)


def test_a_variable_holding_a_python_float_is_read_at_call_time():
    """Regression: nnx.Variable(0.3) failed with flax's 'float' is not subscriptable."""
    ours = jnnx.Dropout(nnx.Variable(0.3), rngs=nnx.Rngs(dropout=5))
    theirs = nnx.Dropout(0.3, rngs=nnx.Rngs(dropout=5))
    for _ in range(2):
        np.testing.assert_array_equal(ours(X), theirs(X))
    step = nnx.jit(lambda layer, x: layer(x))  # traced there: same masks
    np.testing.assert_array_equal(step(ours, X), step(theirs, X))
    ours.rate.set_value(0.0)  # a Python 0 outside jit draws nothing
    count = int(ours.rngs.count[...])
    assert ours(X) is X and int(ours.rngs.count[...]) == count
    noise = jnnx.GaussianNoise(nnx.Variable(0.5))
    np.testing.assert_array_equal(noise(X, rngs=key()), jaxreg.gaussian_noise(key(), X, stddev=0.5))
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: rate must be in \[0, 1\]"):
        jnnx.Dropout(nnx.Variable(1.5))


def test_gaussian_noise_layer_and_constructor_errors():
    layer = jnnx.GaussianNoise(0.5, rngs=nnx.Rngs(dropout=5))
    want = jaxreg.gaussian_noise(nnx.Rngs(dropout=5).dropout.fork()(), X, stddev=0.5)
    np.testing.assert_array_equal(layer(X), want)  # the forked stream, as nnx.Dropout
    assert layer(X, deterministic=True) is X
    assert jnnx.GaussianNoise(0.0)(X) is X  # draws nothing: no rngs needed
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.GaussianNoise: stddev must be >= 0"):
        jnnx.GaussianNoise(-1.0)
    with pytest.raises(TypeError, match=r"jaxreg\.nnx\.Dropout: got an unexpected keyword"):
        jnnx.Dropout(0.5, mode="row")
    with pytest.raises(TypeError, match=r"jaxreg\.nnx\.DropConnectLinear: missing a required"):
        jnnx.DropConnectLinear(8, 5, rngs=nnx.Rngs(0))  # no default rate
    with pytest.raises(TypeError, match=r"jaxreg\.nnx\.DropConnectLinear: use_bias must be"):
        jnnx.DropConnectLinear(8, 5, 0.5, use_bias=1, rngs=nnx.Rngs(0))


def test_errors_speak_nnx():
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: .*rngs=nnx\.Rngs\(dropout=seed\)"):
        jnnx.Dropout(0.5)(X)
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: .*rngs=nnx\.Rngs\(dropout="):
        jnnx.Dropout(0.5, rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: .*Rngs\(noise=seed\)"):
        jnnx.Dropout(0.5, rng_collection="noise")(X, rngs=nnx.Rngs(dropout=0))
    with pytest.raises(
        ValueError, match=r"jaxreg\.nnx\.Dropout: rate must be in \[0, 1\], got 1.5"
    ):
        jnnx.Dropout(1.5)
    with pytest.raises(TypeError, match=r"jaxreg\.nnx\.DropPath: rate must be a number"):
        jnnx.DropPath("0.5")
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: deterministic is None"):
        jnnx.Dropout(0.5, deterministic=None)(X, rngs=key())
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.Dropout: broadcast_dims holds axis 5"):
        jnnx.Dropout(0.5, broadcast_dims=(5,))(X, rngs=key())
    with pytest.raises(TypeError, match=r"jaxreg\.nnx\.Dropout: rngs must be"):
        jnnx.Dropout(0.5, rngs=0)
    with pytest.raises(ValueError, match=r"jaxreg\.nnx\.DropConnectLinear: activation must"):
        jnnx.DropConnectLinear(8, 5, 0.5, method="moments", rngs=nnx.Rngs(0))


def test_public_classes_are_documented():
    assert sorted(jnnx.__all__) == jnnx.__all__
    for name in jnnx.__all__:
        cls = getattr(jnnx, name)
        doc = inspect.getdoc(cls) or ""
        assert "Args:" in doc and "References:" in doc, name
        assert inspect.getdoc(cls.__call__), name
