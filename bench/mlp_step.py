"""Does a faster dropout mask speed up a training step? An MLP step, end to end.

One SGD step (forward, backward, update) of an MLP with dropout after each hidden
layer, as a ratio to the same step without dropout, measured in the same process with
rounds interleaved: ``jaxreg.dropout`` against ``flax.linen.Dropout``. Two shapes:

- small: MNIST-1D-sized MLP 40-256-256-10, batch 128 (matmul-bound on a CPU);
- wide: 64-512-512-10, batch 8192 (4M-element activations, cheap layers).

Run: python bench/mlp_step.py [--quick] [--dtypes float32 bfloat16]
(``--quick``: the small shape only, float32, one round.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from _harness import argument_parser, environment, interleaved

import jaxreg

RATE = 0.5
SHAPES = {"small": (128, (40, 256, 256, 10)), "wide": (8192, (64, 512, 512, 10))}


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


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    shapes = ["small"] if args.quick else list(SHAPES)
    if args.quick:
        args.dtypes, args.rounds = ["float32"], 1
    print(environment())
    print(f"one SGD step, dropout rate {RATE} after each hidden layer; time / no-dropout step\n")
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
            t = interleaved(rows, rounds=args.rounds, min_time=0.1 if args.quick else 0.4)
            base = t["no dropout"].median
            ours, theirs = t["jaxreg.dropout"].median, t["flax.linen.Dropout"].median
            print(
                f"| {shape} {'-'.join(map(str, widths))} b{batch} | {dtype_name} "
                f"| {base * 1e3:.2f} | {ours / base:.2f}x | {theirs / base:.2f}x "
                f"| {theirs / ours:.2f}x |"
            )


if __name__ == "__main__":
    main()
