"""Dropout speed: jaxreg (exact and fast masks) against flax, stock JAX and the floor.

Prints markdown tables of times as ratios to the memory-bandwidth floor ``y = x * 2``
measured in the same process (rounds interleaved across rows), forward and
``value_and_grad`` of ``sum(dropout(x))``, plus compile times.

Run: python bench/dropout.py [--sizes 1M 16M 64M] [--dtypes float32 bfloat16] [--quick]
(``--quick``: 1M, float32, one round.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from _harness import argument_parser, environment, interleaved, parse_args, record

import jaxreg

RATE = 0.5
SIZES = {"64K": 2**16, "1M": 2**20, "16M": 2**24, "64M": 2**26}  # 64K: --smoke


def methods(rate: float) -> dict:
    """name -> fn(key, x) computing dropout at ``rate``."""
    flax_layer = nn.Dropout(rate, deterministic=False)
    keep = 1.0 - rate
    return {
        "jaxreg exact": lambda k, x: jaxreg.dropout(k, x, rate=rate),
        "jaxreg fast": lambda k, x: jaxreg.dropout(k, x, rate=rate, sampler="fast"),
        "flax.linen.Dropout": lambda k, x: flax_layer.apply({}, x, rng=k),
        "where(bernoulli)": lambda k, x: jnp.where(
            jax.random.bernoulli(k, keep, x.shape), x / keep, 0
        ),
    }


def run(size: int, dtype, rounds: int, min_time: float = 0.4) -> dict:
    """Forward and value_and_grad timings for one size and dtype."""
    x = jnp.ones((size // 1024, 1024), dtype)
    key = jax.random.key(0)
    rows = {"floor x * 2": (lambda x: x * 2, (x,))}
    for name, fn in methods(RATE).items():
        rows[name] = (fn, (key, x))
        vg = jax.value_and_grad(lambda x, k, fn=fn: jnp.sum(fn(k, x).astype(jnp.float32)))
        rows[name + " (v&g)"] = (vg, (x, key))
    return interleaved(rows, rounds=rounds, min_time=min_time)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", nargs="+", default=["1M", "16M", "64M"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parse_args(parser)
    min_time = 0.4
    if args.quick:
        args.sizes, args.dtypes, args.rounds, min_time = ["1M"], ["float32"], 1, 0.1
    if args.smoke:
        args.sizes, min_time = ["64K"], 0.0

    print(environment())
    print(f"rate {RATE}; ratios to the floor y = x * 2 of the same size and dtype; medians of")
    print(f"{args.rounds} interleaved rounds, each a median of >= 10 runs.\n")
    for dtype_name in args.dtypes:
        dtype = jnp.dtype(dtype_name)
        results = {s: run(SIZES[s], dtype, args.rounds, min_time) for s in args.sizes}
        names = ["floor x * 2", *methods(RATE)]
        print(f"### {dtype_name}\n")
        head = " | ".join(f"{s} fwd | {s} v&g" for s in args.sizes)
        print(f"| method | {head} |")
        print("|---" * (1 + 2 * len(args.sizes)) + "|")
        for name in names:
            cells = []
            for s in args.sizes:
                floor = results[s]["floor x * 2"].median
                fwd = results[s][name].median / floor
                vg = results[s].get(name + " (v&g)")
                cells.append(f"{fwd:.2f}x")
                cells.append("" if vg is None else f"{vg.median / floor:.2f}x")
            print(f"| {name} | " + " | ".join(cells) + " |")
            for s in args.sizes:
                for suffix, mode in (("", "fwd"), (" (v&g)", "v&g")):
                    t = results[s].get(name + suffix)
                    if t is not None:
                        floor = results[s]["floor x * 2"].median
                        flax = results[s]["flax.linen.Dropout" + suffix].median
                        case = f"dropout {s} {dtype_name} {mode} {name}"
                        record(case, t.median, vs_floor=t.median / floor, vs_flax=t.median / flax)
        floors = ", ".join(
            f"{s}: {results[s]['floor x * 2'].median * 1e3:.2f} ms" for s in args.sizes
        )
        print(f"\nfloor times (absolute, this machine): {floors}")
        for s in args.sizes:
            r = results[s]
            flax_fwd = r["flax.linen.Dropout"].median
            flax_vg = r["flax.linen.Dropout (v&g)"].median
            exact, fast = r["jaxreg exact"], r["jaxreg fast"]
            print(
                f"{s}: vs flax, exact is {flax_fwd / exact.median:.1f}x faster forward and "
                f"{flax_vg / r['jaxreg exact (v&g)'].median:.1f}x v&g; fast "
                f"{flax_fwd / fast.median:.1f}x forward. Round spread of the exact forward: "
                f"{exact.spread:.2f}. Compile: exact {exact.compile * 1e3:.0f} ms, "
                f"flax {r['flax.linen.Dropout'].compile * 1e3:.0f} ms."
            )
        print()


if __name__ == "__main__":
    main()
