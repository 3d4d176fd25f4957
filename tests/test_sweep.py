"""examples/sweep.py: smoke run, bad arguments, sharding, several processes, kill and resume.

Every run uses ``--smoke`` (8 models: 2 rates x 2 decays x 2 seeds, 3 chunks of 20
steps). The runs that must agree (1 device, 4 devices, 2 processes x 2 devices, killed
and resumed) share the reference run of the ``reference`` fixture.
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from subproc import child_env

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "examples" / "sweep.py"
COLUMNS = [
    "rate",
    "decay",
    "seed",
    "final_train_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "steps",
]


def env(devices=1):
    return child_env(devices=devices)


def sweep(*args, devices=1, timeout=240, **kwargs):
    return subprocess.run(
        [sys.executable, str(SWEEP), "--smoke", *map(str, args)],
        env=env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def rows(out):
    with open(Path(out) / "models.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_metrics(got, ref):
    """Same grid, same step counts and accuracies; losses to float32 rounding (rtol 1e-5)."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        for k in (
            "rate",
            "decay",
            "seed",
            "steps",
            "train_accuracy",
            "val_accuracy",
            "test_accuracy",
        ):
            assert g[k] == r[k], (k, g, r)
        np.testing.assert_allclose(float(g["final_train_loss"]), float(r["final_train_loss"]), 1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "ref"
    run = sweep("--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stdout


def test_smoke_run_writes_table_csvs_and_heatmap(reference):
    out, stdout = reference
    table = rows(out)
    assert list(table[0]) == COLUMNS
    assert [(r["rate"], r["decay"], r["seed"]) for r in table] == [
        (rate, decay, seed)
        for rate in ("0.0", "0.5")
        for decay in ("0.0", "0.001")
        for seed in ("0", "1")
    ]
    assert {r["steps"] for r in table} == {"60"}
    for r in table:
        for k in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert 0.0 <= float(r[k]) <= 1.0
        assert np.isfinite(float(r["final_train_loss"]))
    with open(out / "curves.csv", newline="") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 8 * 3 and {c["step"] for c in curves} == {"20", "40", "60"}
    for c in curves:
        assert np.isfinite(float(c["train_loss"]))
        assert 0.0 <= float(c["val_error"]) <= 1.0 and 0.0 <= float(c["test_error"]) <= 1.0
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert [c["chosen_on_validation"] for c in cells].count("True") == 1
    (inter,) = [c for c in cells if c["verdict"]]  # the one cell with rate > 0, decay > 0
    assert (inter["rate"], inter["decay"]) == ("0.5", "0.001")
    for key in ("points", "odds", "pair"):
        low, mean, high = (float(inter[f"{key}_{p}"]) for p in ("low", "mean", "high"))
        assert low <= mean <= high and 0.0 <= float(inter[f"{key}_p"]) <= 1.0
    assert "**best**" in stdout and "collectives in the training step: none" in stdout
    # the marked cell has the lowest mean validation error (the test split chooses nothing)
    val = {}
    for r in table:
        val.setdefault((float(r["rate"]), float(r["decay"])), []).append(
            1 - float(r["val_accuracy"])
        )
    rate, decay = min(val, key=lambda c: np.mean(val[c]))
    assert f"lowest mean validation error: dropout {rate:g}, weight decay {decay:g};" in stdout
    assert "kernels only, biases not decayed" in stdout
    assert "I, log-odds" in stdout and "Holm-adjusted" in stdout and "cells by verdict" in stdout
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # atomic writes left no temp


BAD = [
    (["--rates", ""], "--rates"),
    (["--rates", "0.1,1.0"], "--rates"),
    (["--rates", "-0.1"], "--rates"),
    (["--rates", "0.1,abc"], "--rates"),
    (["--decays", "0,-1e-4"], "--decays"),
    (["--decays", "nan"], "--decays"),
    (["--dataset", "mnist"], "--dataset"),
    (["--seeds", "0"], "--seeds"),
    (["--steps", "30"], "--steps"),  # not a multiple of --chunk-steps 20
    (["--val-size", "400"], "--val-size"),  # 200 + 400 > the 480 of the training pool
    (["--val-size", "0"], "--val-size"),
    (["--batch", "300"], "--batch"),  # more than --train-size 200
]


@pytest.fixture(scope="module")
def sweep_module():
    sys.path.insert(0, str(SWEEP.parent))
    try:
        import sweep as module
    finally:
        sys.path.remove(str(SWEEP.parent))
    return module


@pytest.mark.parametrize(("argv", "name"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_arguments_one_line_exit_2_nothing_written(argv, name, tmp_path, capsys, sweep_module):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        sweep_module.main(["--smoke", "--out", str(out), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {name}:" in err, err
    assert not out.exists()


def test_other_arguments_over_existing_results_are_refused(reference, capsys, sweep_module):
    out, _ = reference
    before = {p: (out / p).read_bytes() for p in ("models.csv", "config.json")}
    with pytest.raises(SystemExit) as exc:
        sweep_module.main(["--smoke", "--out", str(out), "--rates", "0,0.3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "other arguments" in err and "rates" in err and err.count("\n") == 1
    assert before == {p: (out / p).read_bytes() for p in before}


def test_four_devices_equal_one_device_and_no_collectives(reference, tmp_path):
    ref, _ = reference
    run = sweep("--out", tmp_path / "sharded", devices=4)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on 4 device(s)" in run.stdout
    assert "collectives in the training step: none" in run.stdout
    assert_same_metrics(rows(tmp_path / "sharded"), rows(ref))


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(reference, tmp_path):
    ref, _ = reference
    out, port = tmp_path / "multi", free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(SWEEP), "--smoke", "--out", str(out), "--coordinator",
             f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
            env=env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        results = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in results]
    assert "on 4 device(s) in 2 process(es)" in results[0][0]
    assert "collectives in the training step: none" in results[0][0]
    assert_same_metrics(rows(out), rows(ref))


def test_sigkill_then_rerun_resumes_and_equals_uninterrupted(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "killed"
    first_checkpoint = out / "checkpoints" / "step_20"
    proc = subprocess.Popen(
        [sys.executable, str(SWEEP), "--smoke", "--out", str(out), "--chunk-delay", "30"],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not first_checkpoint.is_dir() and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before its first checkpoint"
            time.sleep(0.1)
        assert first_checkpoint.is_dir()
        os.kill(proc.pid, signal.SIGKILL)  # mid-run: 2 of 3 chunks still to go
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not (out / "models.csv").exists()
    run = sweep("--out", out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from the checkpoint after step 20" in run.stdout
    assert rows(out) == rows(ref)  # row for row, as text
    with open(out / "curves.csv") as a, open(ref / "curves.csv") as b:
        assert a.read() == b.read()
