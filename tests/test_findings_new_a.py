"""The new findings ``dropout_convergence`` and ``validation_rate_gap`` run in ``--smoke``.

Both scripts start together in subprocesses (their start-up, data generation and
compilation overlap); each test checks the exit code, the PNG, the CSV columns and row
counts, and that the numbers are finite and in range.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("dropout_convergence", "validation_rate_gap")


def finish(smoke_runs, name):
    out, log = smoke_runs(name)
    png = out / f"{name}.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    return out, log


def read(path, columns):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == columns
    return rows


def test_dropout_convergence_smoke(smoke_runs):
    out, log = finish(smoke_runs, "dropout_convergence")
    assert "steps (mean ± sd)" in log and "B_simple" in log
    # smoke: rates 0, 0.5 and rate 0.5 with 2 masks; 2 seeds; 60 steps evaluated every 20
    rows = read(
        out / "dropout_convergence.csv",
        ["metric", "threshold", "rate", "masks", "seed", "steps_to_threshold", "best_val_error"],
    )
    assert len(rows) == 2 * 3 * 2  # (1 loss + 1 error threshold) x settings x seeds
    assert {(r["rate"], r["masks"]) for r in rows} == {("0.0", "1"), ("0.5", "1"), ("0.5", "2")}
    for r in rows:
        assert r["steps_to_threshold"] in ("", "20", "40", "60")
        assert 0.0 <= float(r["best_val_error"]) <= 1.0
    curves = read(
        out / "dropout_convergence_curves.csv",
        ["rate", "masks", "seed", "step", "train_loss", "val_error"],
    )
    assert len(curves) == 3 * 2 * 3
    for r in curves:
        assert 0.0 < float(r["train_loss"]) < 10.0 and 0.0 <= float(r["val_error"]) <= 1.0
    noise = read(
        out / "dropout_convergence_noise.csv",
        [
            "rate",
            "seed",
            "step",
            "trace_sigma_masks",
            "grad_norm2_masks",
            "mask_share",
            "trace_sigma_no_masks",
            "grad_norm2_no_masks",
        ],
    )
    assert len(noise) == 2 * 2 * 2
    for r in noise:
        assert all(math.isfinite(float(v)) for v in r.values())
        assert float(r["trace_sigma_masks"]) > 0 and float(r["trace_sigma_no_masks"]) > 0
        assert 0.0 <= float(r["mask_share"]) <= 1.0
        if float(r["rate"]) == 0.0:  # no masks at rate 0: both estimates are the same
            assert float(r["mask_share"]) == pytest.approx(0.0, abs=1e-6)
            for k in ("trace_sigma", "grad_norm2"):
                assert float(r[f"{k}_masks"]) == pytest.approx(float(r[f"{k}_no_masks"]), 1e-4)
        else:  # the masks add variance
            assert float(r["mask_share"]) > 0.0


def test_validation_rate_gap_smoke(smoke_runs):
    out, log = finish(smoke_runs, "validation_rate_gap")
    assert "regret" in log
    # smoke: sizes 100, 200; validation sizes 50, 100; 2 seeds; rates 0, 0.3, 0.6
    rows = read(
        out / "validation_rate_gap.csv",
        [
            "train_size",
            "val_size",
            "seed",
            "regret",
            "mean_chosen_rate",
            "oracle_rate",
            "oracle_test_error",
        ],
    )
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert 0.0 <= float(r["regret"]) <= 1.0
        assert 0.0 <= float(r["mean_chosen_rate"]) <= 0.6
        assert float(r["oracle_rate"]) in (0.0, 0.3, 0.6)
    models = read(
        out / "validation_rate_gap_models.csv",
        ["train_size", "seed", "subset", "rate", "test_error", "val_pool_error"],
    )
    assert len(models) == 2 * 2 * 3
    assert sorted({int(r["subset"]) for r in models}) == [0, 1, 2, 3]
    for r in models:
        assert 0.0 <= float(r["test_error"]) <= 1.0 and 0.0 <= float(r["val_pool_error"]) <= 1.0


def test_gradient_moments_equal_per_example_grads():
    """The outer-product moments equal those of ``jax.vmap(jax.grad)`` of ``mlp``'s loss
    with the same dropout keys (so the script's forward pass is ``mlp``'s)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _common import cross_entropy, init_mlp, mlp
    from _gradient_noise import gradient_moments

    n, repeats = 12, 3
    x = np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, n).astype(np.int32)
    keys = jax.random.split(jax.random.key(0), 2)
    params = jax.vmap(lambda k: init_mlp(k, (6, 5, 7, 4)))(keys)
    rates = jnp.array([0.0, 0.4])
    got = [
        np.asarray(a, np.float64) for a in gradient_moments(params, rates, x, y, 3, repeats=repeats)
    ]
    draws = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(jax.random.key(3), i), repeats))(
        jnp.arange(n)
    )

    @jax.jit
    def reference(p, rate):  # one model: per-example gradients, then their moments
        def grad(xi, yi, k):
            g = jax.grad(lambda q: cross_entropy(mlp(q, xi[None], key=k, rates=rate), yi[None]))(p)
            return jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(g)])

        g = jax.vmap(jax.vmap(grad, (None, None, 0)))(x, y, draws)
        d = jax.vmap(lambda xi, yi: grad(xi, yi, None))(x, y)
        return (
            jnp.sum(g.mean((0, 1)) ** 2),
            jnp.sum(g**2),
            jnp.sum((g - g.mean(1, keepdims=True)) ** 2),
            jnp.sum(d.mean(0) ** 2),
            jnp.sum(d**2),
        )

    want = [np.asarray(a, np.float64) for a in jax.vmap(reference)(params, rates)]
    for name, a, b in zip(("mean2", "s2", "w", "det_mean2", "det_s2"), got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * want[1].max(), err_msg=name)
    assert got[2][1] > 1e-3  # the masks add variance at rate 0.4
