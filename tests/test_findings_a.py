"""The findings examples 1-4 run end to end in ``--smoke`` mode and write their outputs.

Each script runs once in a subprocess (``smoke_runs`` in ``conftest.py``); a test then
checks the exit code, that the CSV and the PNG exist, and the CSV's columns and row count.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> (csv file, expected columns, expected rows in smoke mode)
CASES = {
    "dropout_overfitting": (
        "curves.csv",
        ["size", "rate", "seed", "step", "train_loss", "train_err", "val_err", "test_err"],
        2 * 2 * 2 * 2,  # sizes x rates x seeds x evaluations (40 steps, every 20)
    ),
    "activation_variance": (
        "variance.csv",
        ["rate", "seed", "step", "layer", "mode", "variance", "mean", "val_err", "test_err"],
        2 * 2 * 3 * 3 * 2,  # rates x seeds x measurements (0, 20, 40) x layers x modes
    ),
    "l1_proximal": (
        "l1.csv",
        [
            "method",
            "strength",
            "seed",
            "test_acc",
            "val_acc",
            "train_acc",
            "train_loss",
            "zero_frac",
            "small_frac",
            "dead_inputs",
            "dead_units",
            "mean_abs_w",
        ],
        2 + 4 * 2 * 2,  # "none" per seed + methods x strengths x seeds
    ),
    "adam_l2_vs_decoupled": (
        "grid.csv",
        [
            "condition",
            "method",
            "lr",
            "decay",
            "seed",
            "train_err",
            "kernel_norm",
            "val_err",
            "test_err",
        ],
        2 * 2 * 2 * 2 * 3,  # conditions x lrs x seeds x methods x (decay 0 and two decays)
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_run_writes_csv_and_png(smoke_runs, name):
    out, _ = smoke_runs(name)
    csv_name, columns, n_rows = CASES[name]
    png = out / f"{name}.png"
    assert png.is_file() and png.stat().st_size > 1000, f"{png} missing or empty"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / csv_name, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == columns
    assert len(rows) == n_rows
    for row in rows:  # every value present and numeric where it should be
        for key, value in row.items():
            assert value != "", f"{name}: empty {key} in {row}"
            if key not in ("method", "mode", "condition"):
                float(value)
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
