"""DropBlock: block structure, realised drop fraction, normalisation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from stats import assert_binomial, assert_mean


def _coverage(size, block):
    """How many valid block corners cover each position along one axis."""
    valid = size - block + 1
    return np.array([sum(1 for c in range(valid) if c <= p < c + block) for p in range(size)])


@pytest.mark.slow
def test_realised_drop_fraction_matches_exact_expectation():
    rate, bs, s = 0.2, 3, 12
    gamma = rate / bs**2 * s**2 / (s - bs + 1) ** 2
    cov = np.outer(_coverage(s, bs), _coverage(s, bs))
    expected = float(np.mean(1 - (1 - gamma) ** cov))
    x = jnp.ones((13_000, s, s, 8))
    y = np.asarray(jaxreg.dropblock(jax.random.key(0), x, rate=rate, block_size=bs))
    # Per-map dropped fractions are i.i.d. (one value per independent map): 5-sigma test.
    dropped = (y == 0).mean(axis=(1, 2)).ravel()
    assert_mean(dropped, expected)
    assert expected < rate  # overlapping blocks make the realised fraction lower


def test_dropped_regions_are_unions_of_full_blocks():
    bs = 3
    y = np.asarray(
        jaxreg.dropblock(jax.random.key(1), jnp.ones((64, 10, 11, 4)), rate=0.3, block_size=bs)
    )
    dropped = y == 0
    # A dropped pixel must lie in some fully dropped, fully inside bs x bs window.
    windows = np.lib.stride_tricks.sliding_window_view(dropped, (bs, bs), axis=(1, 2)).all(
        axis=(-2, -1)
    )
    covered = np.zeros_like(dropped)
    for i in range(bs):
        for j in range(bs):
            covered[:, i : i + windows.shape[1], j : j + windows.shape[2]] |= windows
    np.testing.assert_array_equal(covered, dropped)
    assert dropped.any() and not dropped.all()


def test_normalised_by_kept_fraction():
    x = jnp.ones((8, 9, 9, 3))
    y = np.asarray(jaxreg.dropblock(jax.random.key(2), x, rate=0.4, block_size=2))
    kept = y != 0
    np.testing.assert_allclose(y[kept], kept.size / kept.sum(), rtol=1e-6)
    np.testing.assert_allclose(y.sum(), x.size, rtol=1e-5)


@pytest.mark.slow
def test_block_size_one_has_dropout_statistics():
    y = np.asarray(
        jaxreg.dropblock(jax.random.key(3), jnp.ones((100, 100, 100, 1)), rate=0.3, block_size=1)
    )
    assert_binomial(int((y != 0).sum()), y.size, 0.7)


def test_shared_channels_and_channels_first_and_1d_3d():
    y = np.asarray(
        jaxreg.dropblock(
            jax.random.key(4), jnp.ones((4, 9, 9, 5)), rate=0.3, block_size=3, shared_channels=True
        )
    )
    assert np.all((y != 0) == (y[..., :1] != 0))
    cf = jaxreg.dropblock(
        jax.random.key(5), jnp.ones((4, 5, 9, 9)), rate=0.3, block_size=3, channel_axis=1
    )
    assert cf.shape == (4, 5, 9, 9)
    y1 = np.asarray(
        jaxreg.dropblock(jax.random.key(6), jnp.ones((64, 20, 2)), rate=0.3, block_size=4)
    )
    runs = np.diff(
        np.concatenate([np.zeros((64, 1, 2)), y1 == 0, np.zeros((64, 1, 2))], 1).astype(int), axis=1
    )
    lengths = (
        np.nonzero(runs.transpose(0, 2, 1).ravel() == -1)[0]
        - np.nonzero(runs.transpose(0, 2, 1).ravel() == 1)[0]
    )
    assert lengths.min() >= 4  # every dropped run is at least one block long
    y3 = jaxreg.dropblock(
        jax.random.key(7), jnp.ones((2, 6, 6, 6, 3)), rate=0.3, block_size=(2, 3, 2)
    )
    assert y3.shape == (2, 6, 6, 6, 3)


def test_dropblock_errors():
    key = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"jaxreg\.dropblock: block_size 8 is larger than the feature map \(5, 5\)"
    ):
        jaxreg.dropblock(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=8)
    with pytest.raises(ValueError, match="x must be \\(batch, \\*spatial, channels\\)"):
        jaxreg.dropblock(key, jnp.ones((2, 5)), rate=0.1, block_size=1)
    with pytest.raises(ValueError, match="channel_axis must not be 0"):
        jaxreg.dropblock(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=2, channel_axis=0)
    with pytest.raises(TypeError, match="block_size must be an int or 2 ints"):
        jaxreg.dropblock(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=(2, 2, 2))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        jaxreg.dropblock(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=0)
