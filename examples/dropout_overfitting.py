"""Dropout against overfitting: test error over training, with and without dropout.

Srivastava et al. (2014) showed dropout lowering test error of networks that overfit,
and (their Figure 10, MNIST) the gain vanishing or reversing for very small training
sets. Here an MLP 40-128-128-10 (Adam 1e-3) overfits subsets of MNIST-1D of several
sizes; for each size a grid of dropout rates x seeds is one vmapped program (training
sets of every size are tiled to one length, so one compile serves them all). The rate
is chosen on a held-out validation split (the last 1000 training examples), never on
the test set. Seeds share initialisation and minibatch order across rates, so the gain
is a paired difference.

Writes ``curves.csv`` (one row per size, rate, seed and evaluation step),
``summary.csv`` and ``dropout_overfitting.png`` to ``--out``.

Run: python examples/dropout_overfitting.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    Trainer,
    example_parser,
    fail,
    float_list,
    grid,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mean_std,
    mlp,
    plot_band,
    positive_int,
    progress,
    read_csv,
    save_figure,
    tile_rows,
    write_csv,
)

NAME = "dropout_overfitting"
WIDTHS = (128, 128)


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
    full = {"sizes": [100, 300, 1000, 3000], "rates": [0.0, 0.1, 0.25, 0.5], "seeds": 3}
    smoke = {"sizes": [100, 300], "rates": [0.0, 0.5], "seeds": 2}
    for k, v in (smoke if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    if 0.0 not in args.rates:
        args.rates = [0.0, *args.rates]
    return args


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
        if n > pool or pool % n:
            fail(f"{NAME}: error: --sizes: {n} must divide the {pool} training examples")

    hp = grid(rate=args.rates, seed=list(range(args.seeds)))  # float64: rows keep 0.1 exact
    hp_rate = {"rate": jnp.asarray(hp["rate"])}
    k = len(hp["rate"])
    trainer = Trainer(
        init=lambda key: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        apply=lambda params, h, x, key: mlp(params, x, key=key, rates=h["rate"]),
        optimizer=lambda h: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
    )
    x_val, y_val, x_test, y_test = trainer.put_data(
        data.x_val, data.y_val, data.x_test, data.y_test
    )

    rows = []
    bar = progress(len(args.sizes) * steps // chunk, models=k, chunk_steps=chunk)
    for n in args.sizes:
        x_sub, y_sub = data.x_train[:n], data.y_train[:n]
        x_tr, y_tr = trainer.put_data(tile_rows(x_sub, pool), tile_rows(y_sub, pool))
        x_fit, y_fit = trainer.put_data(x_sub, y_sub)
        state = trainer.init_state(hp_rate, hp["seed"])
        for _ in range(steps // chunk):
            state, loss = trainer.chunk(state, hp_rate, x_tr, y_tr)
            errs = [
                1.0 - np.asarray(trainer.evaluate(state.params, hp_rate, xx, yy)[1])
                for xx, yy in ((x_fit, y_fit), (x_val, y_val), (x_test, y_test))
            ]
            step = int(np.asarray(state.step)[0])
            loss = np.asarray(loss)
            for i in range(k):
                rows.append(
                    {
                        "size": n,
                        "rate": float(hp["rate"][i]),
                        "seed": int(hp["seed"][i]),
                        "step": step,
                        "train_loss": round(float(loss[i]), 5),
                        "train_err": round(float(errs[0][i]), 5),
                        "val_err": round(float(errs[1][i]), 5),
                        "test_err": round(float(errs[2][i]), 5),
                    }
                )
            bar.update(1)
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
        f"{args.seeds} seeds; rate chosen on the validation split\n"
    )
    print(
        markdown_table(
            [
                "train size",
                "chosen rate",
                "test err, no dropout",
                "no dropout, early-stopped",
                "test err, dropout",
                "gain (paired)",
            ],
            [
                [
                    s["size"],
                    f"{s['chosen_rate']:g}",
                    s["no_dropout"],
                    s["no_dropout_early"],
                    s["dropout"],
                    s["gain"],
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
    out = []
    for n in args.sizes:
        final_val = {r: curves(rows, n, r, "val_err")[1][:, -1].mean() for r in args.rates}
        chosen = min(args.rates, key=lambda r: (final_val[r], r))
        base = curves(rows, n, 0.0, "test_err")[1][:, -1]
        drop = curves(rows, n, chosen, "test_err")[1][:, -1]
        _, val0 = curves(rows, n, 0.0, "val_err")
        _, test0 = curves(rows, n, 0.0, "test_err")
        early = test0[np.arange(len(val0)), val0.argmin(1)]  # early stopping on val
        out.append(
            {
                "size": n,
                "chosen_rate": chosen,
                "no_dropout": mean_std(base),
                "no_dropout_early": mean_std(early),
                "dropout": mean_std(drop),
                "gain": mean_std(base - drop),
                **stats("no_dropout", base),
                **stats("no_dropout_early", early),
                **stats("dropout", drop),
                **stats("gain", base - drop),
                **stats("gain_vs_early", early - drop),
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
        title="Test error vs training-set size (mean ± std)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Dropout vs none, MLP 40-128-128-10 on MNIST-1D, Adam; band/bars: {args.seeds} seeds "
        "(band = min-max)"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=80)


if __name__ == "__main__":
    main()
