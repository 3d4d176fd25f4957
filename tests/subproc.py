"""The environment of every test that runs a script in a child process.

Child processes run examples and benchmarks in their smoke modes, which check plumbing,
not speed, so they compile with LLVM's optimisation off (compiling is most of a smoke
run). They share one persistent JAX compilation cache per test session, so a program
compiled by one child (the sweep's reference run) is loaded, not recompiled, by the next
(its killed-and-resumed rerun). The cache keys on the program, the compile options and the
JAX version: a hit is the same executable, so results are unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Set by conftest.py in the controlling process before pytest-xdist starts its workers,
# so every worker's children share it; removed when the session ends.
CACHE_VAR = "JAXREG_TEST_JAX_CACHE"


def child_env(*, devices: int | None = None, optimize: bool = False) -> dict[str, str]:
    """``os.environ`` for a child: the repository on ``PYTHONPATH``, CPU JAX, the Agg
    backend, no key-reuse checker (scripts are checked by their own tests), LLVM
    optimisation off unless ``optimize``, ``devices`` simulated host devices, and the
    session's compilation cache."""
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("JAX_DEBUG_KEY_REUSE", None)
    flags = [] if optimize else ["--xla_backend_optimization_level=0"]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    if os.environ.get(CACHE_VAR):
        env["JAX_COMPILATION_CACHE_DIR"] = os.environ[CACHE_VAR]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


class SmokeRuns:
    """Each example's ``--smoke`` run, started on first use and run once per worker.

    ``runs(name)`` runs ``examples/<name>.py --smoke --out DIR`` (stdout and stderr
    merged), fails the test if it times out or exits non-zero, and returns
    ``(DIR, log)``. Checks of one run belong in one test: pytest-xdist may send two tests
    to two workers, and each would run the script.
    """

    def __init__(self, mktemp, timeout: float = 600):
        self._mktemp, self._timeout, self._done = mktemp, timeout, {}

    def __call__(self, name: str) -> tuple[Path, str]:
        if name not in self._done:
            out = self._mktemp(name)
            cmd = [
                sys.executable,
                str(ROOT / "examples" / f"{name}.py"),
                "--smoke",
                "--out",
                str(out),
            ]
            try:
                proc = subprocess.run(
                    cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True, timeout=self._timeout,
                )  # fmt: skip
                self._done[name] = (out, proc.returncode, proc.stdout)
            except subprocess.TimeoutExpired as err:
                log = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
                self._done[name] = (out, f"timeout after {self._timeout:.0f} s", log)
        out, code, log = self._done[name]
        if code != 0:
            pytest.fail(f"{name} --smoke exited with {code}:\n{log[-3000:]}")
        return out, log
