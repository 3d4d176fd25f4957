"""gaussian_noise: exact noise, moments, and the stddev counterparts of the rate-only
generic tests (test_conformance.py runs every other generic test on it via ops.OPS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from ops import OPS
from stats import assert_mean, assert_variance

N = 1_000_000
stddev_ops = pytest.mark.parametrize("op", [op for op in OPS if op.hyper == "stddev"], ids=str)


def _x(op, dtype=jnp.float32):
    return jax.random.uniform(jax.random.key(1), op.shape, jnp.float32, 0.5, 2.0).astype(dtype)


def test_noise_is_jax_normal_scaled_and_added():
    x = jnp.linspace(-1.0, 1.0, 64 * 33).reshape(64, 33)
    y = jaxreg.gaussian_noise(jax.random.key(0), x, stddev=0.3)
    eps = jax.random.normal(jax.random.key(0), (64, 33))
    np.testing.assert_allclose(y, x + 0.3 * eps, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stddev", [0.05, 1.0, 3.0])
def test_moments(stddev):
    y = np.asarray(jaxreg.gaussian_noise(jax.random.key(2), jnp.full(N, 2.0), stddev=stddev))
    assert_mean(y, 2.0)
    assert_variance(y, stddev**2)
    # Negative control: the variance of another scale is rejected at this sample size.
    with pytest.raises(AssertionError):
        assert_variance(y, (1.01 * stddev) ** 2)


def test_half_precision_rounds_once():
    x = jnp.full((4096,), 1.0, jnp.bfloat16)
    y = jaxreg.gaussian_noise(jax.random.key(3), x, stddev=0.01)
    wide = 1.0 + 0.01 * jax.random.normal(jax.random.key(3), x.shape)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(y, wide.astype(jnp.bfloat16))


@stddev_ops
def test_python_stddev_zero_needs_no_key_any_other_does(op):
    x = _x(op)
    assert op.call(None, x, 0.0) is x
    for stddev in (1.0, 0.5, jnp.float32(0.0)):
        with pytest.raises(TypeError, match=r"^jaxreg\.\w+: key is None, but stddev=.* draws"):
            op.call(None, x, stddev)
    with pytest.raises(TypeError, match=r"key is None, but stddev=a traced value draws"):
        jax.jit(lambda s: op.call(None, x, s))(jnp.float32(0.5))


@stddev_ops
@pytest.mark.parametrize("traced", [False, True], ids=["python", "traced"])
def test_large_stddev_is_valid_with_unit_gradient(op, traced):
    x = _x(op)
    stddev = jnp.float32(1e3) if traced else 1e3
    y = op.call(jax.random.key(4), x, stddev)
    assert bool(jnp.all(jnp.isfinite(y))) and float(jnp.max(jnp.abs(y - x))) > 10.0
    g = jax.grad(lambda x: jnp.sum(op.call(jax.random.key(4), x, stddev)))(x)
    np.testing.assert_array_equal(g, jnp.ones_like(x))
    gs = jax.grad(lambda s: jnp.sum(op.call(jax.random.key(4), x, s)))(jnp.float32(0.0))
    np.testing.assert_allclose(gs, jnp.sum(jax.random.normal(jax.random.key(4), x.shape)), 1e-5)


@stddev_ops
@pytest.mark.parametrize(
    "stddev, match",
    [
        (-0.1, r"stddev must be >= 0, got -0\.1"),
        (float("nan"), r"stddev must be >= 0, got nan"),
        (float("inf"), r"stddev must be finite .*, got inf"),
        (np.float32(-2.0), r"stddev must be >= 0"),
    ],
)
def test_bad_python_stddev_is_a_clear_error(op, stddev, match):
    with pytest.raises(ValueError, match=r"^jaxreg\.\w+: " + match):
        op.call(jax.random.key(5), _x(op), stddev)


@stddev_ops
def test_bad_concrete_array_stddev_is_a_clear_error(op):
    with pytest.raises(ValueError, match=r"stddev must be >= 0"):
        op.call(jax.random.key(5), _x(op), jnp.float32(-1.5))
    with pytest.raises(ValueError, match=r"stddev must be finite"):
        op.call(jax.random.key(5), _x(op), jnp.float32(jnp.inf))
    with pytest.raises(ValueError, match=r"stddev must be a scalar"):
        op.call(jax.random.key(5), _x(op), jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match=r"stddev must be a number >= 0 or an array"):
        op.call(jax.random.key(5), _x(op), "0.1")


@stddev_ops
@pytest.mark.parametrize("stddev", [-0.5, float("nan"), float("inf")])
def test_bad_traced_stddev_gives_nan(op, stddev):
    y = jax.jit(op.call)(jax.random.key(6), _x(op), jnp.float32(stddev))
    assert bool(jnp.all(jnp.isnan(y)))
