"""Does a faster dropout mask speed up a training step? An MLP step, end to end.

One SGD step (forward, backward, update) of an MLP with dropout after each hidden
layer, as a ratio to the same step without dropout, measured in the same process in
paired rounds (every variant timed in turn within a round): ``jaxreg.dropout`` against
``flax.linen.Dropout``. Two shapes:

- small: MNIST-1D-sized MLP 40-256-256-10, batch 128 (matmul-bound on a CPU);
- wide: 64-512-512-10, batch 8192 (4M-element activations, cheap layers).

Run: python bench/mlp_step.py [--quick] [--dtypes float32 bfloat16]
(``--quick``: the small shape only, float32, one round.)
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from _harness import argument_parser, environment

import jaxreg

RATE = 0.5
SHAPES = {"small": (128, (40, 256, 256, 10)), "wide": (8192, (64, 512, 512, 10))}
REPS = {"small": 20, "wide": 3}  # calls per variant per round


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


def paired_rounds(rows: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Per-round median step times (s), the variants alternating within every round.

    Each function is compiled once; a round times ``reps`` calls of each variant in
    turn, so a slow phase of a shared machine hits every variant of that round. Ratios
    are then taken round by round (paired), not between medians of different moments.
    """
    compiled = {name: jax.jit(fn).lower(*args).compile() for name, (fn, args) in rows.items()}
    for name, (_, args) in rows.items():
        jax.block_until_ready(compiled[name](*args))
    out: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, (_, args) in rows.items():
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[name](*args))
                times.append(time.perf_counter() - t0)
            out[name].append(statistics.median(times))
    return out


def _summary(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    shapes = ["small"] if args.quick else list(SHAPES)
    if args.quick:
        args.dtypes, args.rounds = ["float32"], 3
    print(environment())
    print(
        f"one SGD step, dropout rate {RATE} after each hidden layer; step time / no-dropout "
        f"step time, median (min-max) over {args.rounds} paired rounds\n"
    )
    print(
        "| shape | dtype | no dropout (ms) | jaxreg.dropout | flax.linen.Dropout | flax / jaxreg |"
    )
    print("|---|---|---|---|---|---|")
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
            base, ours, theirs = t["no dropout"], t["jaxreg.dropout"], t["flax.linen.Dropout"]
            print(
                f"| {shape} {'-'.join(map(str, widths))} b{batch} | {dtype_name} "
                f"| {statistics.median(base) * 1e3:.2f} "
                f"| {_summary([o / b for o, b in zip(ours, base, strict=True)])} "
                f"| {_summary([f / b for f, b in zip(theirs, base, strict=True)])} "
                f"| {_summary([f / o for f, o in zip(theirs, ours, strict=True)])} |"
            )


if __name__ == "__main__":
    main()
