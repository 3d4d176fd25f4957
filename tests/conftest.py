"""Test configuration.

- The whole suite runs with JAX's key-reuse checker on.
- XLA compiles with LLVM's optimisation off (``--xla_backend_optimization_level=0``):
  the suite is mostly compilation of small programs, which this makes about 30% faster.
  It changes how LLVM generates machine code, not what XLA computes (fast math stays
  off), so every result is the same. ``JAXREG_TEST_OPTIMIZE=1`` keeps the default level.
- Child processes (examples, benchmarks) share one compilation cache (``subproc.py``).
"""

import os
import shutil
import tempfile

if os.environ.get("JAXREG_TEST_OPTIMIZE") != "1" and "optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""
):
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"])
    )

import jax  # after XLA_FLAGS
import pytest
from subproc import CACHE_VAR, SmokeRuns

jax.config.update("jax_debug_key_reuse", True)
_OWN_CACHE: list[str] = []


def _controller(config) -> bool:
    return not hasattr(config, "workerinput")  # pytest-xdist workers have workerinput


def pytest_configure(config):
    """One compilation cache for the child processes of the whole session (see subproc)."""
    if _controller(config) and CACHE_VAR not in os.environ:
        os.environ[CACHE_VAR] = tempfile.mkdtemp(prefix="jaxreg-test-jax-cache-")
        _OWN_CACHE.append(os.environ[CACHE_VAR])


def pytest_unconfigure(config):
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """``smoke_runs(name) -> (out_dir, log)``: an example's ``--smoke`` run, once per worker."""
    return SmokeRuns(tmp_path_factory.mktemp)
