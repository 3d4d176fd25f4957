"""dropout / scale_for_inference / spatial_dropout / variational_dropout specifics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxreg
from ops import fast_keep
from stats import assert_mean


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_inverted_and_classic_dropout_have_the_same_expectation(rate):
    # E[inverted train output] = x = inference output; E[classic train output] =
    # (1 - rate) x = scale_for_inference(x). Both train/inference pairs agree.
    x = jnp.full((1_000_000,), 1.5)
    inverted = jaxreg.dropout(jax.random.key(0), x, rate=rate)
    classic = jaxreg.dropout(jax.random.key(1), x, rate=rate, inverted=False)
    assert_mean(np.asarray(inverted), 1.5)
    assert_mean(np.asarray(classic), float(jaxreg.scale_for_inference(jnp.float32(1.5), rate=rate)))
    np.testing.assert_allclose(jaxreg.scale_for_inference(x[:3], rate=rate), 1.5 * (1 - rate))


def test_scale_for_inference_traced_and_errors():
    x = jnp.ones(3, jnp.bfloat16)
    y = jax.jit(lambda r: jaxreg.scale_for_inference(x, rate=r))(jnp.float32(0.25))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, 0.75)
    assert bool(jnp.isnan(jax.jit(lambda r: jaxreg.scale_for_inference(x, rate=r))(2.0)).all())
    with pytest.raises(ValueError, match=r"jaxreg\.scale_for_inference: rate must be in"):
        jaxreg.scale_for_inference(x, rate=-1)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jaxreg.scale_for_inference(jnp.ones(3, jnp.int32), rate=0.5)


def test_noise_shape_is_keras_semantics_and_validated():
    x = jnp.ones((4, 5, 6))
    y = jaxreg.dropout(jax.random.key(2), x, rate=0.5, noise_shape=(4, 1, 6))
    m = jaxreg.bernoulli_mask(jax.random.key(2), x.shape, rate=0.5, broadcast_dims=(1,))
    np.testing.assert_array_equal(y != 0, m)
    with pytest.raises(ValueError, match=r"jaxreg\.dropout: noise_shape must have one entry"):
        jaxreg.dropout(jax.random.key(3), x, rate=0.5, noise_shape=(4, 2, 6))
    with pytest.raises(ValueError, match="noise_shape must have one entry"):
        jaxreg.dropout(jax.random.key(3), x, rate=0.5, noise_shape=(4, 6))
    with pytest.raises(ValueError, match="pass broadcast_dims or noise_shape, not both"):
        jaxreg.dropout(jax.random.key(3), x, rate=0.5, noise_shape=(4, 1, 6), broadcast_dims=0)


def test_broadcast_dims_negative_is_normalised_and_out_of_range_rejected():
    x = jnp.ones((3, 4, 5))
    a = jaxreg.dropout(jax.random.key(4), x, rate=0.5, broadcast_dims=(-1,))
    b = jaxreg.dropout(jax.random.key(4), x, rate=0.5, broadcast_dims=(2,))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"jaxreg\.dropout: broadcast_dims holds axis -4"):
        jaxreg.dropout(jax.random.key(5), x, rate=0.5, broadcast_dims=(-4,))
    with pytest.raises(ValueError, match="repeats an axis"):
        jaxreg.dropout(jax.random.key(5), x, rate=0.5, broadcast_dims=(1, -2))
    with pytest.raises(TypeError, match="broadcast_dims must hold ints"):
        jaxreg.dropout(jax.random.key(5), x, rate=0.5, broadcast_dims=(1.0,))


@pytest.mark.parametrize("channel_axis", [-1, 1])
def test_spatial_dropout_drops_whole_feature_maps(channel_axis):
    x = jnp.ones((64, 5, 6, 32)) if channel_axis == -1 else jnp.ones((64, 32, 5, 6))
    y = np.asarray(
        jaxreg.spatial_dropout(jax.random.key(6), x, rate=0.5, channel_axis=channel_axis)
    )
    maps = y if channel_axis == -1 else np.moveaxis(y, 1, -1)
    kept = (maps != 0).reshape(64, -1, 32)
    assert np.all(kept.all(axis=1) | (~kept).all(axis=1))  # each map all kept or all dropped
    assert 0 < kept[:, 0].sum() < kept[:, 0].size  # and the draws vary by (example, channel)
    assert not np.all(kept[0, 0] == kept[1, 0])


def test_spatial_dropout_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"jaxreg\.spatial_dropout: x must have rank >= 3"):
        jaxreg.spatial_dropout(key, jnp.ones((4, 3)), rate=0.5)
    with pytest.raises(ValueError, match="channel_axis must not be 0"):
        jaxreg.spatial_dropout(key, jnp.ones((4, 3, 2)), rate=0.5, channel_axis=0)
    with pytest.raises(ValueError, match="channel_axis holds axis 3, out of range"):
        jaxreg.spatial_dropout(key, jnp.ones((4, 3, 2)), rate=0.5, channel_axis=3)


def test_variational_dropout_same_mask_at_every_time_step():
    x = jnp.ones((16, 10, 32))
    y = np.asarray(jaxreg.variational_dropout(jax.random.key(7), x, rate=0.5))
    kept = y != 0
    assert np.all(kept == kept[:, :1, :])
    assert 0 < kept[:, 0].sum() < kept[:, 0].size
    with pytest.raises(ValueError, match=r"jaxreg\.variational_dropout: x must have a time axis"):
        jaxreg.variational_dropout(jax.random.key(8), jnp.ones(5), rate=0.5)
    with pytest.raises(ValueError, match="time_axis holds axis 2, out of range"):
        jaxreg.variational_dropout(jax.random.key(8), jnp.ones((2, 5)), rate=0.5, time_axis=2)


def test_recurrent_state_mask_recipe_in_scan():
    """The documented recipe: draw the state mask once, apply it at every scan step."""
    batch, hidden, steps, rate = 8, 16, 12, 0.5
    w = jax.random.normal(jax.random.key(9), (hidden, hidden)) * 0.3
    xs = jax.random.normal(jax.random.key(10), (steps, batch, hidden))
    h0 = jnp.ones((batch, hidden))

    def run(key):
        mask = jaxreg.bernoulli_mask(key, h0.shape, rate=rate)

        def step(h, x_t):
            dropped = jaxreg.apply_mask(h, mask, rate=rate)
            h = jnp.tanh(x_t + dropped @ w)
            return h, dropped

        return jax.lax.scan(step, h0, xs)

    (h, dropped) = jax.jit(run)(jax.random.key(11))
    mask = np.asarray(jaxreg.bernoulli_mask(jax.random.key(11), h0.shape, rate=rate))
    # The same units are zero at every step, and they are exactly the mask's zeros.
    np.testing.assert_array_equal(np.asarray(dropped) != 0, np.broadcast_to(mask, dropped.shape))
    # A plain Python loop with the same mask gives the same final state.
    hl = h0
    for t in range(steps):
        hl = jnp.tanh(xs[t] + jaxreg.apply_mask(hl, mask, rate=rate) @ w)
    np.testing.assert_allclose(h, hl, rtol=1e-5, atol=1e-6)


def _reference(key, x, rate):
    """Default autodiff through the same mask (no custom_jvp)."""
    return jaxreg.apply_mask(x, jaxreg.bernoulli_mask(key, x.shape, rate=rate), rate=rate)


@pytest.mark.parametrize("traced", [False, True], ids=["python", "traced"])
def test_gradients_equal_default_autodiff_for_x_and_rate(traced):
    x = jax.random.normal(jax.random.key(12), (16, 24))
    c = jax.random.normal(jax.random.key(13), (16, 24))
    rate = jnp.float32(0.3) if traced else 0.3

    def loss(f, x, r):
        return jnp.vdot(f(jax.random.key(14), x, r), c)

    ours = jax.grad(loss, argnums=1)(lambda k, x, r: jaxreg.dropout(k, x, rate=r), x, rate)
    ref = jax.grad(loss, argnums=1)(_reference, x, rate)
    np.testing.assert_array_equal(ours, ref)
    if traced:
        g_ours = jax.grad(loss, argnums=2)(lambda k, x, r: jaxreg.dropout(k, x, rate=r), x, rate)
        g_ref = jax.grad(loss, argnums=2)(_reference, x, rate)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-6)


def test_forward_mode_autodiff_works():
    x = jax.random.normal(jax.random.key(15), (4, 5))
    f = lambda x: jaxreg.dropout(jax.random.key(16), x, rate=0.5)  # noqa: E731
    y, y_dot = jax.jvp(f, (x,), (jnp.ones_like(x),))
    np.testing.assert_array_equal(y_dot, jnp.where(y != 0, 2.0, 0.0))
    h = jax.jit(jax.hessian(lambda x: jnp.sum(f(x) ** 2)))(x)  # one program, not op by op
    assert h.shape == (4, 5, 4, 5)


def _hash_count(fn, *args):
    """How many Threefry key schedules the compiled program contains."""
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return hlo.count(str(0x1BD11BDA))


def test_value_and_grad_hashes_once_and_forward_stays_fused():
    x = jnp.ones((256, 256))
    key = jax.random.key(17)
    grad_ours = jax.value_and_grad(lambda x, k: jnp.sum(jaxreg.dropout(k, x, rate=0.3) ** 2))
    grad_ref = jax.value_and_grad(lambda x, k: jnp.sum(_reference(k, x, 0.3) ** 2))
    assert _hash_count(grad_ours, x, key) == 1  # the mask is stored, not recomputed
    assert _hash_count(grad_ref, x, key) == 2  # XLA recomputes it in the backward pass
    forward = jax.jit(lambda k, x: jaxreg.dropout(k, x, rate=0.3)).lower(key, x).compile()
    assert "while" not in forward.as_text()  # plain forward: one fused pass, nothing stored


@st.composite
def _shapes_and_broadcast_dims(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    axes = sorted(draw(st.sets(st.integers(0, len(shape) - 1))))
    # Each shared axis may be named by its positive or its negative index.
    dims = tuple(draw(st.sampled_from([a, a - len(shape)])) for a in axes)
    return shape, axes, dims


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(
    case=_shapes_and_broadcast_dims(),
    rate=st.sampled_from([0.1, 0.5, 0.9]),
    sampler=st.sampled_from(["exact", "fast"]),
)
def test_dropout_is_exact_for_any_shape_and_broadcast_dims(case, rate, sampler):
    """Property test (fixed seed, 10 examples): one compiled program per example."""
    shape, axes, dims = case
    reduced = tuple(1 if i in axes else s for i, s in enumerate(shape))
    noise_shape = tuple(1 if i in axes else None for i in range(len(shape)))
    x = jnp.linspace(0.5, 2.0, math.prod(shape), dtype=jnp.float32).reshape(shape)

    @jax.jit
    def run(x):
        def key():  # a fresh key for each draw (the key-reuse checker is on)
            return jax.random.key(0)

        kw = {"rate": rate, "sampler": sampler}
        y = jaxreg.dropout(key(), x, broadcast_dims=dims, **kw)
        y_noise = jaxreg.dropout(key(), x, noise_shape=noise_shape, **kw)
        m = jaxreg.bernoulli_mask(key(), shape, broadcast_dims=dims, **kw)
        bernoulli = jax.random.bernoulli(key(), 1 - rate, reduced)
        return y, y_noise, m, jaxreg.apply_mask(x, m, **kw), bernoulli

    y, y_noise, m, applied, bernoulli = map(np.asarray, run(x))
    np.testing.assert_array_equal(y, applied)  # dropout is apply_mask of bernoulli_mask
    np.testing.assert_array_equal(y_noise, y)  # noise_shape is the Keras spelling
    # The mask is shared along the broadcast axes and drawn at the reduced shape.
    np.testing.assert_array_equal(m, np.broadcast_to(m[tuple(slice(r) for r in reduced)], shape))
    if sampler == "exact":
        np.testing.assert_array_equal(m, np.broadcast_to(bernoulli, shape))
    # Every output is 0 (dropped) or x / keep (kept).
    np.testing.assert_array_equal(y != 0, m)
    keep = fast_keep(rate) if sampler == "fast" else 1 - rate
    np.testing.assert_allclose(y[m], np.asarray(x)[m] / np.float32(keep), rtol=1e-6)


_f16_traced = jax.jit(lambda k, x, r: jaxreg.dropout(k, x, rate=r))


@pytest.mark.parametrize("traced", [False, True])
def test_float16_near_rate_one_gives_exact_zeros_not_nan(traced):
    # 1 / keep overflows float16 at rate 0.99999, and XLA turns x / keep into
    # x * (1 / keep): dropped units used to be 0 * inf = NaN, kept ones inf.
    rate = 0.99999
    n = 2**21
    mask = np.asarray(jaxreg.bernoulli_mask(jax.random.key(40), (n,), rate=rate))
    assert 0 < mask.sum() < 100  # about 21 kept units
    q = float(jaxreg._rate.keep_probability(rate))  # what kept units are divided by
    for value in (2.0, 0.25):  # 2 / q does not fit in float16 (inf), 0.25 / q does
        x = jnp.full((n,), value, jnp.float16)
        if traced:
            y = np.asarray(_f16_traced(jax.random.key(40), x, jnp.float32(rate)))
        else:
            y = np.asarray(jaxreg.dropout(jax.random.key(40), x, rate=rate))
        assert y.dtype == np.float16 and not np.isnan(y).any()
        np.testing.assert_array_equal(y[~mask], 0.0)
        with np.errstate(over="ignore"):
            expected = np.float16(value / q)  # float16(24966.0) or inf
        np.testing.assert_array_equal(y[mask], expected)
        assert np.isfinite(expected) == (value == 0.25)
