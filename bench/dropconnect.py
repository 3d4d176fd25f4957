"""DropConnect benchmark: Dense 1024 -> 1024, batch 128, rate 0.5, float32.

Plain dense, one mask shared by the batch, and per-example masks; forward and
forward + backward (gradients w.r.t. x, kernel and bias). Prints a markdown table:
median time (and the spread between the 10th and 90th percentiles) after warm-up,
compile time apart, ratios to plain dense measured in this process, and XLA's compiled
memory analysis (temp = scratch the program needs beyond its arguments and outputs).

Run: .venv/bin/python bench/dropconnect.py [--repeats N] [--quick]
(``--quick``: one warm-up, 3 repeats, 1 for the per-example rows.)
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _harness import argument_parser, parse_args, record

import jaxreg

B, IN, OUT, RATE = 128, 1024, 1024, 0.5
MiB = 2**20


def dense(key, x, kernel, bias):
    del key
    return x @ kernel + bias


def shared(key, x, kernel, bias):
    return jaxreg.drop_connect_dense(key, x, kernel, bias, rate=RATE)


def per_example(key, x, kernel, bias):
    return jaxreg.drop_connect_dense(key, x, kernel, bias, rate=RATE, per_example=True)


def fwd_bwd(f):
    def loss(key, x, kernel, bias):
        y = f(key, x, kernel, bias)
        return jnp.sum(y * y)

    return jax.grad(loss, argnums=(1, 2, 3))


def measure(f, args, repeats, warmup=2):
    jitted = jax.jit(f)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    times = np.array(times) * 1e3
    return {
        "median": float(np.median(times)),
        "p10": float(np.percentile(times, 10)),
        "p90": float(np.percentile(times, 90)),
        "compile": compile_s,
        "temp": mem.temp_size_in_bytes / MiB,
        "peak": (
            mem.temp_size_in_bytes
            + mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            - mem.alias_size_in_bytes
        )
        / MiB,
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args_ = parse_args(parser)
    if args_.quick:
        args_.repeats = 3
    b, n_in, n_out = (8, 64, 64) if args_.smoke else (B, IN, OUT)
    x = jax.random.normal(jax.random.key(1), (b, n_in))
    kernel = jax.random.normal(jax.random.key(2), (n_in, n_out)) / 32
    bias = jnp.zeros((n_out,))
    key = jax.random.key(0)
    args = (key, x, kernel, bias)
    rows = []
    results = {}
    for name, f in (("plain dense", dense), ("shared mask", shared), ("per-example", per_example)):
        for mode, g in (("forward", f), ("fwd+bwd", fwd_bwd(f))):
            slow = name == "per-example"
            few = 1 if args_.quick else max(5, args_.repeats // 4)
            r = measure(g, args, few if slow else args_.repeats, 1 if args_.quick else 2)
            results[name, mode] = r
            rows.append((name, mode, r))
    print(
        f"jax {jax.__version__}, {platform.machine()} CPU, {jax.device_count()} device(s), "
        f"{__import__('os').cpu_count()} cores; Dense {n_in}->{n_out}, batch {b}, rate {RATE}, "
        "float32"
    )
    print()
    print(
        "| variant | pass | median ms (p10-p90) | x dense same pass | x own forward "
        "| temp MiB | peak MiB | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, r in rows:
        base = results["plain dense", mode]["median"]
        own = results[name, "forward"]["median"]
        print(
            f"| {name} | {mode} | {r['median']:.1f} ({r['p10']:.1f}-{r['p90']:.1f}) "
            f"| {r['median'] / base:.2f}x | {r['median'] / own:.2f}x | {r['temp']:.1f} "
            f"| {r['peak']:.1f} | {r['compile']:.2f} |"
        )
        record(
            f"dropconnect {name} {mode}",
            r["median"] / 1e3,
            vs_dense=r["median"] / base,
            temp_mib=r["temp"],
        )


if __name__ == "__main__":
    main()
