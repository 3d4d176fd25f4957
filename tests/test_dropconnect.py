"""DropConnect: exact equality with materialised references, memory bound, statistics."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import jaxreg
from stats import assert_binomial, assert_mean, assert_uniform_counts, assert_variance

B, IN, OUT = 6, 5, 4


def _ints(seed, shape):
    """Small integers: every product and sum below is exact, whatever the order."""
    return jax.random.randint(jax.random.key(seed), shape, -4, 5).astype(jnp.float32)


def _reference(key, x, kernel, bias, rate):
    """Per-example DropConnect with the (batch, in, out) weights materialised."""
    # A fresh copy of the key: the op under test uses the original (key-reuse checker).
    key = jax.random.wrap_key_data(jax.random.key_data(key), impl=jax.random.key_impl(key))
    # A loop, not vmap: rbg keys give other bits under vmap.
    keys = [jax.random.fold_in(key, b) for b in range(x.shape[0])]
    masks = jnp.stack([jaxreg.bernoulli_mask(k, kernel.shape, rate=rate) for k in keys])
    weights = jaxreg.apply_mask(jnp.broadcast_to(kernel, masks.shape), masks, rate=rate)
    return jnp.einsum("bi,bio->bo", x, weights) + bias


def test_drop_connect_is_apply_mask_of_bernoulli_mask():
    w = jax.random.normal(jax.random.key(0), (7, 9))
    for inverted in (True, False):
        got = jaxreg.drop_connect(jax.random.key(1), w, rate=0.3, inverted=inverted)
        mask = jaxreg.bernoulli_mask(jax.random.key(1), w.shape, rate=0.3)
        want = jaxreg.apply_mask(w, mask, rate=0.3, inverted=inverted)
        np.testing.assert_array_equal(got, want)


def test_shared_mask_dense_is_x_times_drop_connect_kernel():
    x, kernel, bias = _ints(1, (B, IN)), _ints(2, (IN, OUT)), _ints(3, (OUT,))

    def ours(x, kernel, bias):
        return jaxreg.drop_connect_dense(jax.random.key(4), x, kernel, bias, rate=0.5)

    def ref(x, kernel, bias):
        return x @ jaxreg.drop_connect(jax.random.key(4), kernel, rate=0.5) + bias

    np.testing.assert_array_equal(ours(x, kernel, bias), ref(x, kernel, bias))
    loss = lambda f: lambda *a: jnp.sum(f(*a) * jnp.arange(OUT))  # noqa: E731
    for g, h in zip(
        jax.grad(loss(ours), (0, 1, 2))(x, kernel, bias),
        jax.grad(loss(ref), (0, 1, 2))(x, kernel, bias),
        strict=True,
    ):
        np.testing.assert_array_equal(g, h)


@pytest.mark.parametrize("rate", [0.5, 0.75, "traced"])
def test_per_example_equals_materialised_reference_exactly(rate):
    rate = jnp.float32(0.5) if rate == "traced" else rate
    x, kernel, bias = _ints(5, (B, IN)), _ints(6, (IN, OUT)), _ints(7, (OUT,))
    weights = _ints(8, (B, OUT))

    def ours(x, kernel, bias):
        y = jaxreg.drop_connect_dense(
            jax.random.key(9), x, kernel, bias, rate=rate, per_example=True
        )
        return jnp.sum(y * weights), y

    def ref(x, kernel, bias):
        y = _reference(jax.random.key(9), x, kernel, bias, rate)
        return jnp.sum(y * weights), y

    (_, y), grads = jax.value_and_grad(ours, (0, 1, 2), has_aux=True)(x, kernel, bias)
    (_, y_ref), grads_ref = jax.value_and_grad(ref, (0, 1, 2), has_aux=True)(x, kernel, bias)
    np.testing.assert_array_equal(y, y_ref)
    for g, h in zip(grads, grads_ref, strict=True):
        np.testing.assert_array_equal(g, h)
    jitted = jax.jit(jax.value_and_grad(ours, (0, 1, 2), has_aux=True))(x, kernel, bias)
    np.testing.assert_array_equal(jitted[0][1], y_ref)


def test_per_example_float_data_and_rbg_keys_match_reference():
    x = jax.random.normal(jax.random.key(10), (B, IN))
    kernel = jax.random.normal(jax.random.key(11), (IN, OUT))
    bias = jax.random.normal(jax.random.key(12), (OUT,))
    for impl in ("threefry2x32", "rbg"):

        def f(x, k, b, impl=impl):
            key = jax.random.key(13, impl=impl)
            return jnp.sum(
                jnp.sin(jaxreg.drop_connect_dense(key, x, k, b, rate=0.3, per_example=True))
            )

        def r(x, k, b, impl=impl):
            return jnp.sum(jnp.sin(_reference(jax.random.key(13, impl=impl), x, k, b, 0.3)))

        np.testing.assert_allclose(f(x, kernel, bias), r(x, kernel, bias), rtol=1e-5)
        grads = jax.grad(f, (0, 1, 2))(x, kernel, bias)
        for g, h in zip(grads, jax.grad(r, (0, 1, 2))(x, kernel, bias), strict=True):
            np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6)


def test_per_example_rows_of_leading_axes_and_batch_size_independence():
    x, kernel = _ints(14, (2, 3, IN)), _ints(15, (IN, OUT))

    def call(x):
        return jaxreg.drop_connect_dense(jax.random.key(16), x, kernel, rate=0.5, per_example=True)

    y = call(x)
    assert y.shape == (2, 3, OUT)
    np.testing.assert_array_equal(y.reshape(6, OUT), call(x.reshape(6, IN)))
    np.testing.assert_array_equal(y.reshape(6, OUT)[:4], call(x.reshape(6, IN)[:4]))
    # A 1-D input is one example: example 0.
    np.testing.assert_array_equal(call(x[0, 0]), y[0, 0])


def test_per_example_memory_stays_bounded_at_benchmark_size():
    """Batch 128, 1024 -> 1024: a materialised mask alone would be 128 MiB (bool)."""
    x = jax.ShapeDtypeStruct((128, 1024), jnp.float32)
    kernel = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)

    def loss(x, kernel, key):
        y = jaxreg.drop_connect_dense(key, x, kernel, rate=0.5, per_example=True)
        return jnp.sum(y * y)

    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    for f in (loss, jax.grad(loss, (0, 1))):
        mem = jax.jit(f).lower(x, kernel, key).compile().memory_analysis()
        assert mem.temp_size_in_bytes <= 64 * 2**20, mem.temp_size_in_bytes / 2**20


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_per_weight_keep_fraction(rate):
    keys = jax.random.split(jax.random.key(17), 100_000)
    kept = jax.jit(jax.vmap(lambda k: jaxreg.drop_connect(k, jnp.ones((3, 4)), rate=rate) != 0))(
        keys
    )
    for count in np.asarray(kept.sum(axis=0)).ravel():
        assert_binomial(int(count), 100_000, 1 - rate)


def _per_example_masks(per_example, n=1000, out=1000, rate=0.5):
    """Keep-masks of n examples at the out weights of a 1 -> out layer."""
    y = jaxreg.drop_connect_dense(
        jax.random.key(18), jnp.ones((n, 1)), jnp.ones((1, out)), rate=rate, per_example=per_example
    )
    return np.asarray(y != 0)


def _assert_pairs_independent(masks):
    a, b = masks[:-1].ravel(), masks[1:].ravel()  # the same weight in consecutive examples
    assert_binomial(int(np.sum(a & b)), a.size, 0.25)
    assert_uniform_counts(np.bincount(2 * a + b, minlength=4))


def test_per_example_masks_are_independent_across_examples():
    masks = _per_example_masks(per_example=True)
    assert_binomial(int(masks.sum()), masks.size, 0.5)
    _assert_pairs_independent(masks)


def test_independence_check_rejects_a_shared_mask():
    with pytest.raises(AssertionError):
        _assert_pairs_independent(_per_example_masks(per_example=False))


def _small_layer():
    x = jnp.array([[0.5, -1.0, 2.0, 1.5, -0.3, 0.8]])
    kernel = jax.random.normal(jax.random.key(19), (6, 2))
    return x, kernel


def _moments(x, kernel, rate, inverted):
    p = 1 - rate
    mean = (x @ kernel) * (1.0 if inverted else p)
    var = ((x * x) @ (kernel * kernel)) * ((1 - p) / p if inverted else p * (1 - p))
    return np.asarray(mean[0]), np.asarray(var[0])


N = 200_000


@pytest.mark.slow
@pytest.mark.parametrize("inverted", [True, False])
def test_moment_matching_against_monte_carlo_over_real_masks(inverted):
    x, kernel = _small_layer()
    rate = 0.4
    keys = jax.random.split(jax.random.key(20), N)
    real = jax.jit(
        jax.vmap(lambda k: x[0] @ jaxreg.drop_connect(k, kernel, rate=rate, inverted=inverted))
    )(keys)
    gauss = jax.jit(
        jax.vmap(
            lambda k: jaxreg.drop_connect_inference(
                k, x, kernel, rate=rate, activation=lambda u: u, num_samples=1, inverted=inverted
            )[0]
        )
    )(jax.random.split(jax.random.key(21), N))
    mean, var = _moments(x, kernel, rate, inverted)
    for unit in range(2):
        for samples in (real[:, unit], gauss[:, unit]):
            assert_mean(samples, mean[unit])
            assert_variance(samples, var[unit])
    # Negative control: the moments for a slightly wrong rate are rejected.
    _, wrong_var = _moments(x, kernel, 0.37, inverted)
    with pytest.raises(AssertionError):
        assert_variance(real[:, 0], wrong_var[0])


@pytest.mark.slow
def test_inference_averages_the_activation_of_the_gaussian():
    x, kernel = _small_layer()
    bias = jnp.array([0.3, -0.2])
    y = jaxreg.drop_connect_inference(
        jax.random.key(22), x, kernel, bias, rate=0.5, activation=jax.nn.relu, num_samples=N
    )
    mean, var = _moments(x, kernel, 0.5, True)
    mu, sd = mean + np.asarray(bias), np.sqrt(var)
    expected = mu * sps.norm.cdf(mu / sd) + sd * sps.norm.pdf(mu / sd)  # E[relu(N(mu, sd^2))]
    second = (mu**2 + sd**2) * sps.norm.cdf(mu / sd) + mu * sd * sps.norm.pdf(mu / sd)
    se = np.sqrt((second - expected**2) / N)
    assert np.all(np.abs(np.asarray(y[0]) - expected) < 5 * se), (y, expected)


def test_scale_method_and_rate_zero_are_plain_layers():
    x, kernel = _small_layer()
    bias = jnp.array([0.3, -0.2])
    plain = jax.nn.relu(x @ kernel + bias)
    for kw in ({"rate": 0.4, "method": "scale"}, {"rate": 0.0}, {"rate": jnp.float32(0.0)}):
        y = jaxreg.drop_connect_inference(
            jax.random.key(23), x, kernel, bias, activation=jax.nn.relu, num_samples=8, **kw
        )
        np.testing.assert_allclose(y, plain, rtol=1e-6)
    classic = jaxreg.drop_connect_inference(
        jax.random.key(24),
        x,
        kernel,
        bias,
        rate=0.4,
        activation=jax.nn.relu,
        num_samples=8,
        method="scale",
        inverted=False,
    )
    np.testing.assert_allclose(classic, jax.nn.relu(0.6 * (x @ kernel) + bias), rtol=1e-6)


def _params():
    return {
        "dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones((3,))},
        "conv": {"kernel": jnp.ones((3, 3, 2, 4))},
        "norm": {"scale": jnp.ones((4,))},
        "step": jnp.ones((2, 2), jnp.int32),
    }


def test_tree_default_masks_weight_matrices_and_kernels_only():
    params = _params()
    out = jaxreg.drop_connect_tree(jax.random.key(25), params, rate=0.5)
    keys = jax.random.split(jax.random.key(25), len(jax.tree.leaves(params)))
    for i, (leaf, new) in enumerate(
        zip(jax.tree.leaves(params), jax.tree.leaves(out), strict=True)
    ):
        if leaf.ndim >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating):
            np.testing.assert_array_equal(new, jaxreg.drop_connect(keys[i], leaf, rate=0.5))
        else:
            assert new is leaf


def test_tree_where_as_bool_tree_or_callable_never_a_prefix():
    params = _params()
    only_dense = jaxreg.by_path(params, r"^dense/")
    prefix = {"dense": True, "conv": False, "norm": False, "step": False}
    with pytest.raises(ValueError, match=r"jaxreg\.drop_connect_tree: where must have the same"):
        jaxreg.drop_connect_tree(jax.random.key(25), params, rate=0.5, where=prefix)
    a = jaxreg.drop_connect_tree(jax.random.key(26), params, rate=0.5, where=only_dense)
    b = jaxreg.drop_connect_tree(jax.random.key(26), params, rate=0.5, where=lambda p: only_dense)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert a["conv"]["kernel"] is params["conv"]["kernel"]
    assert bool(jnp.any(a["dense"]["bias"] == 0)) or bool(jnp.any(a["dense"]["kernel"] == 0))
    # The same leaf gets the same mask whatever else is selected.
    c = jaxreg.drop_connect_tree(jax.random.key(26), params, rate=0.5)
    np.testing.assert_array_equal(a["dense"]["kernel"], c["dense"]["kernel"])
    assert jaxreg.drop_connect_tree(jax.random.key(27), params, rate=0.0) is params
    traced = jax.jit(lambda k, r: jaxreg.drop_connect_tree(k, params, rate=r))(
        jax.random.key(26), jnp.float32(0.5)
    )
    jax.tree.map(np.testing.assert_array_equal, traced, c)


def test_tree_where_none_means_every_array_leaf_and_the_default_is_spelled_out():
    assert inspect.signature(jaxreg.drop_connect_tree).parameters["where"].default is (
        jaxreg.kernels_only
    )
    params = {"dense": {"kernel": jnp.ones((64, 8)), "bias": jnp.ones(64)}}
    out = jaxreg.drop_connect_tree(jax.random.key(28), params, rate=0.5, where=None)
    assert bool(jnp.any(out["dense"]["bias"] == 0))  # None: biases too
    default = jaxreg.drop_connect_tree(jax.random.key(28), params, rate=0.5)
    assert default["dense"]["bias"] is params["dense"]["bias"]  # kernels only
    with pytest.raises(TypeError, match=r"params leaf 'step' must be a floating-point"):
        jaxreg.drop_connect_tree(jax.random.key(28), _params(), rate=0.5, where=None)


def test_inference_num_samples_defaults_to_the_papers_1000():
    assert inspect.signature(jaxreg.drop_connect_inference).parameters["num_samples"].default == (
        1000
    )


def _infer(**kw):
    kw = {"rate": 0.5, "activation": jax.nn.relu, "num_samples": 4, **kw}
    return jaxreg.drop_connect_inference(
        jax.random.key(0), jnp.ones((2, 3)), jnp.ones((3, 2)), **kw
    )


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: jaxreg.drop_connect_dense(
                jax.random.key(0), jnp.ones((2, 3)), jnp.ones(3), rate=0.5
            ),
            ValueError,
            r"drop_connect_dense: kernel must be 2-D",
        ),
        (
            lambda: jaxreg.drop_connect_dense(
                jax.random.key(0), jnp.ones((2, 4)), jnp.ones((3, 2)), rate=0.5
            ),
            ValueError,
            r"x must have shape \(\.\.\., 3\)",
        ),
        (
            lambda: jaxreg.drop_connect_dense(
                jax.random.key(0), jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones(3), rate=0.5
            ),
            ValueError,
            r"bias must have shape \(2,\)",
        ),
        (
            lambda: jaxreg.drop_connect_dense(
                jax.random.key(0), jnp.ones((2, 3)), jnp.ones((3, 2), jnp.int32), rate=0.5
            ),
            TypeError,
            r"kernel must be a floating-point array",
        ),
        (
            lambda: _infer(num_samples=0),
            ValueError,
            r"drop_connect_inference: num_samples must be >= 1, got 0",
        ),
        (
            lambda: _infer(activation="relu"),
            TypeError,
            r"activation must be callable",
        ),
        (
            lambda: _infer(method="mc"),
            ValueError,
            r"method must be one of 'moments', 'scale', got 'mc'",
        ),
        (
            lambda: jaxreg.drop_connect_tree(
                jax.random.key(0), {"w": jnp.ones((2, 2))}, rate=0.5, where={"v": True}
            ),
            ValueError,
            r"drop_connect_tree: where must have the same pytree structure as params",
        ),
        (
            lambda: jaxreg.drop_connect_tree(
                jax.random.key(0), {"w": jnp.ones((2, 2), jnp.int32)}, rate=0.5, where={"w": True}
            ),
            TypeError,
            r"params leaf 'w' must be a floating-point array",
        ),
    ],
    ids=[
        "kernel-rank",
        "x-shape",
        "bias-shape",
        "int-kernel",
        "num-samples",
        "activation",
        "method",
        "where",
        "int-leaf",
    ],
)
def test_clear_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_rate_one_dense_gives_bias_and_zero_kernel_gradients():
    x, kernel, bias = _ints(28, (B, IN)), _ints(29, (IN, OUT)), _ints(30, (OUT,))
    for per_example in (False, True):
        for rate in (1.0, jnp.float32(1.0)):

            def f(k, b, rate=rate, per_example=per_example):
                key = jax.random.key(31)
                return jaxreg.drop_connect_dense(key, x, k, b, rate=rate, per_example=per_example)

            np.testing.assert_array_equal(f(kernel, bias), jnp.broadcast_to(bias, (B, OUT)))
            gk, gb = jax.grad(lambda k, b, f=f: jnp.sum(f(k, b)), (0, 1))(kernel, bias)
            np.testing.assert_array_equal(gk, 0)
            np.testing.assert_array_equal(gb, B)


def test_per_example_rate_gradient_equals_materialised_reference():
    x, kernel, bias = _ints(40, (B, IN)), _ints(41, (IN, OUT)), _ints(42, (OUT,))

    def f(r):
        y = jaxreg.drop_connect_dense(jax.random.key(43), x, kernel, bias, rate=r, per_example=True)
        return jnp.sum(y * y)

    def ref(r):
        return jnp.sum(_reference(jax.random.key(43), x, kernel, bias, r) ** 2)

    for rate in (0.25, 0.5):
        g, h = jax.grad(f)(jnp.float32(rate)), jax.grad(ref)(jnp.float32(rate))
        np.testing.assert_allclose(g, h, rtol=1e-5)
        assert float(g) != 0.0


@pytest.mark.parametrize("method", ["moments", "scale"])
def test_inference_rate_one_is_activation_of_bias_python_or_traced(method):
    x, kernel, bias = jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.array([0.5, -1.0])

    def call(rate):
        return jaxreg.drop_connect_inference(
            jax.random.key(44),
            x,
            kernel,
            bias,
            rate=rate,
            activation=jax.nn.relu,
            num_samples=8,
            method=method,
        )

    expected = jnp.broadcast_to(jax.nn.relu(bias), (2, 2))
    np.testing.assert_array_equal(call(1.0), expected)
    np.testing.assert_array_equal(jax.jit(call)(jnp.float32(1.0)), expected)


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_inference_keeps_bf16(rate):
    x, kernel = jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 2), jnp.bfloat16)
    for r in (rate, jnp.float32(rate)):
        y = jaxreg.drop_connect_inference(
            jax.random.key(45), x, kernel, rate=r, activation=jax.nn.relu, num_samples=4
        )
        assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize("devices", [3, 6])
def test_per_example_lanes_equal_materialised_reference_exactly(monkeypatch, devices):
    # On D devices the examples run in gcd(batch, D) lanes of contiguous rows (what a
    # batch sharding partitions); every lane count gives the reference's exact values.
    from jaxreg._dropconnect import lanes

    monkeypatch.setattr(jax, "device_count", lambda: devices)
    assert lanes(jax.random.key(0), B) == np.gcd(B, devices)
    assert lanes(jax.random.key(0, impl="rbg"), B) == 1  # vmapped rbg keys draw other bits
    x, kernel, bias = _ints(50, (B, IN)), _ints(51, (IN, OUT)), _ints(52, (OUT,))
    weights = _ints(53, (B, OUT))

    def loss(f):
        return lambda x, k, b: jnp.sum(f(x, k, b) * weights)

    def ours(x, k, b):
        return jaxreg.drop_connect_dense(jax.random.key(54), x, k, b, rate=0.5, per_example=True)

    def ref(x, k, b):
        return _reference(jax.random.key(54), x, k, b, 0.5)

    np.testing.assert_array_equal(jax.jit(ours)(x, kernel, bias), ref(x, kernel, bias))
    grads = jax.jit(jax.grad(loss(ours), (0, 1, 2)))(x, kernel, bias)
    for g, h in zip(grads, jax.grad(loss(ref), (0, 1, 2))(x, kernel, bias), strict=True):
        np.testing.assert_array_equal(g, h)


def test_matmul_precision_and_dot_general_reach_every_product():
    x, kernel, bias = _ints(50, (B, IN)), _ints(51, (IN, OUT)), _ints(52, (OUT,))
    calls = []

    def dot_general(lhs, rhs, dims, precision=None, **kwargs):
        calls.append(precision)
        return jax.lax.dot_general(lhs, rhs, dims, precision=precision, **kwargs)

    y = jaxreg.drop_connect_dense(
        jax.random.key(53), x, kernel, bias, rate=0.5, precision="highest", dot_general=dot_general
    )
    want = x @ jaxreg.drop_connect(jax.random.key(53), kernel, rate=0.5) + bias
    np.testing.assert_array_equal(y, want)
    jaxreg.drop_connect_dense(None, x, kernel, rate=0.0, dot_general=dot_general)
    jaxreg.drop_connect_inference(
        jax.random.key(54), x, kernel, rate=0.5, activation=jax.nn.relu, num_samples=2,
        precision="high", dot_general=dot_general,
    )  # fmt: skip
    assert calls == ["highest", None, "high", "high"]  # mean and variance products

    def per_example(x, kernel):
        return jaxreg.drop_connect_dense(
            jax.random.key(55), x, kernel, rate=0.5, per_example=True, precision="highest"
        )

    np.testing.assert_array_equal(
        per_example(x, kernel), _reference(jax.random.key(55), x, kernel, 0.0, 0.5)
    )
    for fn in (per_example, jax.grad(lambda x, k: per_example(x, k).sum(), argnums=(0, 1))):
        jaxpr = str(jax.make_jaxpr(fn)(x, kernel))
        assert "dot_general" in jaxpr and "Precision.DEFAULT" not in jaxpr
        assert jaxpr.count("Precision.HIGHEST") >= (1 if fn is per_example else 2)
    with pytest.raises(ValueError, match=r"drop_connect_dense: dot_general is not supported"):
        jaxreg.drop_connect_dense(
            jax.random.key(56), x, kernel, rate=0.5, per_example=True, dot_general=dot_general
        )
    with pytest.raises(TypeError, match=r"drop_connect_dense: dot_general must be callable"):
        jaxreg.drop_connect_dense(jax.random.key(57), x, kernel, rate=0.5, dot_general="dot")
