"""Attention dropout speed: jaxreg.dot_product_attention against flax's, and no dropout.

B=8, H=8, D=64, S in {256, 1024, 2048}; float32 and bfloat16; forward and forward +
backward (``value_and_grad`` of ``vdot(out, c)`` w.r.t. q, k, v). Attention-weight
dropout at rate 0.1 with one draw per weight (``broadcast_dropout=False``, the case
whose mask is B*H*S*S). Rows, measured in alternating rounds in one process:

- none: attention without dropout (flax.linen's and jaxreg's are the same computation);
- none (jax.nn): ``jax.nn.dot_product_attention``, what flax.nnx runs without dropout.
  The "x none" column divides by the faster of the two no-dropout rows (on XLA CPU the
  explicit softmax feeding the einsum is slower than with a dropout select between
  them, so dropout can look free or even negative against "none" alone);
- flax: ``flax.linen.dot_product_attention`` with dropout;
- jaxreg exact: the same output bit for bit (flax's mask, jaxreg's engine), with the
  default backward pass (``low_memory=True``: dropped weights recomputed from the
  stored 1-byte mask);
- jaxreg fast: ``sampler="fast"`` (8-bit thresholds);
- jaxreg exact, recompute_masks: the backward pass hashes the mask again;
- jaxreg exact, low_memory=False: autodiff's residuals (dropped weights kept).

Targets: dropout adds <= 15% to forward + backward with the fast sampler; jaxreg's
dropout overhead (time minus "none") is <= 1/3 of flax's on CPU.

Run: python bench/attention.py [--quick | --smoke] [--sizes 256 1024] [--dtypes float32]
(``--quick``: S=256 on CPU, every size on an accelerator; one round.)
"""

from __future__ import annotations

import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
from _harness import (
    argument_parser,
    environment,
    on_accelerator,
    paired,
    paired_ratio,
    parse_args,
    record,
)

import jaxreg

B, H, D, RATE = 8, 8, 64, 0.1


def variants() -> dict:
    """name -> attention(q, k, v, rng)."""

    def ours(**kw):
        return lambda q, k, v, r: jaxreg.dot_product_attention(
            q, k, v, dropout_rng=r, dropout_rate=RATE, broadcast_dropout=False, **kw
        )

    return {
        "none": lambda q, k, v, r: jaxreg.dot_product_attention(q, k, v),
        "none (jax.nn)": lambda q, k, v, r: jax.nn.dot_product_attention(q, k, v),
        "flax": lambda q, k, v, r: nn.dot_product_attention(
            q, k, v, dropout_rng=r, dropout_rate=RATE, broadcast_dropout=False
        ),
        "jaxreg exact": ours(),
        "jaxreg fast": ours(sampler="fast"),
        "jaxreg exact, recompute_masks": ours(recompute_masks=True),
        "jaxreg exact, low_memory=False": ours(low_memory=False),
    }


def fwd_bwd(fn):
    def loss(q, k, v, r, c):
        return jnp.vdot(fn(q, k, v, r).astype(jnp.float32), c)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))


def run(batch, heads, seq, depth, dtype, rounds: int, min_time: float, names=None) -> dict:
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(kk, (batch, seq, heads, depth), dtype) for kk in keys[:3])
    c = jax.random.normal(keys[3], (batch, seq, heads, depth))
    rng = jax.random.key(1)
    out = {}
    for mode in ("fwd", "fwd+bwd"):
        rows = {}
        for name, fn in variants().items():
            if names is not None and name not in names:
                continue
            if mode == "fwd" and ("recompute" in name or "low_memory" in name):
                continue  # the forward pass is the same as "jaxreg exact"
            rows[name] = (fn, (q, k, v, rng)) if mode == "fwd" else (fwd_bwd(fn), (q, k, v, rng, c))
        out[mode] = paired(rows, rounds, min_time)
    return out


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024, 2048])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parse_args(parser)
    batch, heads, depth, min_time = B, H, D, 0.3
    if args.quick:
        args.rounds, min_time = 1, 0.1
        if not on_accelerator():
            args.sizes = [256]
    if args.smoke:
        batch, heads, depth, args.sizes, args.dtypes, min_time = 2, 2, 16, [64], ["float32"], 0.0
    accel = on_accelerator()
    clock = "wall" if accel else "cpu"
    names = ["none", "none (jax.nn)", "flax", "jaxreg exact"] if args.smoke else None
    print(environment())
    print(
        f"attention B={batch} H={heads} D={depth}, dropout rate {RATE} per weight; ratios of "
        f"{'wall' if accel else 'process CPU'} times, median over {args.rounds} paired rounds"
        + ("; times in ms" if accel else "")
        + '; "x none": over the faster no-dropout row\n'
    )
    print(
        "| S | dtype | pass | variant | "
        + ("ms | " if accel else "")
        + "x none | x flax | overhead / flax's |"
    )
    print("|---" * (8 if accel else 7) + "|")
    verdicts = []
    nones = ["none", "none (jax.nn)"]
    for seq in args.sizes:
        for dtype_name in args.dtypes:
            dtype = jnp.dtype(dtype_name)
            res = run(batch, heads, seq, depth, dtype, args.rounds, min_time, names)
            for mode, times in res.items():
                over_none = {n: paired_ratio(times, n, nones, clock) for n in times}
                over_flax = {n: paired_ratio(times, n, "flax", clock) for n in times}
                flax_extra = over_none["flax"] - 1
                for name, t in times.items():
                    share = (over_none[name] - 1) / flax_extra if flax_extra > 0 else float("nan")
                    median = statistics.median(t["wall"])
                    ms = f"{median * 1e3:.2f} | " if accel else ""
                    print(
                        f"| {seq} | {dtype_name} | {mode} | {name} | {ms}{over_none[name]:.2f}x "
                        f"| {over_flax[name]:.2f}x | {share:.2f} |"
                    )
                    record(
                        f"attention S={seq} {dtype_name} {mode} {name}",
                        median,
                        vs_none=over_none[name],
                        vs_flax=over_flax[name],
                    )
                if mode == "fwd+bwd" and not args.smoke:
                    fast = over_none["jaxreg fast"] - 1
                    share = (over_none["jaxreg exact"] - 1) / flax_extra
                    verdicts.append(
                        f"S={seq} {dtype_name}: fast sampler adds {fast:+.1%} to fwd+bwd "
                        f"(target <= 15%: {'met' if fast <= 0.15 else 'missed'}); exact "
                        f"overhead is {share:.2f} of flax's (target <= 1/3: "
                        f"{'met' if share <= 1 / 3 else 'missed'})"
                    )
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
