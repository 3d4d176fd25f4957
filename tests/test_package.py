"""Package surface: exports, lean imports, docstrings, version."""

import inspect
import pathlib
import subprocess
import sys
import tomllib

import jaxreg

ROOT = pathlib.Path(__file__).resolve().parents[1]


# Parameter filters implement no paper; every other public function cites one.
NO_PAPER = {"by_path", "kernels_only"}


def test_all_names_exist_and_are_documented_with_references():
    assert len(set(jaxreg.__all__)) == len(jaxreg.__all__)
    for name in jaxreg.__all__:
        obj = getattr(jaxreg, name)
        doc = inspect.getdoc(obj) or ""
        if name not in NO_PAPER:
            assert "References:" in doc, f"{name} docstring lacks a References section"
        assert "Args:" in doc and "Returns:" in doc, name


# needs_key(rate) asks about its only argument: positional, like a predicate.
POSITIONAL_RATE = {"needs_key"}


def test_hyperparameters_are_keyword_only():
    for name in set(jaxreg.__all__) - POSITIONAL_RATE:
        sig = inspect.signature(getattr(jaxreg, name))
        for pname in (
            "rate",
            "strength",
            "l1_ratio",
            "step_size",
            "broadcast_dims",
            "num_samples",
            "per_example",
            "calibration",
        ):
            if pname in sig.parameters:
                assert sig.parameters[pname].kind is inspect.Parameter.KEYWORD_ONLY, (name, pname)


def test_import_jaxreg_needs_only_jax_and_numpy():
    code = (
        "import sys, jaxreg; bad = [m for m in ('flax', 'optax', 'scipy', 'chex', 'equinox') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_version_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert jaxreg.__version__ == meta["project"]["version"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1].strip()
    assert command in readme, command
