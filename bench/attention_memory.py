"""Attention-dropout memory under remat: XLA's compiled memory analysis of a training step.

``value_and_grad`` of a stack of L pre-LayerNorm transformer blocks (attention + MLP),
for each attention variant and three remat modes:

- no remat;
- ``jax.checkpoint`` on every block (nothing saved but the block inputs);
- tied remat: the same, written as a ``custom_vjp`` whose backward pass recomputes the
  block from its inputs after passing them through a loop that also reads the incoming
  gradient. XLA CPU removes the optimization barriers ``jax.checkpoint`` relies on and
  merges the recomputation back into the forward pass (so ``jax.checkpoint`` changes
  nothing on CPU); the tie makes the recomputation wait for the backward pass, as
  ``jax.checkpoint`` does on GPU and TPU.

Attention variants (rate 0.1, one draw per weight, ``broadcast_dropout=False``): no
dropout (flax.linen's computation; and ``jax.nn.dot_product_attention``), flax's
dropout, and jaxreg exact: the default (``low_memory=True``: the backward pass
recomputes the dropped weights from a stored 1-byte mask), with ``recompute_masks``
(no mask stored: hashed again), with ``low_memory=False`` (autodiff's residuals: the
dropped weights are kept), and both; jaxreg fast (default otherwise).

"temp" is XLA's ``temp_size_in_bytes`` (scratch beyond arguments and outputs). Target:
with remat, dropout adds <= 5% over the same block without dropout.

Run: python bench/attention_memory.py [--quick | --smoke]
"""

from __future__ import annotations

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _harness import argument_parser, environment, on_accelerator, parse_args, record
from jax import lax

import jaxreg

RATE = 0.1
MiB = 2**20


def variants() -> dict:
    def ours(**kw):
        def attention(q, k, v, r):
            return jaxreg.dot_product_attention(
                q, k, v, dropout_rng=r, dropout_rate=RATE, broadcast_dropout=False, **kw
            )

        return attention

    return {
        "no dropout": lambda q, k, v, r: jaxreg.dot_product_attention(q, k, v),
        "no dropout (jax.nn)": lambda q, k, v, r: jax.nn.dot_product_attention(q, k, v),
        "flax dropout": lambda q, k, v, r: nn.dot_product_attention(
            q, k, v, dropout_rng=r, dropout_rate=RATE, broadcast_dropout=False
        ),
        "jaxreg exact (default)": ours(),
        "jaxreg exact, recompute_masks": ours(recompute_masks=True),
        "jaxreg exact, low_memory=False": ours(low_memory=False),
        "jaxreg exact, low_memory=False, recompute_masks": ours(
            low_memory=False, recompute_masks=True
        ),
        "jaxreg fast": ours(sampler="fast"),
    }


def layer_norm(x):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6)


def block(params, x, rng, attention, heads):
    b, s, e = x.shape
    qkv = (layer_norm(x) @ params["qkv"]).reshape(b, s, 3, heads, e // heads)
    a = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], rng)
    x = x + a.reshape(b, s, e) @ params["out"]
    return x + jax.nn.gelu(layer_norm(x) @ params["up"]) @ params["down"]


def init(key, width, depth):
    keys = iter(jax.random.split(key, 4 * depth))
    scale = 1 / np.sqrt(width)

    def w(shape):
        return jax.random.normal(next(keys), shape) * scale

    return [
        {
            "qkv": w((width, 3 * width)),
            "out": w((width, width)),
            "up": w((width, 4 * width)),
            "down": w((4 * width, width)),
        }
        for _ in range(depth)
    ]


def tie(tree, cotangent):
    """``tree`` unchanged, computed in a loop that XLA cannot see through and that also
    reads ``cotangent``: whatever uses the result waits for the backward pass."""
    leaves, treedef = jax.tree.flatten(tree)
    trips = lax.optimization_barrier(jnp.ones((), jnp.int32))
    probe = lax.bitcast_convert_type(
        jax.tree.leaves(cotangent)[0].ravel()[0].astype(jnp.float32), jnp.uint32
    )

    def to_bits(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(a)
        return lax.bitcast_convert_type(a, jnp.uint32) if a.dtype == jnp.float32 else a

    def body(i, carry):
        bits, probe = carry
        zero = i.astype(jnp.uint32) & probe  # 0 in the only iteration; XLA cannot tell
        return [b ^ zero.astype(b.dtype) for b in bits], probe

    bits, _ = lax.fori_loop(0, trips, body, ([to_bits(a) for a in leaves], probe))
    out = []
    for a, b in zip(leaves, bits, strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            out.append(jax.random.wrap_key_data(b, impl=jax.random.key_impl(a)))
        else:
            out.append(lax.bitcast_convert_type(b, jnp.float32) if a.dtype == jnp.float32 else b)
    return jax.tree.unflatten(treedef, out)


def tied_remat(f):
    """Remat of ``f(params, x, rng)`` that XLA CPU cannot undo (see the module docstring)."""

    @jax.custom_vjp
    def g(params, x, rng):
        return f(params, x, rng)

    def fwd(params, x, rng):
        return f(params, x, rng), (params, x, rng)

    def bwd(saved, cotangent):
        params, x, rng = tie(saved, cotangent)
        _, vjp = jax.vjp(lambda p, x: f(p, x, rng), params, x)
        return (*vjp(cotangent), None)

    g.defvjp(fwd, bwd)
    return g


def step_fn(attention, remat, heads):
    one = functools.partial(block, attention=attention, heads=heads)
    if remat == "jax.checkpoint":
        one = jax.checkpoint(one)
    elif remat == "tied":
        one = tied_remat(one)

    def loss(params, x, rng):
        for p, r in zip(params, jax.random.split(rng, len(params)), strict=True):
            x = one(p, x, r)
        return jnp.mean(x**2)

    return jax.value_and_grad(loss)


def measure(fn, args, repeats, clock):
    """Temp MiB of the compiled step, and its median time (wall, or process CPU time)."""
    compiled = jax.jit(fn).lower(*args).compile()
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(*args))
    timer = time.perf_counter if clock == "wall" else time.process_time
    times = []
    for _ in range(repeats):
        t0 = timer()
        jax.block_until_ready(compiled(*args))
        times.append(timer() - t0)
    return mem.temp_size_in_bytes / MiB, float(np.median(times))


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", help="attention variants to measure")
    parser.add_argument("--remats", nargs="+", choices=("none", "jax.checkpoint", "tied"))
    args = parse_args(parser)
    accel = on_accelerator()
    batch, seq, width, heads, depth = (8, 1024, 512, 8, 4) if accel else (4, 512, 256, 4, 4)
    if args.quick:
        args.repeats = 2
        seq = seq if accel else 256
    if args.smoke:
        batch, seq, width, heads, depth, args.repeats = 2, 32, 32, 2, 1, 1
    names = args.only or list(variants())
    remats = tuple(args.remats or ("none", "jax.checkpoint", "tied"))
    if args.smoke:
        names, remats = ["no dropout", "jaxreg exact (default)"], ("tied",)
    params = init(jax.random.key(0), width, depth)
    x = jax.random.normal(jax.random.key(1), (batch, seq, width))
    rng = jax.random.key(2)
    clock = "wall" if accel else "cpu"
    print(environment())
    weights = batch * heads * seq * seq
    print(
        f"value_and_grad of {depth} blocks: B={batch} S={seq} width={width} H={heads}; "
        f"dropout rate {RATE} per attention weight ({weights * 4 / MiB:.0f} MiB of float32 "
        f"weights per block); temp MiB (x no dropout, same remat) and the step's median "
        f"{'wall' if accel else 'process CPU'} time in ms\n"
    )
    results = {}
    for name in names:
        attention = variants()[name]
        for remat in remats:
            results[name, remat] = measure(
                step_fn(attention, remat, heads), (params, x, rng), args.repeats, clock
            )
    print("| attention | " + " | ".join(f"{r}: temp MiB | {r}: ms" for r in remats) + " |")
    print("|---" * (1 + 2 * len(remats)) + "|")
    for name in names:
        cells = []
        for remat in remats:
            temp, seconds = results[name, remat]
            base = min(results[n, remat][0] for n in names if n.startswith("no dropout"))
            cells.append(f"{temp:.1f} ({temp / base:.2f}x) | {seconds * 1e3:.0f}")
            record(
                f"attention memory {remat} {name}",
                seconds,
                temp_mib=temp,
                temp_vs_no_dropout=temp / base,
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    if args.smoke or args.only or args.remats:
        return
    effective = "jax.checkpoint" if accel else "tied"
    base = min(results["no dropout", effective][0], results["no dropout (jax.nn)", effective][0])
    for name in names:
        if name.startswith("no dropout"):
            continue
        extra = results[name, effective][0] / base - 1
        verdict = "met" if extra <= 0.05 else "missed"
        print(
            f"with remat ({effective}), {name} adds {extra:+.1%} temp over no dropout "
            f"(target <= 5%: {verdict})"
        )
    ours, flax = results["jaxreg exact (default)", "none"][0], results["flax dropout", "none"][0]
    plain = results["no dropout", "none"][0]
    print(
        f"without remat: jaxreg (default) adds {ours - plain:+.1f} MiB over no dropout, "
        f"flax's {flax - plain:+.1f} MiB (1 byte per weight would be "
        f"{depth * weights / MiB:.1f} MiB)"
    )


if __name__ == "__main__":
    main()
