"""Gaussian and alpha dropout: exact noise and first two moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from jaxreg._noise import ALPHA_PRIME
from stats import assert_binomial, assert_mean, assert_variance

N = 1_000_000


def test_gaussian_noise_is_jax_normal_scaled():
    rate = 0.3
    y = jaxreg.gaussian_dropout(jax.random.key(0), jnp.ones((64, 33)), rate=rate)
    eps = jax.random.normal(jax.random.key(0), (64, 33))
    np.testing.assert_allclose(y, 1 + np.sqrt(rate / (1 - rate)) * eps, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_dropout_moments_match_bernoulli_dropout(rate):
    y = np.asarray(jaxreg.gaussian_dropout(jax.random.key(1), jnp.ones(N), rate=rate))
    assert_mean(y, 1.0)
    assert_variance(y, rate / (1 - rate))
    # Inverted Bernoulli dropout has the same two moments.
    b = np.asarray(jaxreg.dropout(jax.random.key(2), jnp.ones(N), rate=rate))
    assert_mean(b, 1.0)
    assert_variance(b, rate / (1 - rate))


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_zero_mean_unit_variance(rate):
    x = jax.random.normal(jax.random.key(3), (N,))
    y = np.asarray(jaxreg.alpha_dropout(jax.random.key(4), x, rate=rate), np.float64)
    assert_mean(y, 0.0)
    assert_variance(y, 1.0)


@pytest.mark.slow
def test_alpha_dropout_values_and_keep_fraction():
    rate = 0.2
    q = 1 - rate
    a = (q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5
    b = -a * (1 - q) * ALPHA_PRIME
    x = jax.random.normal(jax.random.key(5), (N,))
    y = np.asarray(jaxreg.alpha_dropout(jax.random.key(6), x, rate=rate))
    keep = np.asarray(jaxreg.bernoulli_mask(jax.random.key(6), (N,), rate=rate))
    np.testing.assert_allclose(
        y, np.where(keep, a * np.asarray(x) + b, a * ALPHA_PRIME + b), rtol=1e-5, atol=1e-6
    )
    assert_binomial(int(keep.sum()), N, q)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_gaussian_gradient_with_respect_to_traced_rate_is_finite(rate):
    x = jnp.linspace(0.5, 2.0, 64)
    g = jax.grad(lambda r: jnp.sum(jaxreg.gaussian_dropout(jax.random.key(7), x, rate=r) ** 2))(
        jnp.float32(rate)
    )
    assert bool(jnp.isfinite(g))


def _alpha_affine(rate):
    q = 1 - rate
    a = (q + ALPHA_PRIME**2 * q * (1 - q)) ** -0.5
    return a, -a * (1 - q) * ALPHA_PRIME


@pytest.mark.parametrize(
    "share", [{"noise_shape": (None, 1, 6)}, {"broadcast_dims": (1,)}, {"broadcast_dims": -2}]
)
def test_alpha_dropout_shared_mask_equals_broadcast_bernoulli_mask(share):
    rate = 0.3
    a, b = _alpha_affine(rate)
    x = jax.random.normal(jax.random.key(8), (50, 7, 6))
    y = np.asarray(jaxreg.alpha_dropout(jax.random.key(9), x, rate=rate, **share))
    keep = np.asarray(
        jaxreg.bernoulli_mask(jax.random.key(9), x.shape, rate=rate, broadcast_dims=(1,))
    )
    np.testing.assert_allclose(
        y, np.where(keep, a * np.asarray(x) + b, a * ALPHA_PRIME + b), rtol=1e-5, atol=1e-6
    )
    # Shared slices: along axis 1 a unit is dropped everywhere or nowhere.
    dropped = np.isclose(y, a * ALPHA_PRIME + b, rtol=0, atol=1e-6)
    assert np.all(dropped == dropped[:, :1, :])
    assert dropped.any() and not dropped.all()


def test_alpha_dropout_noise_shape_keeps_selu_moments_unit_by_unit():
    # Rows share one draw across 4 columns; each column on its own is N i.i.d. units.
    rate = 0.2
    x = jax.random.normal(jax.random.key(10), (N, 4))
    y = np.asarray(
        jaxreg.alpha_dropout(jax.random.key(11), x, rate=rate, noise_shape=(None, 1)), np.float64
    )
    for column in (0, 3):
        assert_mean(y[:, column], 0.0)
        assert_variance(y[:, column], 1.0)
    a, b = _alpha_affine(rate)
    rows_dropped = np.isclose(y, a * ALPHA_PRIME + b, rtol=0, atol=1e-6).all(axis=1)
    assert_binomial(int(rows_dropped.sum()), N, rate)


def test_alpha_dropout_moment_check_rejects_a_mismatched_correction():
    # Negative control: a mask drawn at rate 0.2 corrected with a, b for rate 0.22.
    x = jax.random.normal(jax.random.key(12), (N,))
    keep = np.asarray(jaxreg.bernoulli_mask(jax.random.key(13), (N,), rate=0.2))
    a, b = _alpha_affine(0.22)
    wrong = a * np.where(keep, np.asarray(x, np.float64), ALPHA_PRIME) + b
    with pytest.raises(AssertionError):
        assert_mean(wrong, 0.0)
    a, b = _alpha_affine(0.2)
    assert_mean(a * np.where(keep, np.asarray(x, np.float64), ALPHA_PRIME) + b, 0.0)


def test_alpha_dropout_noise_shape_errors():
    x = jnp.ones((4, 5))
    with pytest.raises(ValueError, match=r"jaxreg\.alpha_dropout: noise_shape must have one"):
        jaxreg.alpha_dropout(jax.random.key(0), x, rate=0.2, noise_shape=(4, 2))
    with pytest.raises(ValueError, match=r"jaxreg\.alpha_dropout: pass broadcast_dims or"):
        jaxreg.alpha_dropout(
            jax.random.key(0), x, rate=0.2, noise_shape=(4, 1), broadcast_dims=(1,)
        )
    # Validated even when the rate decides the result.
    with pytest.raises(ValueError, match=r"noise_shape must have one"):
        jaxreg.alpha_dropout(None, x, rate=0.0, noise_shape=(3, 5))
