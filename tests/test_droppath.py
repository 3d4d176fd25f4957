"""drop_path modes and the stochastic-depth schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg


def test_per_example_drops_whole_examples():
    y = np.asarray(jaxreg.drop_path(jax.random.key(0), jnp.ones((256, 4, 5)), rate=0.5))
    kept = (y != 0).reshape(256, -1)
    assert np.all(kept.all(axis=1) | (~kept).all(axis=1))
    assert 0 < kept[:, 0].sum() < 256
    np.testing.assert_array_equal(y[kept[:, 0]], 2.0)


def test_per_batch_drops_everything_or_nothing():
    outs = [
        np.asarray(
            jaxreg.drop_path(jax.random.key(s), jnp.ones((8, 3)), rate=0.5, per_example=False)
        )
        for s in range(16)
    ]
    for y in outs:
        assert np.all(y == 0) or np.all(y == 2.0)
    assert any(np.all(y == 0) for y in outs) and any(np.all(y == 2.0) for y in outs)


def test_non_inverted_keeps_values_and_residual_use():
    x = jnp.arange(1.0, 9.0).reshape(4, 2)
    y = jaxreg.drop_path(jax.random.key(1), x, rate=0.5, inverted=False)
    kept = np.asarray(y != 0)
    np.testing.assert_array_equal(np.asarray(y)[kept], np.asarray(x)[kept])


def test_drop_path_errors():
    with pytest.raises(TypeError, match=r"jaxreg\.drop_path: per_example must be a bool"):
        jaxreg.drop_path(jax.random.key(0), jnp.ones((2, 2)), rate=0.5, per_example="row")
    with pytest.raises(ValueError, match="x must have a batch axis"):
        jaxreg.drop_path(jax.random.key(0), jnp.float32(1.0), rate=0.5)
    scalar = jaxreg.drop_path(jax.random.key(0), jnp.float32(1.0), rate=0.5, per_example=False)
    assert scalar.shape == ()


def test_drop_path_rates_paper_and_timm_conventions():
    np.testing.assert_allclose(jaxreg.drop_path_rates(0.2, 4), [0.05, 0.1, 0.15, 0.2])
    np.testing.assert_allclose(
        jaxreg.drop_path_rates(0.3, 4, start_at_zero=True), [0, 0.1, 0.2, 0.3]
    )
    assert jaxreg.drop_path_rates(0.3, 1, start_at_zero=True) == (0.0,)
    assert isinstance(jaxreg.drop_path_rates(0.2, 3)[0], float)
    traced = jax.jit(lambda m: jaxreg.drop_path_rates(m, 4))(jnp.float32(0.4))
    np.testing.assert_allclose(traced, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)
    with pytest.raises(ValueError, match=r"jaxreg\.drop_path_rates: depth must be >= 1, got 0"):
        jaxreg.drop_path_rates(0.1, 0)
    with pytest.raises(ValueError, match=r"max_rate must be in \[0, 1\], got 1.2"):
        jaxreg.drop_path_rates(1.2, 3)
    with pytest.raises(TypeError, match="depth must be a Python int"):
        jaxreg.drop_path_rates(0.1, 3.0)


def test_drop_path_rates_always_returns_a_tuple():
    python = jaxreg.drop_path_rates(0.2, 3)
    assert type(python) is tuple and all(type(r) is float for r in python)
    array = jaxreg.drop_path_rates(jnp.float32(0.2), 3)
    assert type(array) is tuple and len(array) == 3
    assert all(r.shape == () and r.dtype == jnp.float32 for r in array)
    traced = jax.jit(lambda m: jaxreg.drop_path_rates(m, 3))(jnp.float32(0.2))
    assert type(traced) is tuple
    np.testing.assert_allclose(array, python, rtol=1e-6)
    # An array rate of 0 is not short-circuited (it is an array), a Python one is.
    assert jaxreg.drop_path_rates(0.0, 2) == (0.0, 0.0)


_jit_rates = jax.jit(lambda m: jnp.stack(jaxreg.drop_path_rates(m, 3, start_at_zero=True)))


@pytest.mark.parametrize("max_rate", [1.5, -0.5, float("inf"), float("nan")])
def test_jit_drop_path_rates_with_invalid_traced_max_rate_is_nan(max_rate):
    rates = _jit_rates(jnp.float32(max_rate))
    assert bool(jnp.all(jnp.isnan(rates)))  # the first rate too (0 * max_rate)
    grad = jax.grad(lambda m: jnp.sum(jnp.stack(jaxreg.drop_path_rates(m, 2))))(
        jnp.float32(max_rate)
    )
    assert bool(jnp.isnan(grad))
    # Control: a valid traced rate gives finite rates.
    assert bool(jnp.all(jnp.isfinite(_jit_rates(jnp.float32(0.5)))))
