"""Shared benchmark harness: warm-up, many repeats, medians, ratios in one process.

Every figure is measured in the same process as its reference (the memory-bandwidth
floor ``x * 2``), so the ratios are meaningful on a shared, noisy machine even when the
absolute times are not. Compile time is reported apart from run time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """Run-time statistics of one compiled function, in seconds."""

    median: float
    p10: float
    p90: float
    compile: float
    repeats: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative spread of the repeats."""
        return (self.p90 - self.p10) / self.median


def measure(
    fn: Callable[..., Any],
    *args: Any,
    repeats: int | None = None,
    min_time: float = 1.0,
    warmup: int = 3,
) -> Timing:
    """Times ``jax.jit(fn)(*args)``: compile once, warm up, then repeat.

    Without ``repeats``, repeats until ``min_time`` seconds have passed (at least 10,
    at most 500 times).
    """
    jitted = jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    budget_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
        n = len(times)
        if repeats is not None:
            if n >= repeats:
                break
        elif (n >= 10 and time.perf_counter() - budget_start > min_time) or n >= 500:
            break
    q = np.quantile(times, [0.1, 0.9])
    return Timing(statistics.median(times), float(q[0]), float(q[1]), compile_s, len(times))


def interleaved(
    fns: dict[str, tuple[Callable[..., Any], tuple]], rounds: int = 5, min_time: float = 0.4
) -> dict[str, Timing]:
    """Measures several functions in alternating rounds; median of the per-round medians.

    Alternating the rows spreads slow phases of a shared machine over all of them.
    """
    per_round: dict[str, list[Timing]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, args) in fns.items():
            per_round[name].append(measure(fn, *args, min_time=min_time, warmup=1))
    out = {}
    for name, ts in per_round.items():
        meds = sorted(t.median for t in ts)
        out[name] = Timing(
            statistics.median(meds),
            meds[0],
            meds[-1],
            ts[0].compile,
            sum(t.repeats for t in ts),
        )
    return out


def paired(
    rows: dict[str, tuple[Callable[..., Any], tuple]], rounds: int, min_time: float = 0.2
) -> dict[str, dict[str, Any]]:
    """Per-round medians of wall and process CPU time, the rows alternating in each round.

    Every row is compiled and run once first; each round then times every row in turn,
    ``reps`` calls each (enough for about ``min_time`` seconds, from the first call), so
    a slow phase of a shared machine hits every row of that round and ratios can be
    taken round by round (``paired_ratio``). CPU time (all threads of this process)
    counts the work done and is far less disturbed by other processes than wall time
    on a loaded CPU; on an accelerator use wall time.

    Returns:
      name -> {"wall": [s per round], "cpu": [s per round], "compile": s}.
    """
    compiled, out = {}, {}
    for name, (fn, args) in rows.items():
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(*args).compile()
        out[name] = {"wall": [], "cpu": [], "compile": time.perf_counter() - t0}
        t0 = time.perf_counter()
        jax.block_until_ready(compiled[name](*args))
        out[name]["reps"] = max(1, min(50, int(min_time / max(time.perf_counter() - t0, 1e-6))))
    for _ in range(rounds):
        for name, (_, args) in rows.items():
            wall, cpu = [], []
            for _ in range(out[name]["reps"]):
                w0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(compiled[name](*args))
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            out[name]["wall"].append(statistics.median(wall))
            out[name]["cpu"].append(statistics.median(cpu))
    return out


def paired_ratio(times: dict, num: str, den: str | list[str], clock: str) -> float:
    """Median over rounds of ``num``'s time over ``den``'s (the fastest of a list)."""
    dens = [den] if isinstance(den, str) else den
    ratios = [t / min(times[d][clock][i] for d in dens) for i, t in enumerate(times[num][clock])]
    return statistics.median(ratios)


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the flags every benchmark shares: ``--quick`` and ``--smoke``.

    ``--quick`` is a short run (the smallest sizes on CPU, one round, short timing
    windows): it checks that the benchmark runs and gives rough ratios in about a minute
    on a 2-core CPU. Its figures are noisier than a full run's; do not report them.
    ``--smoke`` is smaller still (tiny shapes, one timed call): it only checks that the
    benchmark runs, for the test suite (``bench/run_all.py --smoke``); its figures mean
    nothing. ``--smoke`` implies ``--quick``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run: smallest sizes, one round, short timing windows (rough figures)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes, one timed call: checks the benchmark runs (figures meaningless)",
    )
    return parser


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser.parse_args()``, with ``--smoke`` implying ``--quick``."""
    args = parser.parse_args()
    args.quick = args.quick or args.smoke
    return args


def on_accelerator() -> bool:
    """Whether JAX's default device is a GPU or TPU (figures then in absolute times)."""
    return jax.devices()[0].platform != "cpu"


RECORD_PREFIX = "BENCH_RECORD "
RECORDS_ENV = "JAXREG_BENCH_RECORDS"  # set by run_all.py: print records


def record(case: str, seconds: float | None = None, **ratios: float) -> None:
    """Prints one machine-readable result for ``bench/run_all.py``.

    ``case`` names the measurement (``"attention S=1024 float32 fwd+bwd jaxreg exact"``),
    ``seconds`` is its absolute median time (None where only a ratio is meaningful),
    ``ratios`` are named ratios (``vs_none=1.07``). run_all.py collects these lines into
    ``bench/results/<device>.json`` and a markdown table: absolute times on an
    accelerator, ratios on CPU. Printed only when run_all.py sets ``RECORDS_ENV``.
    """
    if not os.environ.get(RECORDS_ENV):
        return
    row = {"case": case, "seconds": seconds, "ratios": {k: float(v) for k, v in ratios.items()}}
    print(RECORD_PREFIX + json.dumps(row), flush=True)


def environment() -> str:
    """One line naming the device, the host and the versions."""
    import jaxlib

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    versions = f"jax {jax.__version__}, jaxlib {jaxlib.__version__}"
    try:
        import flax

        versions += f", flax {flax.__version__}"
    except ImportError:
        pass
    import os

    return (
        f"device: {dev.platform} ({kind}) x{jax.device_count()}; host: {platform.machine()}, "
        f"{os.cpu_count()} cores; {versions}; python {platform.python_version()}"
    )
