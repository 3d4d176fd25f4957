"""drop_path modes and the stochastic-depth schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg


def test_row_mode_drops_whole_examples():
    y = np.asarray(jaxreg.drop_path(jax.random.key(0), jnp.ones((256, 4, 5)), rate=0.5))
    kept = (y != 0).reshape(256, -1)
    assert np.all(kept.all(axis=1) | (~kept).all(axis=1))
    assert 0 < kept[:, 0].sum() < 256
    np.testing.assert_array_equal(y[kept[:, 0]], 2.0)


def test_batch_mode_drops_everything_or_nothing():
    outs = [
        np.asarray(jaxreg.drop_path(jax.random.key(s), jnp.ones((8, 3)), rate=0.5, mode="batch"))
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
    with pytest.raises(
        ValueError, match=r"jaxreg\.drop_path: mode must be one of 'row', 'batch', got 'col'"
    ):
        jaxreg.drop_path(jax.random.key(0), jnp.ones((2, 2)), rate=0.5, mode="col")
    with pytest.raises(ValueError, match="x must have a batch axis"):
        jaxreg.drop_path(jax.random.key(0), jnp.float32(1.0), rate=0.5)


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
