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

All methods x strengths x seeds form one ``jaxreg.grid`` program: every model carries all
four strengths as traced hyperparameters, the unused ones 0 (a zero strength is the
identity). Strengths are chosen on a validation split; accuracy differences are paired
over seeds with 95% intervals, Holm-corrected. Writes ``l1.csv``, ``comparisons.csv``
and ``l1_proximal.png`` to ``--out``.

Run: python examples/l1_proximal.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _stats
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    atomic_path,
    cross_entropy,
    example_parser,
    float_list,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mlp,
    positive_int,
    progress,
    read_csv,
    save_figure,
    write_csv,
)

import jaxreg
import jaxreg.grid as jg
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
KERNELS = jaxreg.kernels_only


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
        args.seeds = 2 if args.smoke else 5
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    return args


def settings(args):
    """(method, strength) per setting: "none" once, then every method x strength."""
    return [("none", 0.0)] + [(m, st) for m in HP for st in args.strengths]


def penalty(params, h):
    return jaxreg.l1_penalty(params, strength=h["l1_sub"], where=KERNELS) + (
        jaxreg.elastic_net_penalty(params, strength=h["en_sub"], l1_ratio=0.5, where=KERNELS)
    )


def loss(params, h, batch, key):
    return cross_entropy(mlp(params, batch["x"]), batch["y"]) + penalty(params, h)


def optimizer(h):
    return optax.chain(
        optax.sgd(LR),
        jaxreg.optax.proximal_l1(LR, strength=h["l1_prox"], where=KERNELS),
        jaxreg.optax.proximal_elastic_net(LR, strength=h["en_prox"], l1_ratio=0.5, where=KERNELS),
    )


def accuracy(params, h, batch):
    return (jnp.argmax(mlp(params, batch["x"]), -1) == batch["y"]).astype(jnp.float32)


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
    data = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    sets = settings(args)
    # Every model carries all four strengths as traced hyperparameters, the unused ones
    # 0 (a zero strength is the identity): one program for every method.
    rows_grid = jg.rows([{m: st if meth == m else 0.0 for m in HP} for meth, st in sets])
    grid = jg.product(rows_grid, seed=list(range(args.seeds)))
    trainer = jg.Trainer(
        init=lambda key, h: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        loss=loss,
        optimizer=optimizer,
        batch_size=128,
        chunk_steps=chunk,
        strategy="vmap",
    )
    state = trainer.init_state(grid, train)
    bar = progress(steps // chunk, models=grid.size, chunk_steps=chunk)
    state = trainer.train(state, train, steps=steps, callback=lambda st, c: bar.update(1))
    bar.close()
    acc = {
        name: trainer.evaluate(state, d, {"acc": accuracy})["acc"]
        for name, d in (("test", test), ("val", val), ("train", train))
    }
    last_loss = state.to_host(state.loss)
    params = state.to_host(state.params)

    rows = []
    weights = {}
    for i in range(grid.size):
        meth, st = sets[i // args.seeds]
        seed = int(grid.hparams["seed"][i])
        w = [p["kernel"][i] for p in params]
        flat = np.concatenate([a.ravel() for a in w])
        weights[meth, st, seed] = flat
        rows.append(
            {
                "method": meth,
                "strength": st,
                "seed": seed,
                "test_acc": round(float(acc["test"][i]), 5),
                "val_acc": round(float(acc["val"][i]), 5),
                "train_acc": round(float(acc["train"][i]), 5),
                "train_loss": round(float(last_loss[i]), 5),
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


def values(rows, meth, st, key):
    return np.array(
        [
            r[key]
            for r in sorted(rows, key=lambda r: r["seed"])
            if r["method"] == meth and r["strength"] == st
        ],
        np.float64,
    )


def chosen_strength(rows, meth, strengths):
    """The strength with the highest mean validation accuracy."""
    return max(strengths, key=lambda st: (values(rows, meth, st, "val_acc").mean(), -st))


def compare(rows, args):
    """Paired test-accuracy differences (points), Holm over the whole family."""
    pairs, labels = [], []
    for sub, prox in (("l1_sub", "l1_prox"), ("en_sub", "en_prox")):
        for st in args.strengths:  # same objective, two optimisers
            pairs.append((values(rows, prox, st, "test_acc"), values(rows, sub, st, "test_acc")))
            labels.append(f"{METHODS[prox]} - {METHODS[sub]}, s={st:g}")
    none = values(rows, "none", 0.0, "test_acc")
    for meth in HP:  # each method at its validation-chosen strength vs no penalty
        st = chosen_strength(rows, meth, args.strengths)
        pairs.append((values(rows, meth, st, "test_acc"), none))
        labels.append(f"{METHODS[meth]} (s={st:g}, chosen on val) - none")
    out = []
    for label, res in zip(labels, _stats.paired_holm(pairs), strict=True):
        out.append(
            {
                "comparison": label,
                "mean_pp": round(100 * res.mean, 3),
                "low_pp": round(100 * res.low, 3),
                "high_pp": round(100 * res.high, 3),
                "p_holm": round(res.p, 5),
                "verdict": res.verdict("lower", "higher"),
            }
        )
    return out


def report(rows, shown, args, start):
    plot(rows, shown, args)
    comps = compare(rows, args)
    write_csv(os.path.join(args.out, "comparisons.csv"), comps)
    lines = []
    for meth in METHODS:
        for st in [0.0] if meth == "none" else args.strengths:
            sel = [r for r in rows if r["method"] == meth and r["strength"] == st]
            lines.append(
                [
                    METHODS[meth],
                    f"{st:g}",
                    _stats.mean_sd([100 * r["val_acc"] for r in sel], ".1f"),
                    _stats.mean_sd([100 * r["test_acc"] for r in sel], ".1f"),
                    _stats.mean_sd([100 * r["zero_frac"] for r in sel], ".1f"),
                    _stats.mean_sd([100 * r["small_frac"] for r in sel], ".1f"),
                    _stats.mean_sd([r["dead_inputs"] for r in sel], ".1f"),
                    _stats.mean_sd([r["dead_units"] for r in sel], ".1f"),
                ]
            )
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, SGD lr {LR}, {args.seeds} seeds "
        f"(mean ± sd, ddof=1), {next(iter(shown.values())).size} kernel weights\n"
    )
    print(
        markdown_table(
            [
                "method",
                "strength s",
                "val acc %",
                "test acc %",
                "% exactly 0",
                f"% |w| < {SMALL:g}",
                "inputs cut (of 40)",
                f"hidden units cut (of {sum(WIDTHS)})",
            ],
            lines,
        )
    )
    print("\nPaired test-accuracy differences, points, 95% intervals (Holm over the family):\n")
    print(
        markdown_table(
            ["comparison", "difference [95% CI]", "p (Holm)", "verdict"],
            [
                [
                    c["comparison"],
                    f"{c['mean_pp']:+.2f} [{c['low_pp']:+.2f}, {c['high_pp']:+.2f}]",
                    f"{c['p_holm']:.2g}",
                    c["verdict"],
                ]
                for c in comps
            ],
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
            yerr=z.std(1, ddof=1) if z.shape[1] > 1 else None,
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
                yerr=z.std(1, ddof=1) if z.shape[1] > 1 else None,
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
            yerr=a.std(1, ddof=1) if a.shape[1] > 1 else None,
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
        title="Test accuracy (mean ± sd over seeds)",
    )
    # Histogram of |w| at one strength: subgradient vs proximal (seed 0).
    # The strongest s whose proximal VALIDATION accuracy is within 1 point of no penalty.
    prox_acc = 100 * by_strength(rows, "l1_prox", "val_acc", s).mean(1)
    base_val = 100 * np.array([r["val_acc"] for r in rows if r["method"] == "none"])
    ok = [st for st, a in zip(s, prox_acc, strict=True) if a >= base_val.mean() - 1]
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
        f"40-128-128-10 on MNIST-1D, SGD lr {LR}; error bars: sd over {args.seeds} seeds"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=100)


if __name__ == "__main__":
    main()
