"""Does a faster dropout mask speed up a training step? An MLP step, end to end.

One SGD step (forward, backward, update) of an MLP with dropout after each hidden
layer, as a ratio to the same step without dropout, measured in the same process in
paired rounds (every variant timed in turn within a round): ``jaxreg.dropout`` against
``flax.linen.Dropout``. Two shapes:

- small: MNIST-1D-sized MLP 40-256-256-10, batch 128 (matmul-bound on a CPU);
- wide: 64-512-512-10, batch 8192 (4M-element activations, cheap layers);
- fan-in: 1024-2048-2048-10, batch 256 (4096 matmul flops per activation element).

Run: python bench/mlp_step.py [--quick] [--dtypes float32 bfloat16] [--shapes small ...]
(``--quick``: the small shape only, float32, one round.)
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from _harness import argument_parser, environment, parse_args, record

import jaxreg

RATE = 0.5
SHAPES = {
    "small": (128, (40, 256, 256, 10)),
    "wide": (8192, (64, 512, 512, 10)),
    "fan-in": (256, (1024, 2048, 2048, 10)),
}
REPS = {"small": 20, "wide": 3, "fan-in": 3}  # calls per variant per round


def init(key, widths, dtype):
    keys = jax.random.split(key, len(widths) - 1)
    return [
        (
            (jax.random.normal(k, (a, b)) / jnp.sqrt(a)).astype(dtype),
            jnp.zeros((b,), dtype),
        )
        for k, a, b in zip(keys, widths[:-1], widths[1:], strict=True)
    ]


def make_step(drop):
    """An SGD step; ``drop(key, h)`` is applied after every hidden activation."""

    def loss(params, key, x, y):
        h = x
        keys = jax.random.split(key, len(params))
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = drop(keys[i], jax.nn.relu(h))
        return jnp.mean(optax_free_xent(h.astype(jnp.float32), y))

    def step(params, key, x, y):
        grads = jax.grad(loss)(params, key, x, y)
        return jax.tree.map(lambda p, g: p - 0.01 * g.astype(p.dtype), params, grads)

    return step


def optax_free_xent(logits, labels):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


FLAX = nn.Dropout(RATE, deterministic=False)
VARIANTS = {
    "no dropout": lambda k, h: h,
    "jaxreg.dropout": lambda k, h: jaxreg.dropout(k, h, rate=RATE),
    "flax.linen.Dropout": lambda k, h: FLAX.apply({}, h, rng=k),
}


def paired_rounds(rows: dict, rounds: int, reps: int) -> dict[str, dict[str, list[float]]]:
    """Per-round median step times (wall and CPU seconds), variants alternating per round.

    Each function is compiled once; a round times ``reps`` calls of each variant in
    turn, so a slow phase of a shared machine hits every variant of that round, and
    ratios are taken round by round (paired). CPU time (all of this process's threads)
    counts the work done and is far less disturbed by other processes than wall time.
    """
    compiled = {name: jax.jit(fn).lower(*args).compile() for name, (fn, args) in rows.items()}
    for name, (_, args) in rows.items():
        jax.block_until_ready(compiled[name](*args))
    out = {name: {"wall": [], "cpu": []} for name in rows}
    for _ in range(rounds):
        for name, (_, args) in rows.items():
            wall, cpu = [], []
            for _ in range(reps):
                w0, c0 = time.perf_counter(), time.process_time()
                jax.block_until_ready(compiled[name](*args))
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            out[name]["wall"].append(statistics.median(wall))
            out[name]["cpu"].append(statistics.median(cpu))
    return out


def _ratio(t: dict, num: str, den: str, clock: str) -> str:
    ratios = [a / b for a, b in zip(t[num][clock], t[den][clock], strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parse_args(parser)
    shapes = ["small"] if args.quick else args.shapes
    if args.quick:
        args.dtypes, args.rounds = ["float32"], 3
    if args.smoke:
        args.rounds = 1
        REPS["small"] = 2
    print(environment())
    print(
        f"one SGD step, dropout rate {RATE} after each hidden layer. Ratios of step times, "
        f"median (min-max) over {args.rounds} paired rounds; CPU = process CPU time.\n"
    )
    print(
        "| shape | dtype | no dropout: wall ms | jaxreg / none (CPU) | flax / none (CPU) "
        "| flax / jaxreg (CPU) | flax / jaxreg (wall) |"
    )
    print("|---" * 7 + "|")
    ours, theirs, none = "jaxreg.dropout", "flax.linen.Dropout", "no dropout"
    for shape in shapes:
        batch, widths = SHAPES[shape]
        for dtype_name in args.dtypes:
            dtype = jnp.dtype(dtype_name)
            params = init(jax.random.key(0), widths, dtype)
            x = jax.random.normal(jax.random.key(1), (batch, widths[0])).astype(dtype)
            y = jax.random.randint(jax.random.key(2), (batch,), 0, widths[-1])
            key = jax.random.key(3)
            rows = {name: (make_step(d), (params, key, x, y)) for name, d in VARIANTS.items()}
            t = paired_rounds(rows, args.rounds, reps=REPS[shape])
            for name in rows:
                ratio = statistics.median(
                    a / b for a, b in zip(t[name]["cpu"], t[none]["cpu"], strict=True)
                )
                wall = statistics.median(t[name]["wall"])
                record(f"mlp step {shape} {dtype_name} {name}", wall, vs_no_dropout_cpu=ratio)
            print(
                f"| {shape} {'-'.join(map(str, widths))} b{batch} | {dtype_name} "
                f"| {statistics.median(t[none]['wall']) * 1e3:.2f} "
                f"| {_ratio(t, ours, none, 'cpu')} | {_ratio(t, theirs, none, 'cpu')} "
                f"| {_ratio(t, theirs, ours, 'cpu')} | {_ratio(t, theirs, ours, 'wall')} |"
            )


if __name__ == "__main__":
    main()
