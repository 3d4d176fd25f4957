"""Smoke runs of the learned-regularization findings (issue 17): exit 0, CSV and PNG.

Both scripts start together in subprocesses (their start-up, data generation and
compilation overlap), with XLA's backend optimisation off: the plumbing is tested, not
the speed. The checks: the files exist, the columns and row counts match the smoke grid,
every number is finite and every rate, error and kept fraction lies in [0, 1].
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_run_writes_csv_and_png(smoke_runs, name):
    out, log = smoke_runs(name)
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
    CHECKS[name](out, log)  # in this test: a second test might run the script again


def check_learned_rates_move_and_methods_differ(out, log):
    """The concrete models' rates left their initial 0.1 (the fixed rows' unused logits
    did not: no gradient reaches them), and the concrete-only run repeats the combined
    program's rate trajectory (same seeds and keys, another program)."""
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


def check_pruning_counts_are_consistent(out, log):
    """Dense models keep every unit; magnitude rows keep exactly their counts; the
    matched rows copy the counts of the stage-1 model they are paired with."""
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


CHECKS = {
    "learned_dropout_rate": check_learned_rates_move_and_methods_differ,
    "pruning": check_pruning_counts_are_consistent,
}
