"""Smoke runs of the learned-regularization findings (issue 17): exit 0, CSV and PNG.

Both scripts start together in subprocesses (their start-up, data generation and
compilation overlap), with XLA's backend optimisation off: the plumbing is tested, not
the speed. The checks: the files exist, the columns and row counts match the smoke grid,
every number is finite and every rate, error and kept fraction lies in [0, 1].
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # generous: the machines are shared; an idle smoke run takes ~10 s

# script -> {csv file: (columns, data rows in --smoke mode)}
CASES = {
    "learned_dropout_rate": {
        "learned_dropout_rate.csv": (
            ["rate", "rate_lr", "subset", "n", "seed", "val_err", "test_err", "train_err",
             "rate1", "rate2", "method"],
            (2 + 2) * 3 * 2,  # (2 fixed rates + concrete at 2 logit step sizes) x 3 sizes x 2 seeds
        ),
        # concrete models (2 step sizes x 3 sizes x 2 seeds) x (2 chunks combined + 3 alone)
        "learned_dropout_rate_rates.csv": (
            ["run", "step", "size", "seed", "rate_lr", "rate1", "rate2"], 12 * 5
        ),
        "learned_dropout_rate_long.csv": (
            ["n", "seed", "rate_lr", "steps", "val_err", "test_err", "rate1", "rate2"], 12
        ),
        "learned_dropout_rate_timing.csv": (  # --smoke times only the combined program
            ["program", "models", "strategy", "steps_run", "first_chunk_s", "per_chunk_s",
             "projected_s", "measured_s"],
            1,
        ),
    },
    "pruning": {
        "pruning.csv": (
            ["stage", "method", "strength", "seed", "match", "keep1", "keep2", "kept_frac",
             "val_err", "test_err"],
            # stage 1: (dense + 2 L0 + 2 group lasso) x 2 seeds; stage 2: (4 matched
            # + 8 fractions) x 2 seeds, each as "magnitude" and "magnitude+ft"
            5 * 2 + 2 * (4 + 8) * 2,
        ),
    },
}  # fmt: skip
UNIT_INTERVAL = {"val_err", "test_err", "train_err", "rate1", "rate2", "kept_frac", "rate"}
TEXT = {"method", "program", "strategy", "run"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env.pop("JAX_DEBUG_KEY_REUSE", None)
    procs = {}
    for name in CASES:
        out = tmp_path_factory.mktemp(name)
        cmd = [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--smoke", "--out", str(out)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        procs[name] = (proc, out)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finished(runs, name):
    proc, out = runs[name]
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
        pytest.fail(f"{name} --smoke ran past {TIMEOUT_S} s:\n{log[-3000:]}")
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}:\n{log[-3000:]}"
    return out, log


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_run_writes_csv_and_png(runs, name):
    out, log = finished(runs, name)
    png = out / f"{name}.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} missing"
    assert png.stat().st_size > 10_000, "the figure is (nearly) empty"
    for csv_name, (columns, num_rows) in CASES[name].items():
        fields, rows = read(out / csv_name)
        assert fields == columns, csv_name
        assert len(rows) == num_rows, csv_name
        for row in rows:
            for key, text in row.items():
                if key in TEXT:
                    assert text, f"{csv_name}: empty {key}"
                    continue
                value = float(text)
                assert math.isfinite(value), f"{csv_name}: {key}={text} in {row}"
                if key in UNIT_INTERVAL:
                    assert 0.0 <= value <= 1.0, f"{csv_name}: {key}={text} in {row}"
    assert "| " in log and "nan" not in log, log[-3000:]  # a table, no NaN in it
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_learned_rates_move_and_methods_differ(runs):
    """The concrete models' rates left their initial 0.1 (the fixed rows' unused logits
    did not: no gradient reaches them), and the concrete-only run repeats the combined
    program's rate trajectory (same seeds and keys, another program)."""
    out, log = finished(runs, "learned_dropout_rate")
    _, rows = read(out / "learned_dropout_rate.csv")
    concrete = [r for r in rows if r["method"] == "concrete"]
    fixed = [r for r in rows if r["method"] == "fixed"]
    assert all(float(r["rate1"]) != 0.1 for r in concrete)
    assert all(float(r["rate1"]) == 0.1 for r in fixed)
    _, curves = read(out / "learned_dropout_rate_rates.csv")
    key = lambda r: (r["step"], r["size"], r["seed"], r["rate_lr"])  # noqa: E731
    alone = {key(r): r for r in curves if r["run"] == "concrete alone"}
    for r in curves:
        if r["run"] == "combined":
            for j in ("rate1", "rate2"):
                assert abs(float(r[j]) - float(alone[key(r)][j])) < 1e-3, (r, alone[key(r)])
    assert "reproduces the combined program" in log


def test_pruning_counts_are_consistent(runs):
    """Dense models keep every unit; magnitude rows keep exactly their counts; the
    matched rows copy the counts of the stage-1 model they are paired with."""
    out, _ = finished(runs, "pruning")
    _, rows = read(out / "pruning.csv")
    stage1 = [r for r in rows if r["stage"] == "1"]
    for r in stage1:
        if r["method"] == "dense":
            assert (r["keep1"], r["keep2"]) == ("128", "128")
    for r in rows:
        if r["stage"] == "2" and int(r["match"]) >= 0:
            m = stage1[int(r["match"])]
            assert (r["keep1"], r["keep2"], r["seed"]) == (m["keep1"], m["keep2"], m["seed"])
            assert m["method"] in ("L0", "group lasso")
