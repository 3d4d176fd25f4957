"""Grid benchmark: ``jaxreg.grid`` against a Python loop over single-model jitted scans.

For K models with K distinct dropout rates (and a traced weight decay), model-steps per
second (one step of one model = 1) of:

- ``loop``: a Python loop over the K models, each one call of a jitted single-model
  ``lax.scan`` over the steps (same step, keys and minibatches as the grid; one compile).
- ``grid auto`` / ``grid vmap`` / ``grid map``: ``jaxreg.grid.Trainer.train`` with that
  strategy (``map``: groups of 1). ``auto``'s probe and compiles are reported apart.

for the sweep's MLP (40-128-128-10, batch 128, MNIST-1D-sized random data) and a small
CNN (8x8x1 images, two 3x3 convolutions of 8 and 16 channels, batch 64), at K = 1, 8,
32, 96. Rounds are interleaved (every way once per round); figures are medians over
rounds, ratios are to the loop of the same round set.

Also: end to end (compiles included), one compile per distinct rate (``flax.linen.Dropout``
with a static rate, a Python loop over jitted steps, as in the flax examples) against
one grid, 32 rates; the MLP step's GFLOP/s as a fraction of a large matmul's rate (and
of the same batched matmuls alone); dropout's cost inside the step, ``sampler="exact"``
and ``"fast"``, against the same step without dropout.

Run: python bench/grid.py [--quick] [--ks 1,8,32,96] [--rounds 3] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import environment, record

import jaxreg
import jaxreg.grid as jg
import jaxreg.optax
from jaxreg.grid import _keys

MLP_SIZES = (40, 128, 128, 10)


def optimizer(hp):
    return jaxreg.optax.decoupled_adamw(1e-3, weight_decay=hp["weight_decay"])


# --- models ----------------------------------------------------------------------------


def mlp_init(key, hp):
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(MLP_SIZES) - 1), itertools.pairwise(MLP_SIZES), strict=True
    ):
        w = jax.random.normal(k, (n_in, n_out)) * np.float32(np.sqrt(2.0 / n_in))
        params.append({"kernel": w, "bias": jnp.zeros(n_out)})
    return params


def mlp_apply(params, hp, x, key, sampler="exact", drop=True):
    keys = jax.random.split(key, len(params) - 1)
    for layer, k in zip(params[:-1], keys, strict=True):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        if drop:
            x = jaxreg.dropout(k, x, rate=hp["rate"], sampler=sampler)
    return x @ params[-1]["kernel"] + params[-1]["bias"]


def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def cnn_init(key, hp):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "c1": jax.random.normal(k1, (3, 3, 1, 8)) * np.float32(np.sqrt(2 / 9)),
        "c2": jax.random.normal(k2, (3, 3, 8, 16)) * np.float32(np.sqrt(2 / 72)),
        "out": jax.random.normal(k3, (8 * 8 * 16, 10)) * np.float32(np.sqrt(1 / 1024)),
        "b": jnp.zeros(10),
    }


def cnn_apply(params, hp, x, key, sampler="exact", drop=True):
    k1, k2 = jax.random.split(key)
    h = jax.nn.relu(conv(x, params["c1"]))
    if drop:
        h = jaxreg.dropout(k1, h, rate=hp["rate"], sampler=sampler)
    h = jax.nn.relu(conv(h, params["c2"]))
    if drop:
        h = jaxreg.dropout(k2, h, rate=hp["rate"], sampler=sampler)
    return h.reshape(h.shape[0], -1) @ params["out"] + params["b"]


MODELS = {  # name: (init, apply, input shape, batch, examples)
    "mlp": (mlp_init, mlp_apply, (40,), 128, 4000),
    "cnn": (cnn_init, cnn_apply, (8, 8, 1), 64, 1797),
}


def make_loss(apply, **kw):
    def loss(params, hp, batch, key):
        logits = apply(params, hp, batch["x"], key, **kw)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss


def make_data(name):
    _, _, shape, _, n = MODELS[name]
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(n, *shape)).astype(np.float32),
        "y": rng.integers(0, 10, n).astype(np.int32),
    }


def make_grid(k):
    return jg.rows([{"rate": float(r), "weight_decay": 1e-4} for r in np.linspace(0.05, 0.6, k)])


# --- the loop: one jitted single-model scan per model ------------------------------------


def single_program(init, loss, batch, steps):
    """One model's ``steps`` steps, the grid's key rule and sampling, no vmap."""

    def run(params, opt_state, hp, data):
        opt = optimizer(hp)
        n = data["y"].shape[0]

        def step(carry, i):
            params, opt_state = carry
            kb, kl = _keys.step_keys(hp["seed"], i)
            idx = jax.random.randint(kb, (batch,), 0, n)
            b = jax.tree.map(lambda a: a[idx], data)
            grads = jax.grad(loss)(params, hp, b, kl)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), jnp.arange(steps))[0]

    def fresh(hp):
        params = init(_keys.init_key(hp["seed"]), hp)
        return params, optimizer(hp).init(params)

    return jax.jit(run, donate_argnums=(0, 1)), jax.jit(fresh)


def block(tree):
    return jax.block_until_ready(tree)


class Loop:
    def __init__(self, name, k, steps):
        init, apply, _, batch, _ = MODELS[name]
        self.run, fresh = single_program(init, make_loss(apply), batch, steps)
        grid = make_grid(k)
        self.hps = [
            {"rate": jnp.float32(r), "weight_decay": jnp.float32(d), "seed": jnp.int32(0)}
            for r, d in zip(grid.hparams["rate"], grid.hparams["weight_decay"], strict=True)
        ]
        self.starts = [block(fresh(hp)) for hp in self.hps]

    def time(self, data):
        carries = [block(jax.tree.map(jnp.copy, c)) for c in self.starts]
        t0 = time.perf_counter()
        for (p, o), hp in zip(carries, self.hps, strict=True):
            out = self.run(p, o, hp, data)
        block(out)
        return time.perf_counter() - t0


class Grid:
    def __init__(self, name, k, steps, strategy, **kw):
        init, apply, _, batch, _ = MODELS[name]
        self.trainer = jg.Trainer(
            init=init, loss=make_loss(apply, **kw), optimizer=optimizer, batch_size=batch,
            chunk_steps=steps, strategy=strategy,
        )  # fmt: skip
        self.steps = steps
        self.grid = make_grid(k)

    def prepare(self, data):
        t0 = time.perf_counter()
        self.state = block(self.trainer.init_state(self.grid, data))
        self.plan = self.trainer.plan(self.state, data)
        self.trainer.train(self.state, data, steps=self.steps)  # compiles
        return time.perf_counter() - t0

    def time(self, data):
        t0 = time.perf_counter()
        block(self.trainer.train(self.state, data, steps=self.steps))
        return time.perf_counter() - t0


# --- throughput ------------------------------------------------------------------------


def bench_model(name, ks, steps, rounds, results, strategies=("auto", "vmap", "map")):
    data = jax.device_put(make_data(name))
    print(f"\n### {name}: {steps} steps per model per measurement, {rounds} rounds\n")
    print(
        "| K | loop | grid auto (choice) | grid vmap | grid map | auto / loop | vmap / loop "
        "| map / loop | auto probe+compile s |\n|---|---|---|---|---|---|---|---|---|"
    )
    for k in ks:
        ways = {"loop": Loop(name, k, steps)}
        ways["loop"].time(data)  # compiles
        for s in strategies:
            ways[s] = Grid(name, k, steps, s)
        setup = {s: ways[s].prepare(data) for s in strategies}
        times = {w: [] for w in ways}
        for _ in range(rounds):
            for w, way in ways.items():
                times[w].append(way.time(data))
        rate = {w: k * steps / statistics.median(t) for w, t in times.items()}
        plan = ways["auto"].plan
        choice = plan.strategy if plan.strategy == "vmap" else f"map G={plan.group_size}"
        results[(name, k)] = {"rate": rate, "choice": choice, "setup": setup["auto"]}
        r = {w: rate[w] / rate["loop"] for w in rate}
        seconds = statistics.median(times["auto"])
        record(f"grid {name} K={k} auto ({choice})", seconds, **{f"{w}_vs_loop": r[w] for w in r})
        rate_of = {w: f"{rate[w]:.0f}" if w in rate else "-" for w in ("vmap", "map")}
        ratio = {w: f"{r[w]:.2f}x" if w in r else "-" for w in ("vmap", "map")}
        print(
            f"| {k} | {rate['loop']:.0f} | {rate['auto']:.0f} ({choice}) | {rate_of['vmap']} "
            f"| {rate_of['map']} | {r['auto']:.2f}x | {ratio['vmap']} | {ratio['map']} "
            f"| {setup['auto']:.1f} |",
            flush=True,
        )


# --- one compile per rate (the flax way) against one grid -------------------------------


def flax_way(rates, steps, data):
    import flax.linen as nn

    class MLP(nn.Module):
        rate: float

        @nn.compact
        def __call__(self, x, train):
            for width in MLP_SIZES[1:-1]:
                x = nn.Dropout(self.rate, deterministic=not train)(nn.relu(nn.Dense(width)(x)))
            return nn.Dense(MLP_SIZES[-1])(x)

    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    t0 = time.perf_counter()
    for i, rate in enumerate(rates):
        model = MLP(float(rate))
        tx = jaxreg.optax.decoupled_adamw(1e-3, weight_decay=1e-4)
        params = model.init(jax.random.key(i), x[:1], train=False)["params"]
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, key, model=model, tx=tx):
            kb, kd = jax.random.split(key)
            idx = jax.random.randint(kb, (128,), 0, x.shape[0])

            def loss(p):
                logits = model.apply({"params": p}, x[idx], True, rngs={"dropout": kd})
                return optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()

            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        for s in range(steps):
            params, opt_state = step(params, opt_state, jax.random.key(s))
        block(params)
    return time.perf_counter() - t0


def grid_end_to_end(k, steps, data):
    t0 = time.perf_counter()
    g = Grid("mlp", k, steps, "auto")
    state = g.trainer.init_state(g.grid, data)
    block(g.trainer.train(state, data, steps=steps))
    return time.perf_counter() - t0


# --- compute efficiency and dropout's cost ----------------------------------------------


def matmul_rate(n=2048, repeats=10):
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda a: a @ a)
    block(f(a))
    t = min(_timed(f, a) for _ in range(repeats))
    return 2 * n**3 / t


def _timed(f, *args):
    t0 = time.perf_counter()
    block(f(*args))
    return time.perf_counter() - t0


def mlp_step_flops(batch=128):
    """Multiply-adds of the forward matmuls x 2 (flops) x 3 (forward, two backward)."""
    return 6 * batch * sum(a * b for a, b in itertools.pairwise(MLP_SIZES))


def batched_matmuls_rate(k, batch=128, repeats=10):
    """The MLP step's matmuls alone (forward, input and weight gradients), K models."""
    rng = jax.random.key(0)
    xs = [jax.random.normal(rng, (k, batch, n)) for n in MLP_SIZES]
    ws = [jax.random.normal(rng, (k, a, b)) for a, b in itertools.pairwise(MLP_SIZES)]

    def f(xs, ws):
        out = []
        for i, w in enumerate(ws):
            out.append(jnp.einsum("kbi,kio->kbo", xs[i], w))  # forward
            out.append(jnp.einsum("kbo,kio->kbi", xs[i + 1], w))  # input gradient
            out.append(jnp.einsum("kbi,kbo->kio", xs[i], xs[i + 1]))  # weight gradient
        return out

    jf = jax.jit(f)
    block(jf(xs, ws))
    t = min(_timed(jf, xs, ws) for _ in range(repeats))
    return k * mlp_step_flops(batch) / t


def dropout_cost(k, steps, rounds, data, samplers=("exact", "fast")):
    ways = {"none": Grid("mlp", k, steps, "vmap", drop=False)}
    ways.update({s: Grid("mlp", k, steps, "vmap", sampler=s) for s in samplers})
    for w in ways.values():
        w.prepare(data)
    times = {w: [] for w in ways}
    for _ in range(rounds):
        for w, way in ways.items():
            times[w].append(way.time(data))
    return {w: statistics.median(t) for w, t in times.items()}


def end_to_end(k, s, data):
    t_flax = flax_way(np.linspace(0.05, 0.6, k), s, data)
    t_grid = grid_end_to_end(k, s, data)
    print(
        f"\n### One compile per rate against one grid ({k} rates, {s} steps each, end to end)\n\n"
        f"flax way (static rates, {k} compiles): {t_flax:.1f} s; grid (auto, probe and "
        f"compiles included): {t_grid:.1f} s; ratio **{t_flax / t_grid:.1f}x**"
    )
    record(f"grid mlp {k} rates end to end", t_grid, flax_way_vs_grid=t_flax / t_grid)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="K=1,8,32, 1 round, fewer steps")
    mode.add_argument("--smoke", action="store_true", help="K=2, tiny: checks that it runs")
    p.add_argument("--ks", help="comma-separated K (default 1,8,32,96; quick 1,8,32)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    p.add_argument("--models", help="comma-separated (default mlp,cnn; smoke mlp)")
    p.add_argument("--flax-rates", type=int, default=32)
    p.add_argument("--steps", help="steps per measurement, mlp,cnn (default 50,6; quick 20,3)")
    args = p.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    default_ks = {"smoke": "2", "quick": "1,8,32", "full": "1,8,32,96"}[mode]
    ks = [int(k) for k in (args.ks or default_ks).split(",")]
    rounds = args.rounds or {"smoke": 1, "quick": 1, "full": 3}[mode]
    default_steps = {"smoke": "2,1", "quick": "20,3", "full": "50,6"}[mode]
    mlp_steps, cnn_steps = map(int, (args.steps or default_steps).split(","))
    steps = {"mlp": mlp_steps, "cnn": cnn_steps}
    print(environment())
    results = {}
    for name in (args.models or ("mlp" if args.smoke else "mlp,cnn")).split(","):
        # smoke: the automatic strategy only (its probe compiles vmap and map anyway)
        strategies = ("auto",) if args.smoke else ("auto", "vmap", "map")
        bench_model(name, ks, steps[name], rounds, results, strategies)

    data = jax.device_put(make_data("mlp"))
    if not args.smoke:  # the smoke run exercises the probe and compiles above
        end_to_end(args.flax_rates, steps["mlp"], data)

    n = 512 if args.smoke else 2048
    peak = matmul_rate(n, repeats=2 if args.smoke else 10)
    kk = 32 if 32 in ks else ks[-1]
    print(f"\n### Compute efficiency (MLP, K={kk})\n")
    print(f"large matmul ({n}^3, float32): {peak / 1e9:.1f} GFLOP/s")
    if ("mlp", kk) in results:
        for w in ("loop", "vmap", "auto"):
            if w not in results[("mlp", kk)]["rate"]:
                continue
            rate = results[("mlp", kk)]["rate"][w] * mlp_step_flops() / 1e9
            print(f"- step, {w}: {rate:.1f} GFLOP/s = {rate * 1e9 / peak:.0%} of the matmul rate")
    bm = batched_matmuls_rate(kk, repeats=2 if args.smoke else 10)
    print(f"- the step's batched matmuls alone: {bm / 1e9:.1f} GFLOP/s = {bm / peak:.0%}")

    samplers = ("fast",) if args.smoke else ("exact", "fast")
    t = dropout_cost(kk, steps["mlp"], max(rounds, 3), data, samplers)
    t.setdefault("exact", float("nan"))
    print(
        f"\n### Dropout's cost inside the MLP step (vmap, K={kk})\n\n"
        f"exact: +{t['exact'] / t['none'] - 1:.0%}, fast: +{t['fast'] / t['none'] - 1:.0%} "
        f"(step time with dropout / without - 1; {t['none'] / (kk * steps['mlp']) * 1e6:.0f} "
        "us per model-step without)"
    )
    record(
        f"grid mlp K={kk} dropout cost", t["none"],
        exact_vs_none=t["exact"] / t["none"], fast_vs_none=t["fast"] / t["none"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
