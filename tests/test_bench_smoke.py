"""bench/run_all.py --smoke: every benchmark runs and reports (about a minute on 2 cores)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

from subproc import child_env

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_all_module():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_smoke_runs_every_benchmark(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=child_env(),  # checks that everything runs: LLVM optimisation off
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (report_path,) = tmp_path.glob("*.json")
    report = json.loads(report_path.read_text())
    names = {p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")}
    assert set(report["benchmarks"]) == names - {"run_all"}
    for name, result in report["benchmarks"].items():
        assert result["status"] == "ok", (name, result["stderr_tail"])
        assert result["records"], f"{name} printed no records"
        for rec in result["records"]:
            assert rec["case"] and all(isinstance(v, float) for v in rec["ratios"].values())
    table = report_path.with_suffix(".md").read_text()
    assert "## Records" in table and "attention S=64 float32 fwd+bwd jaxreg exact" in table


def test_run_all_reports_a_failing_benchmark_and_goes_on():
    result = _run_all_module().run_one("no_such_benchmark", "--smoke", timeout=60)
    assert result["status"].startswith("failed (exit") and result["records"] == []
