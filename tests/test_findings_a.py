"""The findings examples 1-4 run end to end in ``--smoke`` mode and write their outputs.

Each script runs in its own subprocess (started together, so that their start-up,
data generation and compilation overlap); a test then checks the exit code, that the
CSV and the PNG exist, and the CSV's columns and row count.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # generous: the machines are shared; an idle run takes seconds

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


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Starts the smoke run of every selected script at once; yields name -> (proc, out)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    env.pop("JAX_DEBUG_KEY_REUSE", None)
    procs = {}
    for name in sorted(selected):
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


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_run_writes_csv_and_png(runs, name):
    proc, out = runs[name]
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
        pytest.fail(f"{name} --smoke ran past {TIMEOUT_S} s:\n{log[-3000:]}")
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}:\n{log[-3000:]}"
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
