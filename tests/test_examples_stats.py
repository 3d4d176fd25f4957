import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import _stats


def test_paired_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1, 7), rng.normal(0.0, 1, 7)
    r = _stats.paired(a, b)
    ref = stats.ttest_rel(a, b)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
    d = a - b
    assert r.se == pytest.approx(d.std(ddof=1) / np.sqrt(7))
    ci = ref.confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_verdicts():
    assert _stats.paired([1, 1.1, 0.9], [0, 0, 0]).verdict() == "higher"
    assert _stats.paired([0, 0, 0], [1, 1.1, 0.9]).verdict() == "lower"
    assert _stats.paired([1, -1, 0.5], [0, 0, 0]).verdict() == "inconclusive"
    assert _stats.paired([1], [0]).verdict() == "inconclusive"


def test_holm_matches_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08->0.09 (monotone), 0.2*1=0.2
    np.testing.assert_allclose(_stats.holm(p), [0.04, 0.09, 0.09, 0.2])


def test_three_seeds_at_two_se_is_not_significant():
    # With 3 seeds a mean of 2 standard errors is p ~ 0.18: inconclusive.
    r = _stats.paired([2 - np.sqrt(3), 2, 2 + np.sqrt(3)], [0, 0, 0])
    assert r.mean / r.se == pytest.approx(2.0)
    assert 0.15 < r.p < 0.2
    assert r.verdict() == "inconclusive"
