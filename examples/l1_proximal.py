"""L1 by subgradient (penalty in the loss) vs proximal L1: exact zeros and accuracy.

The tutorials say "L1 makes some weights exactly zero". That holds for the minimiser
of ``loss + s * |w|_1`` and for proximal methods, not for gradient descent on the
penalty: a subgradient step ``w -= lr * (g + s * sign(w))`` jumps over 0 instead of
landing on it. Here an MLP 40-128-128-10 is trained on MNIST-1D with plain SGD
(lr 0.1, no momentum, so both methods minimise the same objective with the same step)
and one of five regularizers on the kernels (biases are not penalised):

* none;
* L1 subgradient: ``jaxreg.l1_penalty(strength=s)`` added to the loss;
* L1 proximal: ``jaxreg.optax.proximal_l1(lr, strength=s)`` after SGD (ISTA);
* elastic net subgradient: ``jaxreg.elastic_net_penalty(strength=s, l1_ratio=0.5)`` in
  the loss;
* elastic net proximal: ``jaxreg.optax.proximal_elastic_net(lr, strength=s, l1_ratio=0.5)``.

All methods x strengths x seeds form one vmapped program: every model carries all five
strengths as traced hyperparameters, the unused ones 0 (a zero strength is the
identity). Writes ``l1.csv`` and ``l1_proximal.png`` to ``--out``.

Run: python examples/l1_proximal.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    Trainer,
    atomic_path,
    example_parser,
    float_list,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mean_std,
    mlp,
    positive_int,
    progress,
    read_csv,
    save_figure,
    to_host,
    write_csv,
)

import jaxreg
import jaxreg.optax

NAME = "l1_proximal"
WIDTHS = (128, 128)
LR = 0.1
SMALL = 1e-3  # "near zero" threshold for |w|
METHODS = {  # method -> label
    "none": "none",
    "l1_sub": "L1 subgradient (in loss)",
    "l1_prox": "L1 proximal",
    "en_sub": "elastic net subgradient",
    "en_prox": "elastic net proximal",
}
HP = ("l1_sub", "l1_prox", "en_sub", "en_prox")


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument("--strengths", type=float_list(low=0), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--replot", action="store_true", help="redo table and plot from outputs")
    args = parser.parse_args()
    if args.strengths is None:
        args.strengths = [1e-4, 1e-3] if args.smoke else [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3]
    args.strengths = [s for s in args.strengths if s > 0]
    if args.seeds is None:
        args.seeds = 2 if args.smoke else 3
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    return args


def models(args):
    """One row per model: method, strength, seed (the "none" method once per seed)."""
    out = [("none", 0.0, s) for s in range(args.seeds)]
    out += [(m, st, s) for m in HP for st in args.strengths for s in range(args.seeds)]
    return out


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.replot:
        strs, ints = ("method",), ("seed", "dead_inputs", "dead_units")
        rows = [
            {k: v if k in strs else int(v) if k in ints else float(v) for k, v in r.items()}
            for r in read_csv(os.path.join(args.out, "l1.csv"))
        ]
        args.strengths = sorted({r["strength"] for r in rows if r["method"] != "none"})
        args.seeds = len({r["seed"] for r in rows})
        with np.load(os.path.join(args.out, "weights_seed0.npz")) as z:
            shown = dict(z)
        return report(rows, shown, args, start)
    chunk = 20 if args.smoke else 100
    steps = -(-args.steps // chunk) * chunk
    data = load_data(num_samples=1000) if args.smoke else load_data()
    table = models(args)
    hp = {m: np.float32([st if meth == m else 0.0 for meth, st, _ in table]) for m in HP}
    hp = {k: jnp.asarray(v) for k, v in hp.items()}
    seeds = np.int32([s for *_, s in table])
    kernels = jaxreg.kernels_only

    def penalty(params, h):
        return jaxreg.l1_penalty(params, strength=h["l1_sub"], where=kernels) + (
            jaxreg.elastic_net_penalty(params, strength=h["en_sub"], l1_ratio=0.5, where=kernels)
        )

    def optimizer(h):
        return optax.chain(
            optax.sgd(LR),
            jaxreg.optax.proximal_l1(LR, strength=h["l1_prox"], where=kernels),
            jaxreg.optax.proximal_elastic_net(
                LR, strength=h["en_prox"], l1_ratio=0.5, where=kernels
            ),
        )

    trainer = Trainer(
        init=lambda key: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        apply=lambda params, h, x, key: mlp(params, x),
        optimizer=optimizer,
        batch_size=128,
        chunk_steps=chunk,
        penalty=penalty,
    )
    x, y, x_test, y_test = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    state = trainer.init_state(hp, seeds)
    bar = progress(steps // chunk, models=len(table), chunk_steps=chunk)
    for _ in range(steps // chunk):
        state, loss = trainer.chunk(state, hp, x, y)
        bar.update(1)
    bar.close()
    _, acc = trainer.evaluate(state.params, hp, x_test, y_test)
    _, train_acc = trainer.evaluate(state.params, hp, x, y)
    params = to_host(state.params)
    acc, train_acc, loss = np.asarray(acc), np.asarray(train_acc), np.asarray(loss)

    rows = []
    weights = {}
    for i, (meth, st, seed) in enumerate(table):
        w = [p["kernel"][i] for p in params]
        flat = np.concatenate([a.ravel() for a in w])
        weights[meth, st, seed] = flat
        rows.append(
            {
                "method": meth,
                "strength": st,
                "seed": seed,
                "test_acc": round(float(acc[i]), 5),
                "train_acc": round(float(train_acc[i]), 5),
                "train_loss": round(float(loss[i]), 5),
                "zero_frac": float(np.mean(flat == 0)),
                "small_frac": float(np.mean(np.abs(flat) < SMALL)),
                "dead_inputs": int(np.sum(np.all(w[0] == 0, axis=1))),
                "dead_units": int(sum(np.sum(np.all(a == 0, axis=0)) for a in w[:-1])),
                "mean_abs_w": float(np.mean(np.abs(flat))),
            }
        )
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "l1.csv"), rows)
    shown = {  # seed 0's L1 kernels, for the histogram (and --replot)
        f"{meth}_{st:g}": w for (meth, st, seed), w in weights.items() if seed == 0 and "l1" in meth
    }
    with atomic_path(os.path.join(args.out, "weights_seed0.npz")) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **shown)
    report(rows, shown, args, start)


def report(rows, shown, args, start):
    plot(rows, shown, args)

    lines = []
    for meth in METHODS:
        for st in [0.0] if meth == "none" else args.strengths:
            sel = [r for r in rows if r["method"] == meth and r["strength"] == st]
            lines.append(
                [
                    METHODS[meth],
                    f"{st:g}",
                    mean_std([r["test_acc"] for r in sel]),
                    mean_std([100 * r["zero_frac"] for r in sel], ".1f"),
                    mean_std([100 * r["small_frac"] for r in sel], ".1f"),
                    mean_std([r["dead_inputs"] for r in sel], ".1f"),
                    mean_std([r["dead_units"] for r in sel], ".1f"),
                ]
            )
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, SGD lr {LR}, "
        f"{args.seeds} seeds, {next(iter(shown.values())).size} kernel weights\n"
    )
    print(
        markdown_table(
            [
                "method",
                "strength s",
                "test acc",
                "% exactly 0",
                f"% |w| < {SMALL:g}",
                "inputs cut (of 40)",
                f"hidden units cut (of {sum(WIDTHS)})",
            ],
            lines,
        )
    )
    print(f"\nwrote {args.out}/ in {time.perf_counter() - start:.0f} s")


def by_strength(rows, meth, key, strengths):
    out = []
    for st in strengths:
        out.append([r[key] for r in rows if r["method"] == meth and r["strength"] == st])
    return np.array(out, np.float64)  # (strengths, seeds)


def plot(rows, shown, args):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    s = np.array(args.strengths)
    colors = {"l1_sub": "C3", "l1_prox": "C0", "en_sub": "C1", "en_prox": "C2"}
    for meth in HP:
        z = 100 * by_strength(rows, meth, "zero_frac", s)
        axes[0].errorbar(
            s,
            z.mean(1),
            yerr=z.std(1),
            marker="o",
            capsize=3,
            color=colors[meth],
            label=f"{METHODS[meth]}: exactly 0",
        )
        if meth.endswith("sub"):
            z = 100 * by_strength(rows, meth, "small_frac", s)
            axes[0].errorbar(
                s,
                z.mean(1),
                yerr=z.std(1),
                marker="x",
                ls=":",
                capsize=3,
                color=colors[meth],
                label=f"{METHODS[meth]}: |w| < {SMALL:g}",
            )
        a = 100 * by_strength(rows, meth, "test_acc", s)
        axes[1].errorbar(
            s,
            a.mean(1),
            yerr=a.std(1),
            marker="o",
            capsize=3,
            color=colors[meth],
            label=METHODS[meth],
        )
    base = 100 * np.array([r["test_acc"] for r in rows if r["method"] == "none"])
    axes[1].axhspan(base.min(), base.max(), color="k", alpha=0.12, lw=0)
    axes[1].axhline(base.mean(), color="k", lw=1, label="no penalty (band: min-max)")
    axes[0].set(
        xscale="log",
        xlabel="strength s (penalty coefficient, log scale)",
        ylabel="kernel weights (%)",
        title="Sparsity: exact zeros vs merely small",
    )
    axes[1].set(
        xscale="log",
        xlabel="strength s (log scale)",
        ylabel="test accuracy (%)",
        title="Test accuracy (mean ± std over seeds)",
    )
    # Histogram of |w| at one strength: subgradient vs proximal (seed 0).
    # The strongest s whose proximal accuracy is within 1 point of no penalty.
    prox_acc = 100 * by_strength(rows, "l1_prox", "test_acc", s).mean(1)
    ok = [st for st, a in zip(s, prox_acc, strict=True) if a >= base.mean() - 1]
    st = max(ok) if ok else s[0]
    bins = np.linspace(-8, 0, 49)
    for meth in ("l1_sub", "l1_prox"):
        w = np.abs(shown[f"{meth}_{st:g}"])
        axes[2].hist(
            np.log10(w[w > 0]),
            bins=bins,
            histtype="step",
            lw=1.5,
            color=colors[meth],
            label=f"{METHODS[meth]}: {100 * np.mean(w == 0):.1f}% exactly 0 (not shown)",
        )
    axes[2].set(
        xlabel="log10 |w| (nonzero kernel weights)",
        ylabel="count",
        title=f"Weight magnitudes at s = {st:g}, seed 0",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"L1 subgradient vs proximal L1 (and elastic net, l1 = l2 = s/2), MLP "
        f"40-128-128-10 on MNIST-1D, SGD lr {LR}; error bars: std over {args.seeds} seeds"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=80)


if __name__ == "__main__":
    main()
