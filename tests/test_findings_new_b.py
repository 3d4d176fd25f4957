"""Smoke runs of the findings dropout_architectures and when_to_drop, and the grid's step.

Each script runs with ``--smoke`` and must exit 0 and write its CSV (finite numbers, the
expected rows) and PNG. The grid feature when_to_drop relies on (the loss sees the step
number as ``hparams["step"]``) is checked directly.
"""

import csv
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from subproc import child_env

import jaxreg.grid as jg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# script -> (CSV file, required columns, rows in --smoke mode)
CASES = {
    "dropout_architectures": (
        "dropout_architectures.csv",
        {"arch", "method", "rate", "seed", "train_err", "val_err", "test_err", "best_step"},
        2 * 3 * 2,  # 2 nets x (none + 2 methods at one rate) x 2 seeds
    ),
    "when_to_drop": (
        "when_to_drop.csv",
        {"regime", "schedule", "rate", "cutoff", "seed", "train_loss", "val_err", "test_err"},
        2 * 4 * 2,  # 2 regimes x (none, standard, early, late at one rate/cutoff) x 2 seeds
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke(name, tmp_path):
    csv_name, columns, num_rows = CASES[name]
    env = child_env()  # plumbing, not speed: LLVM optimisation off
    script = os.path.join(ROOT, "examples", f"{name}.py")
    proc = subprocess.run(
        [sys.executable, script, "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| verdict |" in proc.stdout
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    with open(tmp_path / csv_name, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == num_rows
    assert columns <= set(rows[0])
    for row in rows:
        for key in columns - {"arch", "method", "regime", "schedule"}:
            assert math.isfinite(float(row[key])), (key, row)
        for key in ("train_err", "val_err", "test_err"):
            assert 0.0 <= float(row[key]) <= 1.0, (key, row)


def test_loss_sees_the_step():
    """``hparams["step"]`` is 0, 1, ... per step (aux: its mean over the chunk), and a
    grid axis named "step" is rejected."""
    data = {"x": np.zeros((4, 1), np.float32)}

    def loss(params, hp, batch, key):
        step = hp["step"].astype(jnp.float32)
        return 0.0 * params["w"], step

    trainer = jg.Trainer(
        init=lambda key, hp: {"w": jnp.zeros(())},
        loss=loss,
        optimizer=lambda hp: optax.sgd(0.1),
        batch_size=2,
        chunk_steps=4,
        strategy="vmap",
    )
    state = trainer.train(trainer.init_state(jg.product(seed=[0, 1]), data), data, steps=8)
    np.testing.assert_array_equal(state.to_host(state.aux), [5.5, 5.5])  # mean of 4..7
    with pytest.raises(ValueError, match=r"jaxreg\.grid\.product: axis names must not be 'step'"):
        jg.product(step=[0, 1])
