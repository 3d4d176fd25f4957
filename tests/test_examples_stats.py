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


def test_paired_holm_intervals_agree_with_holm_rejections():
    rng = np.random.default_rng(1)
    shifts = [0.0, 0.0, 0.3, 0.6, 1.0, 1.5, 2.5, 0.1, 3.0]
    pairs = [(rng.normal(s, 1.0, 8), np.zeros(8)) for s in shifts]
    out = _stats.paired_holm(pairs)
    raw = np.array([_stats.paired(a, b).p for a, b in pairs])
    np.testing.assert_allclose([r.p for r in out], _stats.holm(raw))
    rejected = [r.p < 0.05 for r in out]
    assert any(rejected) and not all(rejected)  # the family has both kinds
    for r, rej in zip(out, rejected, strict=True):
        assert (r.verdict() != "inconclusive") == rej
    # the intervals are Student-t intervals at Holm's per-step levels (1 - 0.05 / (m - k))
    order = np.argsort(raw)
    for rank, i in enumerate(order[: sum(rejected)]):
        ci = stats.ttest_rel(*pairs[i]).confidence_interval(1 - 0.05 / (9 - rank))
        assert (out[i].low, out[i].high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # negative control: unadjusted intervals would call more comparisons than Holm does
    assert sum(_stats.paired(a, b).verdict() != "inconclusive" for a, b in pairs) > sum(rejected)
