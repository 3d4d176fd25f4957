"""DropBlock: block structure, realised drop fraction, normalisation, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from jaxreg._dropblock import calibrated_seed_rate, expected_drop_fraction
from stats import assert_binomial, assert_mean


def _coverage(size, block):
    """How many valid block corners cover each position along one axis."""
    valid = size - block + 1
    return np.array([sum(1 for c in range(valid) if c <= p < c + block) for p in range(size)])


@pytest.mark.slow
def test_paper_gamma_realised_drop_fraction_matches_exact_expectation():
    rate, bs, s = 0.2, 3, 12
    gamma = rate / bs**2 * s**2 / (s - bs + 1) ** 2
    cov = np.outer(_coverage(s, bs), _coverage(s, bs))
    expected = float(np.mean(1 - (1 - gamma) ** cov))
    x = jnp.ones((13_000, s, s, 8))
    y = np.asarray(
        jaxreg.drop_block(jax.random.key(0), x, rate=rate, block_size=bs, calibration="paper")
    )
    # Per-map dropped fractions are i.i.d. (one value per independent map): 5-sigma test.
    dropped = (y == 0).mean(axis=(1, 2)).ravel()
    assert_mean(dropped, expected)
    assert expected < rate  # overlapping blocks make the realised fraction lower


def test_dropped_regions_are_unions_of_full_blocks():
    bs = 3
    y = np.asarray(
        jaxreg.drop_block(jax.random.key(1), jnp.ones((64, 10, 11, 4)), rate=0.3, block_size=bs)
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
    y = np.asarray(jaxreg.drop_block(jax.random.key(2), x, rate=0.4, block_size=2))
    kept = y != 0
    np.testing.assert_allclose(y[kept], kept.size / kept.sum(), rtol=1e-6)
    np.testing.assert_allclose(y.sum(), x.size, rtol=1e-5)


@pytest.mark.slow
def test_block_size_one_has_dropout_statistics():
    y = np.asarray(
        jaxreg.drop_block(jax.random.key(3), jnp.ones((100, 100, 100, 1)), rate=0.3, block_size=1)
    )
    assert_binomial(int((y != 0).sum()), y.size, 0.7)


@pytest.mark.parametrize("calibration", ["exact", "paper"])
@pytest.mark.parametrize("rate", [0.25, "traced"])
def test_block_size_one_draws_dropouts_mask(calibration, rate):
    # With one-unit blocks the seeds are the dropped units: the same keep-mask as
    # dropout ("exact": the solve lands on dropout's own threshold).
    rate = jnp.float32(0.3) if rate == "traced" else rate
    shape = (4, 17, 19, 3)
    y = jaxreg.drop_block(
        jax.random.key(30), jnp.ones(shape), rate=rate, block_size=1, calibration=calibration
    )
    mask = jaxreg.bernoulli_mask(jax.random.key(30), shape, rate=rate)
    np.testing.assert_array_equal(np.asarray(y) != 0, np.asarray(mask))


def _map_drop_fractions(key, shape, rate, block, calibration, chunks=1, channel_axis=-1):
    """Dropped fraction of every (example, channel) map: i.i.d. samples, one per map."""
    spatial = (1, 2, 3)[: len(shape) - 2] if channel_axis == -1 else tuple(range(2, len(shape)))

    @jax.jit
    def fractions(key):
        y = jaxreg.drop_block(
            key,
            jnp.ones(shape),
            rate=rate,
            block_size=block,
            calibration=calibration,
            channel_axis=channel_axis,
        )
        return jnp.mean(y == 0, axis=spatial)

    keys = jax.random.split(key, chunks)
    return np.concatenate([np.asarray(fractions(k)).ravel() for k in keys])


# (input shape, block, rate, chunks): at least 1e5 independent maps each.
CALIBRATION_CASES = [
    ((2_000, 16, 16, 50), 5, 0.3, 1),  # the 16x16 case; paper gamma: 0.250
    ((5_000, 24, 24, 20), 7, 0.1, 1),  # the paper's block size on a small map
    ((2_000, 40, 50), 6, 0.2, 1),  # 1-D maps
    ((1_000, 7, 8, 6, 100), (3, 2, 4), 0.15, 1),  # 3-D maps, uneven blocks
    ((5_000, 20, 12, 9), (4, 2), 0.5, 1),  # channels-first, uneven blocks
]


@pytest.mark.parametrize("shape, block, rate, chunks", CALIBRATION_CASES)
def test_exact_calibration_drops_rate_in_expectation(shape, block, rate, chunks):
    channel_axis = 1 if len(shape) == 4 and shape[1] == 20 else -1
    got = _map_drop_fractions(jax.random.key(31), shape, rate, block, "exact", chunks, channel_axis)
    assert got.size >= 100_000
    assert_mean(got, rate)
    # Negative control: the paper's gamma realises a lower fraction, and the same
    # 5-sigma test rejects it against the rate (while it matches its own expectation).
    paper = _map_drop_fractions(
        jax.random.key(31), shape, rate, block, "paper", chunks, channel_axis
    )
    with pytest.raises(AssertionError):
        assert_mean(paper, rate)
    spatial = shape[1:-1] if channel_axis == -1 else shape[2:]
    blocks = (block,) * len(spatial) if isinstance(block, int) else block
    valid = np.prod([s - b + 1 for s, b in zip(spatial, blocks, strict=True)])
    gamma = rate * np.prod(spatial) / (np.prod(blocks) * valid)
    assert_mean(paper, expected_drop_fraction(gamma, spatial, blocks))


def test_calibrated_solution_is_exact_to_one_seed_step():
    # The solve's float32 answer against the float64 expectation, for many rates.
    sizes, blocks = (56, 56), (7, 7)
    rates = np.linspace(0.0, 1.0, 41, dtype=np.float32)
    seed = jax.jit(jax.vmap(lambda r: calibrated_seed_rate(r, sizes, blocks)))(rates)
    step = 2.0**-23
    for r, g in zip(rates, np.asarray(seed, np.float64), strict=True):
        low = expected_drop_fraction(g, sizes, blocks)
        high = expected_drop_fraction(min(g + step, 1.0), sizes, blocks)
        assert low <= r + 1e-6 and (high >= r - 1e-6 or g == 1.0), (r, g, low, high)
    assert float(seed[0]) == 0.0 and float(seed[-1]) == 1.0


def test_python_traced_and_vmapped_rates_give_the_same_masks():
    x = jnp.ones((3, 11, 13, 2))

    def call(rate):
        return jaxreg.drop_block(jax.random.key(32), x, rate=rate, block_size=(3, 4))

    rates = [0.05, 0.3, 0.7, 0.95]
    batched = jax.jit(jax.vmap(call))(jnp.array(rates, jnp.float32))
    for i, r in enumerate(rates):
        np.testing.assert_array_equal(call(r), batched[i])
        np.testing.assert_array_equal(jax.jit(call)(jnp.float32(r)), batched[i])


def test_per_example_normalisation():
    x = jnp.ones((16, 9, 9, 3))
    y = np.asarray(
        jaxreg.drop_block(jax.random.key(33), x, rate=0.4, block_size=2, normalize_per_example=True)
    )
    per_example = x[0].size
    for example in y:
        kept = example != 0
        assert kept.any() and not kept.all()
        np.testing.assert_allclose(example[kept], per_example / kept.sum(), rtol=1e-6)
        np.testing.assert_allclose(example.sum(), per_example, rtol=1e-5)
    # Same mask as the whole-batch normalisation; only the scale differs.
    batch = np.asarray(jaxreg.drop_block(jax.random.key(33), x, rate=0.4, block_size=2))
    np.testing.assert_array_equal(batch != 0, y != 0)
    assert len(np.unique(batch[batch != 0])) == 1 and len(np.unique(y[y != 0])) > 1


def test_shared_channels_and_channels_first_and_1d_3d():
    y = np.asarray(
        jaxreg.drop_block(
            jax.random.key(4), jnp.ones((4, 9, 9, 5)), rate=0.3, block_size=3, shared_channels=True
        )
    )
    assert np.all((y != 0) == (y[..., :1] != 0))
    cf = jaxreg.drop_block(
        jax.random.key(5), jnp.ones((4, 5, 9, 9)), rate=0.3, block_size=3, channel_axis=1
    )
    assert cf.shape == (4, 5, 9, 9)
    y1 = np.asarray(
        jaxreg.drop_block(jax.random.key(6), jnp.ones((64, 20, 2)), rate=0.3, block_size=4)
    )
    runs = np.diff(
        np.concatenate([np.zeros((64, 1, 2)), y1 == 0, np.zeros((64, 1, 2))], 1).astype(int), axis=1
    )
    lengths = (
        np.nonzero(runs.transpose(0, 2, 1).ravel() == -1)[0]
        - np.nonzero(runs.transpose(0, 2, 1).ravel() == 1)[0]
    )
    assert lengths.min() >= 4  # every dropped run is at least one block long
    y3 = jaxreg.drop_block(
        jax.random.key(7), jnp.ones((2, 6, 6, 6, 3)), rate=0.3, block_size=(2, 3, 2)
    )
    assert y3.shape == (2, 6, 6, 6, 3)


def test_drop_block_errors():
    key = jax.random.key(0)
    with pytest.raises(
        ValueError,
        match=r"jaxreg\.drop_block: block_size 8 is larger than the feature map \(5, 5\)",
    ):
        jaxreg.drop_block(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=8)
    with pytest.raises(ValueError, match="x must be \\(batch, \\*spatial, channels\\)"):
        jaxreg.drop_block(key, jnp.ones((2, 5)), rate=0.1, block_size=1)
    with pytest.raises(ValueError, match="channel_axis must not be 0"):
        jaxreg.drop_block(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=2, channel_axis=0)
    with pytest.raises(TypeError, match="block_size must be an int or 2 ints"):
        jaxreg.drop_block(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=(2, 2, 2))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        jaxreg.drop_block(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=0)
    with pytest.raises(
        ValueError, match=r"jaxreg\.drop_block: calibration must be one of 'exact', 'paper'"
    ):
        jaxreg.drop_block(key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=2, calibration="timm")
    with pytest.raises(
        TypeError, match=r"jaxreg\.drop_block: normalize_per_example must be a bool"
    ):
        jaxreg.drop_block(
            key, jnp.ones((2, 5, 5, 3)), rate=0.1, block_size=2, normalize_per_example="example"
        )
