"""How should dropout's backward pass get its mask? Recompute, store bytes, store bits.

value_and_grad of ``vdot(dropout(x), c)`` (a real cotangent), as ratios to the floor
``x * 2`` measured in the same process:

- recompute: default autodiff through ``apply_mask(bernoulli_mask(...))``; XLA fuses
  the hash into both the forward and the backward pass, so it hashes twice.
- stored bytes: ``jaxreg.dropout`` (its ``custom_jvp`` stores the mask once, one byte
  per element, and the backward pass reads it).
- stored bits: a ``custom_vjp`` prototype that packs the mask 32 per uint32 word.

Run: python bench/dropout_backward.py [--quick]  (``--quick``: 1M only, one round)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from _harness import argument_parser, environment, interleaved, parse_args, record

import jaxreg
from jaxreg import _mask

RATE = 0.5


def recompute(x, key):
    mask = jaxreg.bernoulli_mask(key, x.shape, rate=RATE)
    return jaxreg.apply_mask(x, mask, rate=RATE)


def stored_bytes(x, key):
    return jaxreg.dropout(key, x, rate=RATE)


def _pack(mask):
    *lead, n = mask.shape
    shifts = jnp.arange(32, dtype=jnp.uint32)
    words = mask.reshape(*lead, n // 32, 32).astype(jnp.uint32) << shifts
    return jnp.sum(words, axis=-1, dtype=jnp.uint32)  # disjoint bits: sum == or


def _unpack(words, shape):
    bits = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return bits.reshape(shape).astype(jnp.bool_)


@jax.custom_vjp
def stored_bits(x, key):
    return recompute(x, key)


def _bits_fwd(x, key):
    words = _pack(_mask.draw_keep(key, x.shape, RATE))
    return jnp.where(_unpack(words, x.shape), x / (1 - RATE), 0), words


def _bits_bwd(words, g):
    return jnp.where(_unpack(words, g.shape), g / (1 - RATE), 0), None


stored_bits.defvjp(_bits_fwd, _bits_bwd)

VARIANTS = {
    "recompute": recompute,
    "stored bytes (jaxreg)": stored_bytes,
    "stored bits": stored_bits,
}


def main() -> None:
    args = parse_args(argument_parser(__doc__))
    sizes = (2**20,) if args.quick else (2**20, 2**24)
    rounds, min_time = (1, 0.1) if args.quick else (3, 0.4)
    if args.smoke:
        sizes, min_time = (2**16,), 0.0
    print(environment())
    print("value_and_grad of vdot(dropout(x), c), rate 0.5, float32; ratio to x * 2\n")
    print("| variant | " + " | ".join(f"{s / 2**20:g}M" for s in sizes) + " |")
    print("|---" * (1 + len(sizes)) + "|")
    results = {}
    for size in sizes:
        x = jnp.ones((size // 1024, 1024))
        c = jax.random.normal(jax.random.key(1), x.shape)
        key = jax.random.key(0)
        rows = {"floor": (lambda x: x * 2, (x,))}
        for name, f in VARIANTS.items():
            loss = lambda x, k, c, f=f: jnp.vdot(f(x, k), c)  # noqa: E731
            rows[name] = (jax.value_and_grad(loss), (x, key, c))
        results[size] = interleaved(rows, rounds=rounds, min_time=min_time)
    for name in VARIANTS:
        cells = [f"{results[s][name].median / results[s]['floor'].median:.2f}x" for s in results]
        print(f"| {name} | " + " | ".join(cells) + " |")
        for s in results:
            t, floor = results[s][name].median, results[s]["floor"].median
            record(f"dropout backward {s / 2**20:g}M {name}", t, vs_floor=t / floor)


if __name__ == "__main__":
    main()
