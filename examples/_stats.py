"""Paired statistics for the findings: one place for intervals, verdicts and Holm.

Every finding compares settings trained with shared seeds (common random numbers), so
its comparisons are paired: the difference per seed, its mean, the standard error with
ddof=1, a two-sided Student-t interval and p-value. An interval that covers zero reads
"inconclusive"; nothing is called a win on a point estimate alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


class Paired(NamedTuple):
    """A paired difference ``a - b`` over ``n`` shared seeds."""

    mean: float
    se: float  # standard error of the mean difference (ddof=1)
    low: float  # two-sided interval at `level`
    high: float
    p: float  # two-sided p-value of the paired t-test (nan for n < 2)
    n: int

    def verdict(self, lower: str = "lower", higher: str = "higher") -> str:
        """``lower``/``higher`` when the interval excludes zero, else "inconclusive"."""
        if not np.isfinite(self.low) or self.low <= 0.0 <= self.high:
            return "inconclusive"
        return higher if self.low > 0 else lower

    def format(self, scale: float = 1.0, fmt: str = "+.2f") -> str:
        """``"+1.23 [+0.40, +2.06] (p=0.004)"``, values times ``scale``."""
        m, lo, hi = (scale * v for v in (self.mean, self.low, self.high))
        return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] (p={self.p:.2g})"


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Paired:
    """Paired difference ``a - b`` (same seeds, same order) with a t interval."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1:
        raise ValueError(f"paired: a and b must be 1-D over seeds, got shape {d.shape}")
    n = d.size
    mean = float(d.mean())
    if n < 2:
        nan = float("nan")
        return Paired(mean, nan, nan, nan, nan, n)
    se = float(d.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else float(mean == 0.0)
    return Paired(mean, se, mean - half, mean + half, p, n)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; family-wise error)."""
    p = np.asarray(pvalues, np.float64)
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def mean_sd(values: Sequence[float], fmt: str = ".3f") -> str:
    """``"mean ± sd"`` with ddof=1 (sd 0 for a single value)."""
    v = np.asarray(values, np.float64)
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{v.mean():{fmt}} ± {sd:{fmt}}"


def logit(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Log-odds of an error rate, clipped away from 0 and 1 (for interaction scales)."""
    q = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(q / (1 - q))


def paired_holm(
    pairs: Sequence[tuple[Sequence[float], Sequence[float]]], *, level: float = 0.95
) -> list[Paired]:
    """Paired differences ``a - b`` for a family of comparisons, Holm-corrected.

    Each result's ``p`` is the Holm-adjusted p-value. Its interval has the level at
    which Holm's step-down procedure tests it: ``1 - alpha / (m - k)`` with
    ``alpha = 1 - level``, ``m`` comparisons and ``k`` the comparison's rank by raw
    p-value, or the rank of the first comparison Holm does not reject, whichever is
    smaller. So an interval excludes zero exactly when Holm rejects (adjusted
    ``p < alpha``), and ``verdict()`` reads "inconclusive" for every comparison Holm
    keeps.
    """
    raw = [paired(a, b, level=level) for a, b in pairs]
    p = np.array([r.p for r in raw])
    if not raw or np.isnan(p).any():
        return raw  # one seed: no intervals, nothing to adjust
    alpha, m = 1.0 - level, len(raw)
    adjusted = holm(p)
    order = np.argsort(p, kind="stable")
    keeps = [rank for rank, i in enumerate(order) if adjusted[i] >= alpha]
    first_kept = keeps[0] if keeps else m
    out: list[Paired] = list(raw)
    for rank, i in enumerate(order):
        step_level = 1.0 - alpha / (m - min(rank, first_kept))
        out[i] = paired(*pairs[i], level=step_level)._replace(p=float(adjusted[i]))
    return out
