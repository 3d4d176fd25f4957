"""bernoulli_mask / apply_mask: exact equality with jax.random.bernoulli and flax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxreg
from stats import assert_binomial, assert_uniform_counts

RATES = [0.0, 1e-7, 0.1, 0.25, 0.3, 0.5, 0.77, 0.9, 0.999999, 1.0]


@pytest.mark.parametrize("rate", RATES)
def test_mask_equals_jax_random_bernoulli_python_rate(rate):
    got = jaxreg.bernoulli_mask(jax.random.key(0), (37, 41), rate=rate)
    expected = jax.random.bernoulli(jax.random.key(0), 1.0 - rate, (37, 41))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rate", RATES)
def test_mask_equals_jax_random_bernoulli_traced_rate(rate):
    r = jnp.float32(rate)
    got = jax.jit(lambda k, r: jaxreg.bernoulli_mask(k, (37, 41), rate=r))(jax.random.key(1), r)
    expected = jax.random.bernoulli(jax.random.key(1), 1.0 - r, (37, 41))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dims", [(0,), (1,), (0, 2), (-1,)])
def test_broadcast_mask_is_bernoulli_at_reduced_shape(dims):
    shape = (5, 6, 7)
    got = jaxreg.bernoulli_mask(jax.random.key(2), shape, rate=0.4, broadcast_dims=dims)
    reduced = [1 if i in {d % 3 for d in dims} else s for i, s in enumerate(shape)]
    expected = jax.random.bernoulli(jax.random.key(2), 0.6, reduced)
    np.testing.assert_array_equal(got, jnp.broadcast_to(expected, shape))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.77])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("dims", [(), (0,), (1, 2)])
def test_dropout_output_equals_flax_linen_and_nnx(rate, dtype, dims):
    x = jax.random.normal(jax.random.key(3), (6, 7, 8)).astype(dtype)
    key = jax.random.key(4)
    ours = jaxreg.dropout(key, x, rate=rate, broadcast_dims=dims)
    linen = nn.Dropout(rate, broadcast_dims=dims, deterministic=False).apply(
        {}, x, rng=jax.random.key(4)
    )
    layer = nnx.Dropout(rate, broadcast_dims=dims, rngs=nnx.Rngs(0))
    nnx_out = layer(x, deterministic=False, rngs=nnx.Rngs(dropout=jax.random.key(4)))
    nnx_key = nnx.Rngs(dropout=jax.random.key(4)).dropout()
    np.testing.assert_array_equal(ours, linen)
    np.testing.assert_array_equal(
        jaxreg.dropout(nnx_key, x, rate=rate, broadcast_dims=dims), nnx_out
    )
    assert ours.dtype == dtype


def test_dropout_equals_mask_then_apply():
    x = jax.random.normal(jax.random.key(5), (16, 9))
    for dims in [(), (0,)]:
        y = jaxreg.dropout(jax.random.key(6), x, rate=0.35, broadcast_dims=dims)
        m = jaxreg.bernoulli_mask(jax.random.key(6), x.shape, rate=0.35, broadcast_dims=dims)
        np.testing.assert_array_equal(y, jaxreg.apply_mask(x, m, rate=0.35))


@pytest.mark.slow
def test_broadcast_slices_all_kept_or_all_dropped_and_chi_square_uniform():
    # Mask shared along axis 1: each row is all kept or all dropped.
    x = jnp.ones((200_000, 8))
    y = np.asarray(jaxreg.dropout(jax.random.key(7), x, rate=0.5, broadcast_dims=(1,)))
    row_kept = (y != 0).sum(axis=1)
    assert set(np.unique(row_kept)) <= {0, 8}
    kept = row_kept == 8
    assert_binomial(int(kept.sum()), kept.size, 0.5)
    # Kept rows are spread uniformly over 64 bins of row index.
    assert_uniform_counts(np.bincount(np.nonzero(kept)[0] * 64 // kept.size, minlength=64))


@pytest.mark.slow
def test_mask_keep_positions_are_uniform_over_positions():
    m = np.asarray(jaxreg.bernoulli_mask(jax.random.key(8), (4096, 512), rate=0.5))
    assert_uniform_counts(m.sum(axis=0))  # every column keeps about half
    assert_uniform_counts(m.reshape(-1, 8).sum(axis=0))


def test_bernoulli_mask_errors():
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"jaxreg\.bernoulli_mask: rate must be in \[0, 1\], got 2"
    ):
        jaxreg.bernoulli_mask(key, (3,), rate=2)
    with pytest.raises(ValueError, match="broadcast_dims holds axis 3, out of range .* rank 2"):
        jaxreg.bernoulli_mask(key, (3, 4), rate=0.5, broadcast_dims=(3,))
    with pytest.raises(ValueError, match="shape must be non-negative"):
        jaxreg.bernoulli_mask(key, (-1,), rate=0.5)
    with pytest.raises(TypeError, match="rate must be a number"):
        jaxreg.bernoulli_mask(key, (3,), rate="0.5")
    with pytest.raises(TypeError, match="rate must be a number"):
        jaxreg.bernoulli_mask(key, (3,), rate=True)


def test_apply_mask_errors():
    x = jnp.ones((3, 4))
    with pytest.raises(TypeError, match=r"jaxreg\.apply_mask: mask must be a bool array"):
        jaxreg.apply_mask(x, jnp.ones((3, 4)), rate=0.5)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 4\) does not broadcast"):
        jaxreg.apply_mask(x, jnp.ones((2, 4), bool), rate=0.5)
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3, 4\) does not broadcast"):
        jaxreg.apply_mask(x, jnp.ones((2, 3, 4), bool), rate=0.5)


def test_apply_mask_broadcasts_a_smaller_mask():
    x = jnp.arange(1.0, 7.0).reshape(2, 3)
    y = jaxreg.apply_mask(x, jnp.array([True, False, True]), rate=0.5)
    np.testing.assert_array_equal(y, [[2.0, 0.0, 6.0], [8.0, 0.0, 12.0]])


@pytest.mark.slow
def test_fast_mode_quantizes_the_rate_and_stays_unbiased():
    n = 4_000_000
    y = np.asarray(jaxreg.dropout(jax.random.key(7), jnp.ones(n), rate=0.1, sampler="fast"))
    kept = int((y != 0).sum())
    assert_binomial(kept, n, 230 / 256)  # round(0.9 * 256) = 230
    with pytest.raises(AssertionError):  # the quantization is visible at this n
        assert_binomial(kept, n, 0.9)
    np.testing.assert_array_equal(np.unique(y[y != 0]), np.float32(256 / 230))
    from stats import assert_mean

    assert_mean(y, 1.0)


def test_fast_mask_and_apply_compose_like_dropout():
    x = jax.random.normal(jax.random.key(8), (16, 40))
    y = jaxreg.dropout(jax.random.key(9), x, rate=0.3, sampler="fast")
    m = jaxreg.bernoulli_mask(jax.random.key(9), x.shape, rate=0.3, sampler="fast")
    np.testing.assert_array_equal(y, jaxreg.apply_mask(x, m, rate=0.3, sampler="fast"))
    with pytest.raises(
        ValueError,
        match=r"jaxreg\.dropout: sampler must be one of 'exact', 'fast', got 'fastest'",
    ):
        jaxreg.dropout(jax.random.key(10), x, rate=0.3, sampler="fastest")
    with pytest.raises(ValueError, match=r"jaxreg\.apply_mask: sampler must be"):
        jaxreg.apply_mask(x, m, rate=0.3, sampler=None)


@pytest.mark.slow
def test_python_and_array_rates_resolve_the_keep_probability_as_documented():
    # 1 - 0.00485 rounds differently in float64-then-float32 (Python rate, like flax)
    # and in float32 (array rate, like jax.random.bernoulli with an array p).
    rate = 0.00485
    shape = (4096, 4096)
    python = jaxreg.bernoulli_mask(jax.random.key(11), shape, rate=rate)
    array = jaxreg.bernoulli_mask(jax.random.key(11), shape, rate=jnp.float32(rate))
    np.testing.assert_array_equal(
        python, jax.random.bernoulli(jax.random.key(11), 1.0 - rate, shape)
    )
    np.testing.assert_array_equal(
        array, jax.random.bernoulli(jax.random.key(11), 1.0 - jnp.float32(rate), shape)
    )
    assert np.float32(1.0 - rate) != np.float32(1.0) - np.float32(rate)
