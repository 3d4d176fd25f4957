"""Runs every benchmark in bench/ on whatever backend JAX sees; writes JSON and markdown.

Each benchmark (every ``bench/*.py`` but this file and ``_*.py``) runs in its own
process, one after the other, so that a failure, a time-out or an out-of-memory error
in one is reported and the others still run. Benchmarks print their own markdown
tables; they also print machine-readable records (``_harness.record``), which this
script collects into

- ``<out>/<device>.json``: the environment, and per benchmark its command, exit status,
  wall time, records and printed output;
- ``<out>/<device>.md``: a summary, one table of every record (absolute times with the
  device's name on an accelerator, ratios on CPU), and each benchmark's own output.

Modes: default (full runs: long), ``--quick`` (short runs; within 8 minutes on one
GPU, every benchmark with a per-benchmark time limit and an overall budget) and
``--smoke`` (tiny shapes: checks that everything runs; the test suite uses it).

Run: python bench/run_all.py [--quick | --smoke] [--only attention dropout] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RECORD_PREFIX = "BENCH_RECORD "  # as in _harness.py (not imported: it imports jax)
# Attention first: it is what an accelerator run is for.
ORDER = ("attention", "attention_memory", "dropout", "dropout_backward", "dropconnect")
# Per-benchmark time limit and overall budget (seconds) per mode; None: no limit. The
# quick budget is for an accelerator (8 minutes in all, device start included); on CPU,
# --quick has only a per-benchmark limit.
LIMITS = {"full": (None, None), "quick": (240, 450), "smoke": (120, 400)}
CPU_QUICK_LIMIT = 900


def benchmarks() -> list[str]:
    names = [p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")]
    names.remove("run_all")
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def child_env() -> dict[str, str]:
    env = dict(os.environ, JAXREG_BENCH_RECORDS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def probe_device() -> dict[str, str]:
    """The default device, asked in a child process (this one never starts a backend,
    so it holds no accelerator memory while the benchmarks run)."""
    code = (
        "import jax, json; d = jax.devices()[0]; "
        "print(json.dumps({'platform': d.platform, 'kind': getattr(d, 'device_kind', ''), "
        "'count': jax.device_count(), 'jax': jax.__version__}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
            env=child_env(), check=True,
        )  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        return {"platform": "unknown", "kind": "", "count": 0, "error": str(err)}


def device_slug(device: dict[str, str]) -> str:
    if device["platform"] == "cpu":
        return "cpu"
    name = device.get("kind") or device["platform"]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def run_one(name: str, flag: str | None, timeout: float | None) -> dict:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *([flag] if flag else [])]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), cwd=ROOT
        )
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        status, code = f"timed out after {timeout:.0f} s", None
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
    except OSError as err:
        status, code, stdout, stderr = f"could not start: {err}", None, "", ""
    records, printed = [], []
    for line in stdout.splitlines():
        if line.startswith(RECORD_PREFIX):
            try:
                records.append(json.loads(line[len(RECORD_PREFIX) :]))
            except ValueError:
                printed.append(line)
        else:
            printed.append(line)
    return {
        "command": " ".join(cmd[1:]),
        "status": status,
        "returncode": code,
        "seconds": time.perf_counter() - start,
        "records": records,
        "output": "\n".join(printed),
        "stderr_tail": stderr[-3000:],
    }


def markdown(report: dict) -> str:
    device, accel = report["device"], report["device"]["platform"] not in ("cpu", "unknown")
    title = f"{device.get('kind') or device['platform']} ({device['platform']})"
    lines = [
        f"# Benchmarks on {title}",
        "",
        f"Mode: {report['mode']}; started {report['started']}; "
        f"{report['total_seconds']:.0f} s in all. "
        + (
            "Times are absolute (median seconds of the compiled call, shown in ms)."
            if accel
            else "CPU: ratios only (absolute times are in the JSON, for orientation)."
        ),
        "",
        "| benchmark | status | wall s | records |",
        "|---|---|---|---|",
    ]
    for name, r in report["benchmarks"].items():
        lines.append(f"| {name} | {r['status']} | {r['seconds']:.0f} | {len(r['records'])} |")
    lines += ["", "## Records", ""]
    lines.append("| case | " + ("ms | " if accel else "") + "ratios |")
    lines.append("|---|---|" + ("---|" if accel else ""))
    for r in report["benchmarks"].values():
        for rec in r["records"]:
            ratios = ", ".join(f"{k} {v:.3g}" for k, v in rec["ratios"].items())
            ms = rec["seconds"]
            cell = (f"{ms * 1e3:.3g} | " if ms is not None else "- | ") if accel else ""
            lines.append(f"| {rec['case']} | {cell}{ratios} |")
    for name, r in report["benchmarks"].items():
        lines += ["", f"## {name}", "", f"`{r['command']}`: {r['status']}", "", r["output"]]
        if r["status"] != "ok" and r["stderr_tail"]:
            lines += ["", "```", r["stderr_tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs (< 8 min on a GPU)")
    mode.add_argument("--smoke", action="store_true", help="tiny runs: checks everything runs")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    parser.add_argument("--out", default=str(HERE / "results"), help="output directory")
    parser.add_argument("--timeout", type=float, help="per-benchmark limit in seconds")
    parser.add_argument("--budget", type=float, help="overall budget in seconds")
    args = parser.parse_args()
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    flag = {"smoke": "--smoke", "quick": "--quick", "full": None}[mode_name]
    names = [n for n in benchmarks() if not args.only or n in args.only]
    started = time.perf_counter()
    device = probe_device()
    limit, budget = LIMITS[mode_name]
    if mode_name == "quick" and device["platform"] == "cpu":
        limit, budget = CPU_QUICK_LIMIT, None
    limit, budget = args.timeout or limit, args.budget or budget
    print(f"run_all ({mode_name}): {len(names)} benchmarks on {device}", flush=True)
    report = {
        "device": device,
        "mode": mode_name,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "benchmarks": {},
    }
    for i, name in enumerate(names, 1):
        left = None if budget is None else budget - (time.perf_counter() - started)
        if left is not None and left < 10:
            result = {"command": name, "status": "skipped (budget spent)", "returncode": None,
                      "seconds": 0.0, "records": [], "output": "", "stderr_tail": ""}  # fmt: skip
        else:
            timeout = limit if left is None else min(limit or left, left)
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            result = run_one(name, flag, timeout)
        report["benchmarks"][name] = result
        print(f"[{i}/{len(names)}] {name}: {result['status']} in {result['seconds']:.0f} s, "
              f"{len(result['records'])} records", flush=True)  # fmt: skip
    report["total_seconds"] = time.perf_counter() - started

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_slug(device)
    (out / f"{slug}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{slug}.md").write_text(markdown(report))
    failed = [n for n, r in report["benchmarks"].items() if r["status"] != "ok"]
    print(f"wrote {out / slug}.json and .md in {report['total_seconds']:.0f} s; "
          f"{len(failed)} not ok: {failed}", flush=True)  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
