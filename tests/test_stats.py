"""The statistics helpers accept correct samplers and reject slightly wrong ones."""

import numpy as np
import pytest

from stats import (
    assert_binomial,
    assert_mean,
    assert_uniform_counts,
    assert_variance,
)

N = 1_000_000


def test_binomial_accepts_exact_and_rejects_wrong_rate():
    rng = np.random.default_rng(0)
    kept = int((rng.random(N) < 0.5).sum())
    assert_binomial(kept, N, 0.5)
    # Negative control: a sampler that keeps with probability 0.51 (drops at 0.49)
    # instead of 0.5: 10,000 more kept than expected, 20 sigma (sigma = 500).
    wrong = int((rng.random(N) < 0.51).sum())
    with pytest.raises(AssertionError, match="z ="):
        assert_binomial(wrong, N, 0.5)


def test_binomial_refuses_small_samples():
    with pytest.raises(AssertionError, match="too small"):
        assert_binomial(50, 100, 0.5)


def test_mean_and_variance_reject_wrong_moments():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 0.5, N)
    assert_mean(x, 1.0)
    assert_variance(x, 0.25)
    with pytest.raises(AssertionError):
        assert_mean(x, 1.01)
    with pytest.raises(AssertionError):
        assert_variance(x, 0.255)


def test_uniform_counts_rejects_skew():
    rng = np.random.default_rng(2)
    assert_uniform_counts(np.bincount(rng.integers(0, 64, N), minlength=64))
    skewed = np.bincount(rng.integers(0, 64, N), minlength=64).astype(float)
    skewed[0] *= 1.10  # one category 10% too frequent
    with pytest.raises(AssertionError, match="chi-square"):
        assert_uniform_counts(skewed)
