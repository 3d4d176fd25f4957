"""Sweep benchmark: K models trained at once, three (and a half) ways.

Model-steps per second (one training step of one model = 1) for K models with K distinct
dropout rates, Adam, dropout after both hidden layers, a minibatch sampled per step and
per model from a device-resident data set:

- ``vmap+scan``: jaxreg, rates as a traced array, ``jit(vmap(scan(step)))``: one compile.
- ``map+scan``: the same program with the models in groups of G (``lax.map(...,
  batch_size=G)``: vmap inside a group, a loop over groups): one compile; G = K is
  ``vmap+scan``, G = 1 runs the models one after the other inside one program.
- ``loop``: a Python loop over K runs of a jitted single-model step (jaxreg, traced
  rate: one compile).
- ``flax``: ``flax.linen.Dropout`` with a static rate: one compile per distinct rate; a
  Python loop over steps as in the flax examples. Reported with and without the
  compiles, and the number of compiles.

Sizes: the sweep's MLP (40-128-128-10, batch 128) and 784-512-512-10 at batch 128.
Every ratio is measured in one process, in alternating rounds (``--rounds``), so the
ratios hold on a shared machine even when absolute rates do not.

Run: .venv/bin/python bench/sweep.py [--quick] [--ks 1,8,32,96] [--sizes small,large]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import environment, record

import jaxreg

SIZES = {"small": ((40, 128, 128, 10), 128), "large": ((784, 512, 512, 10), 128)}
N_DATA = 1024
OPT = optax.adam(1e-3)


def init(key, sizes):
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=True
    ):
        w = jax.random.normal(k, (n_in, n_out)) * np.float32(np.sqrt(2.0 / n_in))
        params.append({"kernel": w, "bias": jnp.zeros(n_out)})
    return params


def forward(params, x, key, drop):
    keys = jax.random.split(key, len(params) - 1)
    for layer, k in zip(params[:-1], keys, strict=True):
        x = drop(k, jax.nn.relu(x @ layer["kernel"] + layer["bias"]))
    return x @ params[-1]["kernel"] + params[-1]["bias"]


def make_step(batch, drop_for):
    """One training step of one model; ``drop_for(rate)`` returns ``(key, x) -> x``."""

    def step(carry, rate, x, y):
        params, opt_state, key = carry
        key, kb, kd = jax.random.split(key, 3)
        idx = jax.random.randint(kb, (batch,), 0, x.shape[0])

        def loss(p):
            logits = forward(p, x[idx], kd, drop_for(rate))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = OPT.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key

    return step


def jaxreg_drop(rate):
    return lambda k, h: jaxreg.dropout(k, h, rate=rate)


def flax_drop(rate):
    layer = nn.Dropout(rate, deterministic=False)
    return lambda k, h: layer.apply({}, h, rngs={"dropout": k})


def init_carry(key, sizes):
    params = init(key, sizes)
    return params, OPT.init(params), jax.random.fold_in(key, 1)


def vmap_program(sizes, batch, steps, group):
    step = make_step(batch, jaxreg_drop)

    def one(carry, rate, x, y):
        def body(c, _):
            return step(c, rate, x, y), None

        return jax.lax.scan(body, carry, None, length=steps)[0]

    def program(carries, rates, x, y):
        if group is None:
            return jax.vmap(one, in_axes=(0, 0, None, None))(carries, rates, x, y)
        return jax.lax.map(lambda cr: one(cr[0], cr[1], x, y), (carries, rates), batch_size=group)

    return jax.jit(program, donate_argnums=0)


def block(tree):
    return jax.block_until_ready(tree)


def copy(tree):
    return block(jax.tree_util.tree_map(jnp.copy, tree))


def time_program(fn, carries0, rates, x, y):
    """One call of a compiled all-models program (vmap+scan or map+scan)."""
    carries = copy(carries0)
    t0 = time.perf_counter()
    block(fn(carries, jnp.asarray(rates), x, y))
    return time.perf_counter() - t0


def time_vmap_step(vstep, carries0, rates, x, y, steps):
    """A Python loop over steps of a jitted, vmapped one-step program."""
    carries, r = copy(carries0), jnp.asarray(rates)
    t0 = time.perf_counter()
    for _ in range(steps):
        carries = vstep(carries, r, x, y)
    block(carries)
    return time.perf_counter() - t0


def time_loop(single, singles, rates, x, y, steps):
    """A Python loop over models, each a Python loop over a jitted single-model step."""
    carries = [copy(c) for c in singles]
    t0 = time.perf_counter()
    for i, rate in enumerate(rates):
        r = jnp.float32(rate)
        for _ in range(steps):
            carries[i] = single(carries[i], r, x, y)
    block(carries)
    return time.perf_counter() - t0


def bench_size(name, ks, steps, rounds, flax_ks, groups):
    sizes, batch = SIZES[name]
    x = jax.random.normal(jax.random.key(1), (N_DATA, sizes[0]))
    y = jax.random.randint(jax.random.key(2), (N_DATA,), 0, sizes[-1])
    single_step = make_step(batch, jaxreg_drop)
    single = jax.jit(single_step, donate_argnums=0)
    vstep = jax.jit(jax.vmap(single_step, in_axes=(0, 0, None, None)), donate_argnums=0)
    results = []
    for k in ks:
        rates = np.linspace(0.05, 0.6, k).astype(np.float32)
        carries0 = jax.vmap(lambda kk: init_carry(kk, sizes))(
            jax.random.split(jax.random.key(0), k)
        )
        singles = [jax.tree_util.tree_map(lambda a, i=i: a[i], carries0) for i in range(k)]
        programs = {"vmap+scan": vmap_program(sizes, batch, steps, None)}
        programs.update(
            {f"map+scan G={g}": vmap_program(sizes, batch, steps, g) for g in groups if g < k}
        )
        compile_s = {}
        for w, fn in programs.items():
            t0 = time.perf_counter()
            programs[w] = fn.lower(carries0, jnp.asarray(rates), x, y).compile()
            compile_s[w] = time.perf_counter() - t0
        time_loop(single, singles[:1], rates[:1], x, y, 1)  # compile (once for every K)
        time_vmap_step(vstep, carries0, rates, x, y, 1)  # compile (once per K)
        times = {w: [] for w in [*programs, "vmap step", "loop"]}
        for _ in range(rounds):
            for w, fn in programs.items():
                times[w].append(time_program(fn, carries0, rates, x, y))
            times["vmap step"].append(time_vmap_step(vstep, carries0, rates, x, y, steps))
            times["loop"].append(time_loop(single, singles, rates, x, y, steps))
        row = {"size": name, "K": k, "compile": compile_s}
        row.update({w: k * steps / statistics.median(ts) for w, ts in times.items()})
        if k in flax_ks:
            row.update(bench_flax(batch, steps, rates, singles, x, y))
        results.append(row)
        print_row(row, list(times))
    return results


def bench_flax(batch, steps, rates, singles, x, y):
    """One jit per distinct (static) rate; returns rates with and without compiles."""
    traces = 0

    def make(rate):
        inner = make_step(batch, flax_drop)

        def step(carry, x, y):
            nonlocal traces
            traces += 1
            return inner(carry, float(rate), x, y)

        return jax.jit(step, donate_argnums=0)

    cs = [jax.tree_util.tree_map(jnp.copy, c) for c in singles]
    block(cs)
    t0 = time.perf_counter()
    compile_time = 0.0
    for i, r in enumerate(rates):
        fn = make(r)
        tc = time.perf_counter()
        fn = fn.lower(cs[i], x, y).compile()
        compile_time += time.perf_counter() - tc
        for _ in range(steps):
            cs[i] = fn(cs[i], x, y)
    block(cs)
    total = time.perf_counter() - t0
    k = len(rates)
    return {
        "flax compiles": traces,
        "flax end-to-end": k * steps / total,
        "flax run only": k * steps / (total - compile_time),
        "flax compile s": compile_time,
    }


def print_row(row, ways):
    base = row["loop"]
    parts = [f"{row['size']} K={row['K']}:"]
    for w in ways:
        parts.append(f"{w} {row[w]:.0f} ({row[w] / base:.2f}x loop)")
    if "flax end-to-end" in row:
        e2e = row["flax end-to-end"]
        parts.append(
            f"flax {e2e:.0f} end-to-end, {row['flax run only']:.0f} run-only, "
            f"{row['flax compiles']} compiles ({row['flax compile s']:.1f} s); "
            f"vmap+scan / flax end-to-end {vmap_e2e(row) / e2e:.1f}x"
        )
    print(" | ".join(parts), flush=True)
    for w in ways:  # seconds per model-step
        record(f"sweep {row['size']} K={row['K']} {w}", 1 / row[w], vs_loop=row[w] / base)


def vmap_e2e(row):
    """vmap+scan model-steps/s including its one compile (same steps as measured)."""
    work = row["K"] * STEPS[row["size"]]
    return work / (work / row["vmap+scan"] + row["compile"]["vmap+scan"])


STEPS = {}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K=1,32; 1 round; fewer steps")
    p.add_argument("--smoke", action="store_true", help="K=2, small MLP, 2 steps (a run check)")
    p.add_argument("--ks", default="1,8,32,96")
    p.add_argument("--sizes", default="small,large")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--flax-ks", default="32", help="K values that also run the flax way")
    p.add_argument("--groups", default="", help="group sizes G for map+scan, e.g. 1,8")
    args = p.parse_args()
    args.quick = args.quick or args.smoke
    ks = [1, 32] if args.quick else [int(k) for k in args.ks.split(",")]
    rounds = 1 if args.quick else args.rounds
    if args.smoke:
        ks, args.sizes, args.flax_ks = [2], "small", ""
    flax_ks = {int(k) for k in args.flax_ks.split(",") if k}
    groups = [int(g) for g in args.groups.split(",") if g]
    print(environment())
    for name in args.sizes.split(","):
        STEPS[name] = (20 if args.quick else 50) if name == "small" else (4 if args.quick else 10)
        STEPS[name] = 2 if args.smoke else STEPS[name]
        print(
            f"\n{name}: MLP {'-'.join(map(str, SIZES[name][0]))}, batch {SIZES[name][1]}, "
            f"{STEPS[name]} steps per model per measurement, {rounds} rounds (median)"
        )
        bench_size(name, ks, STEPS[name], rounds, flax_ks, groups)


if __name__ == "__main__":
    main()
