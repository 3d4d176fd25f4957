"""Statistical assertions with fixed, tight bounds (5 sigma by default).

Each helper raises AssertionError with the observed and expected values. Their own
tests (test_stats.py) include negative controls: samplers with a slightly wrong
parameter must be rejected at the sample sizes the suite uses.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

SIGMAS = 5.0
# Two-sided tail probability of 5 sigma; chi-square p-values below it are rejected.
P_5SIGMA = 5.733e-7


def binomial_z(successes: int, n: int, p: float) -> float:
    """z-score of ``successes`` out of ``n`` under Binomial(n, p)."""
    sd = math.sqrt(n * p * (1.0 - p))
    return (successes - n * p) / sd


def assert_binomial(successes: int, n: int, p: float, sigmas: float = SIGMAS) -> None:
    """Asserts ``successes`` is within ``sigmas`` standard deviations of n*p."""
    assert n >= 100_000, f"sample too small for a tight test: n={n}"
    z = binomial_z(int(successes), int(n), float(p))
    assert abs(z) < sigmas, (
        f"fraction {successes / n:.6f} vs expected {p:.6f}: z = {z:.2f} (n = {n})"
    )


def assert_mean(samples: np.ndarray, expected: float, sigmas: float = SIGMAS) -> None:
    """Asserts the sample mean is within ``sigmas`` standard errors of ``expected``."""
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    assert n >= 100_000, f"sample too small for a tight test: n={n}"
    se = samples.std(ddof=1) / math.sqrt(n)
    z = (samples.mean() - expected) / se
    assert abs(z) < sigmas, f"mean {samples.mean():.6f} vs {expected:.6f}: z = {z:.2f} (n = {n})"


def assert_variance(samples: np.ndarray, expected: float, sigmas: float = SIGMAS) -> None:
    """Asserts the sample variance is within ``sigmas`` standard errors of ``expected``.

    The standard error of the variance uses the sample fourth central moment.
    """
    samples = np.asarray(samples, np.float64).ravel()
    n = samples.size
    assert n >= 100_000, f"sample too small for a tight test: n={n}"
    centered = samples - samples.mean()
    var = np.mean(centered**2)
    m4 = np.mean(centered**4)
    se = math.sqrt(max(m4 - var**2, 1e-300) / n)
    z = (var - expected) / se
    assert abs(z) < sigmas, f"variance {var:.6f} vs {expected:.6f}: z = {z:.2f} (n = {n})"


def assert_uniform_counts(counts: np.ndarray) -> None:
    """Chi-square test that ``counts`` (of equally likely categories) are uniform."""
    counts = np.asarray(counts, np.float64).ravel()
    expected = counts.sum() / counts.size
    assert expected >= 20, f"too few counts per category ({expected:.1f}) for chi-square"
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    p = float(sps.chi2.sf(chi2, df=counts.size - 1))
    assert p > P_5SIGMA, f"chi-square {chi2:.1f} on {counts.size - 1} dof: p = {p:.3g}"
