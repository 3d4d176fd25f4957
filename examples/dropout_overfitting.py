"""Dropout against overfitting: test error over training, with and without dropout.

Srivastava et al. (2014) showed dropout lowering test error of networks that overfit,
and (their Figure 10, MNIST) the gain vanishing or reversing for very small training
sets. Here an MLP 40-128-128-10 (Adam 1e-3) overfits subsets of MNIST-1D of several
sizes; every size, dropout rate and seed is one ``jaxreg.grid`` program (each size a
per-model subset of one stored training set, so one compile serves them all). The rate
and the early-stopping step are chosen on a held-out validation split (the last 1000
training examples), never on the test set. Seeds share initialisation and minibatch
order across rates, so the gain is a paired difference, reported with a 95% t interval
and a Holm-adjusted p-value over the sizes.

Writes ``curves.csv`` (one row per size, rate, seed and evaluation step),
``summary.csv`` and ``dropout_overfitting.png`` to ``--out``.

Run: python examples/dropout_overfitting.py [--smoke] [--out DIR]
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
    cross_entropy,
    example_parser,
    fail,
    float_list,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mlp,
    plot_band,
    positive_int,
    progress,
    read_csv,
    save_figure,
    write_csv,
)

import jaxreg.grid as jg

NAME = "dropout_overfitting"
WIDTHS = (128, 128)
BATCH = 128


def size_list(text):
    """An argparse type: comma-separated training-set sizes >= 1."""
    return [positive_int(t) for t in text.split(",") if t.strip()] or positive_int("")


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument(
        "--sizes", type=size_list, default=None, help="training-set sizes, e.g. 100,1000"
    )
    parser.add_argument("--rates", type=float_list(low=0, high=1, high_open=True), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--replot", action="store_true", help="redo summary and plot from CSV")
    args = parser.parse_args()
    full = {"sizes": [100, 300, 1000, 3000], "rates": [0.0, 0.1, 0.25, 0.5], "seeds": 5}
    smoke = {"sizes": [100, 300], "rates": [0.0, 0.5], "seeds": 2}
    for k, v in (smoke if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    if 0.0 not in args.rates:
        args.rates = [0.0, *args.rates]
    return args


def error(params, hp, batch):
    """Per-example 0/1 error without dropout."""
    return (jnp.argmax(mlp(params, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.replot:
        rows = [
            {k: (int(v) if k in ("size", "seed", "step") else float(v)) for k, v in r.items()}
            for r in read_csv(os.path.join(args.out, "curves.csv"))
        ]
        args.sizes = sorted({r["size"] for r in rows})
        args.rates = sorted({r["rate"] for r in rows})
        args.seeds = len({r["seed"] for r in rows})
        return report(rows, args, start)
    chunk = 20 if args.smoke else 100
    steps = -(-args.steps // chunk) * chunk
    data = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    pool = len(data.x_train)
    for n in args.sizes:
        if n > pool:
            fail(f"{NAME}: error: --sizes: {n} exceeds the {pool} training examples")
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    # Training subsets: the first n examples of the pool; every size, rate and seed in
    # one grid (one compile), the data stored once.
    # A subset smaller than a batch is repeated whole (each example equally often), so
    # minibatches still draw every example with the same probability.
    subsets = [np.tile(np.arange(n), -(-BATCH // n)) for n in args.sizes]
    grid = jg.product(
        subset=list(range(len(args.sizes))), rate=args.rates, seed=list(range(args.seeds))
    )
    sizes = [args.sizes[s] for s in grid.hparams["subset"]]
    rates = [args.rates[i // args.seeds % len(args.rates)] for i in range(grid.size)]
    seeds = [int(s) for s in grid.hparams["seed"]]
    trainer = jg.Trainer(
        init=lambda key, hp: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        loss=lambda params, hp, batch, key: cross_entropy(
            mlp(params, batch["x"], key=key, rates=hp["rate"]), batch["y"]
        ),
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=BATCH,
        chunk_steps=chunk,
        strategy="vmap",
        validation=error,  # recorded after every chunk: the validation curve
    )

    rows = []
    bar = progress(steps // chunk, models=grid.size, chunk_steps=chunk)

    def record(st, c):
        train_err = trainer.evaluate(st, train, {"e": error}, subsets=subsets)["e"]
        test_err = trainer.evaluate(st, test, {"e": error})["e"]
        val_err, loss = st.to_host(st.metric), st.to_host(st.loss)
        for i in range(grid.size):
            rows.append(
                {
                    "size": sizes[i],
                    "rate": rates[i],
                    "seed": seeds[i],
                    "step": (c + 1) * chunk,
                    "train_loss": round(float(loss[i]), 5),
                    "train_err": round(float(train_err[i]), 5),
                    "val_err": round(float(val_err[i]), 5),
                    "test_err": round(float(test_err[i]), 5),
                }
            )
        bar.update(1)

    state = trainer.init_state(grid, train)
    trainer.train(state, train, steps=steps, subsets=subsets, validation_data=val, callback=record)
    bar.close()
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "curves.csv"), rows)
    report(rows, args, start)


def report(rows, args, start):
    summary = summarize(rows, args)
    write_csv(os.path.join(args.out, "summary.csv"), summary)
    plot(rows, summary, args)
    steps = max(r["step"] for r in rows)
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, Adam 1e-3, {steps} steps, "
        f"{args.seeds} seeds; rate and early-stopping step chosen on the validation split; "
        "test error mean ± sd (ddof=1); gain = paired difference, 95% interval, "
        "Holm-adjusted over the sizes\n"
    )
    print(
        markdown_table(
            [
                "train size",
                "rate chosen on val",
                "test err, no dropout",
                "no dropout, early-stopped on val",
                "test err, dropout",
                "gain vs no dropout, points [95% CI] (p)",
                "gain vs early-stopped",
                "verdict",
            ],
            [
                [
                    s["size"],
                    f"{s['chosen_rate']:g}",
                    s["no_dropout"],
                    s["no_dropout_early"],
                    s["dropout"],
                    s["gain"],
                    s["gain_vs_early"],
                    s["verdict"],
                ]
                for s in summary
            ],
        )
    )
    print(f"\nwrote {args.out}/ in {time.perf_counter() - start:.0f} s")


def curves(rows, size, rate, key):
    """(steps, seeds x steps array) of ``key`` for one size and rate."""
    sel = [r for r in rows if r["size"] == size and r["rate"] == rate]
    steps = sorted({r["step"] for r in sel})
    seeds = sorted({r["seed"] for r in sel})
    table = {(r["seed"], r["step"]): r[key] for r in sel}
    return np.array(steps), np.array([[table[s, t] for t in steps] for s in seeds])


def stats(name, v):
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {f"{name}_mean": round(float(v.mean()), 5), f"{name}_std": round(std, 5)}


def summarize(rows, args):
    """Per size: the val-chosen rate, test errors, paired gains (Holm over the sizes)."""
    per_size = []
    for n in args.sizes:
        final_val = {r: curves(rows, n, r, "val_err")[1][:, -1].mean() for r in args.rates}
        chosen = min(args.rates, key=lambda r: (final_val[r], r))
        base = curves(rows, n, 0.0, "test_err")[1][:, -1]
        drop = curves(rows, n, chosen, "test_err")[1][:, -1]
        _, val0 = curves(rows, n, 0.0, "val_err")
        _, test0 = curves(rows, n, 0.0, "test_err")
        early = test0[np.arange(len(val0)), val0.argmin(1)]  # early stopping on val
        per_size.append((n, chosen, final_val, base, drop, early))
    gains = _stats.paired_holm([(base, drop) for _, _, _, base, drop, _ in per_size])
    gains_early = _stats.paired_holm([(early, drop) for *_, drop, early in per_size])
    out = []
    for (n, chosen, final_val, base, drop, early), g, ge in zip(
        per_size, gains, gains_early, strict=True
    ):
        out.append(
            {
                "size": n,
                "chosen_rate": chosen,
                "no_dropout": _stats.mean_sd(100 * base, ".1f") + " %",
                "no_dropout_early": _stats.mean_sd(100 * early, ".1f") + " %",
                "dropout": _stats.mean_sd(100 * drop, ".1f") + " %",
                "gain": g.format(100, "+.1f"),
                "gain_vs_early": ge.format(100, "+.1f"),
                "verdict": "no dropout chosen" if chosen == 0 else g.verdict("worse", "better"),
                **stats("no_dropout", base),
                **stats("no_dropout_early", early),
                **stats("dropout", drop),
                **stats("gain", base - drop),
                **stats("gain_vs_early", early - drop),
                "gain_low": round(g.low, 5),
                "gain_high": round(g.high, 5),
                "gain_p_holm": round(g.p, 5),
                "gain_vs_early_low": round(ge.low, 5),
                "gain_vs_early_high": round(ge.high, 5),
                "gain_vs_early_p_holm": round(ge.p, 5),
                **{f"val_err_rate_{r:g}": round(float(v), 5) for r, v in final_val.items()},
            }
        )
    return out


def plot(rows, summary, args):
    plt = matplotlib_pyplot()
    shown = [args.sizes[0], args.sizes[min(2, len(args.sizes) - 1)]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, n in zip(axes[:2], shown, strict=True):
        chosen = next(s["chosen_rate"] for s in summary if s["size"] == n)
        for rate, color in ((0.0, "C3"), (chosen if chosen else max(args.rates), "C0")):
            steps, test = curves(rows, n, rate, "test_err")
            _, train = curves(rows, n, rate, "train_err")
            name = "no dropout" if rate == 0 else f"dropout {rate:g}"
            plot_band(ax, steps, 100 * test, label=f"{name}: test", color=color)
            plot_band(ax, steps, 100 * train, label=f"{name}: train", color=color, ls="--")
        ax.set(
            xlabel="training step",
            ylabel="error (%)",
            title=f"{n} training examples (val-chosen rate {chosen:g})",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    sizes = [s["size"] for s in summary]
    for key, label, color in (
        ("no_dropout", "no dropout (final)", "C3"),
        ("no_dropout_early", "no dropout, early-stopped on val", "C1"),
        ("dropout", "dropout, val-chosen rate (final)", "C0"),
    ):
        m = np.array([s[f"{key}_mean"] for s in summary])
        e = np.array([s[f"{key}_std"] for s in summary])
        ax.errorbar(sizes, 100 * m, yerr=100 * e, marker="o", capsize=3, label=label, color=color)
        # (error bars: sd over seeds, ddof=1; the paired gains and intervals are in the table)
    for s in summary:
        ax.annotate(
            f"p={s['chosen_rate']:g}",
            (s["size"], 100 * s["dropout_mean"]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
            color="C0",
        )
    ax.set(
        xscale="log",
        xlabel="training examples (log scale)",
        ylabel="final test error (%)",
        title="Test error vs training-set size (mean ± sd)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Dropout vs none, MLP 40-128-128-10 on MNIST-1D, Adam; band/bars: {args.seeds} seeds "
        "(band = min-max)"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=100)


if __name__ == "__main__":
    main()
