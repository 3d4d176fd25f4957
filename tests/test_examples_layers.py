"""The Flax layer examples run end to end in --smoke mode."""

import pathlib
import subprocess
import sys

import pytest
from subproc import child_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["linen_mlp.py", "nnx_mlp.py"])
def test_example_smoke(script):
    env = child_env()
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 0.")]
    assert len(rows) >= 2, out.stdout
    for row in rows:
        loss, acc = (float(v) for v in row.strip("|").split("|")[1:3])
        assert 0.0 < loss < 10.0 and 0.0 <= acc <= 1.0, row
