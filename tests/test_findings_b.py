"""Smoke runs of the findings examples 5-8: each script exits 0 and writes its CSV and PNG."""

import csv
import os
import subprocess
import sys

import pytest
from subproc import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# script -> (CSV file, required columns, number of data rows in --smoke mode)
CASES = {
    "mc_dropout": (
        "mc_dropout.csv",
        {"dataset", "split", "rate", "tau", "rmse_mc", "rmse_ws", "ll_mc", "ll_ws"}
        | {"val_ll_mc", "val_ll_ws", "mc_std"},
        3 * 2 * 2 * 2,  # data sets x splits x rates x taus
    ),
    "dropconnect_vs_dropout": (
        "dropconnect_vs_dropout.csv",
        {
            "setting",
            "dropout_rate",
            "dropconnect_rate",
            "seed",
            "train_error",
            "test_error_scale",
            "test_error_moments",
            "test_error_mc",
            "test_nll_moments",
        },
        3,  # none, dropout 0.5, dropconnect 0.5; 1 seed
    ),
    "dropout_batchnorm": (
        "dropout_batchnorm.csv",
        {
            "placement",
            "rate",
            "seed",
            "test_error_train_stats",
            "test_error_recomputed",
            "var_ratio_bn1",
            "var_ratio_bn2",
            "var_ratio_bn3",
        },
        3,  # none, before BN 0.5, after BN 0.5 (one dropout layer each); 1 seed
    ),
    "stochastic_depth_dropblock": (
        "stochastic_depth_dropblock.csv",
        {"setting", "path_rates", "dropout_rate", "drop_block_rate", "seed", "test_error"},
        5,  # none, linear, constant, dropout, DropBlock; 1 seed
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke(name, tmp_path):
    csv_name, columns, num_rows = CASES[name]
    env = child_env()  # plumbing, not speed: LLVM optimisation off
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", f"{name}.py"),
            "--smoke",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    with open(tmp_path / csv_name, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == num_rows
    assert columns <= set(rows[0])
    for row in rows:  # every number finite
        for key in columns:
            value = row[key]
            try:
                number = float(value)
            except ValueError:
                continue
            assert number == number and abs(number) != float("inf"), (key, row)
