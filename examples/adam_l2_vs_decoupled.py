"""Adam + L2 in the loss vs Adam with decoupled weight decay: learning rate x decay.

Loshchilov & Hutter (2019, Figure 2) found that with Adam + L2 the good region of the
(learning rate, L2 factor) plane runs along a diagonal (the best L2 factor moves with
the learning rate), while with decoupled weight decay (AdamW) the best decay hardly
depends on the learning rate. Here an MLP 40-128-128-10 is trained on 1000 MNIST-1D
examples with

* Adam + ``jaxreg.l2_penalty(strength=s)`` added to the loss, and
* ``jaxreg.optax.decoupled_adamw(lr, weight_decay=lam)``: the paper's Algorithm 2,
  ``w <- w - (lr * adam_direction + lam * w)`` (the decay is not multiplied by lr),

for every learning rate x decay x seed, all as ONE vmapped program: each model carries
``lr``, ``s`` and ``lam`` as traced hyperparameters (one of ``s``, ``lam`` is 0; the
models with both 0 are plain Adam and appear in both heatmaps). Kernels only are
decayed. Writes ``grid.csv`` and ``adam_l2_vs_decoupled.png`` to ``--out``.

Run: python examples/adam_l2_vs_decoupled.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np
from _common import (
    Trainer,
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
    write_csv,
)

import jaxreg
import jaxreg.optax

NAME = "adam_l2_vs_decoupled"
WIDTHS = (128, 128)
TRAIN_SIZE = 1000
LABELS = {
    "l2": "Adam + L2 in the loss (strength s)",
    "decoupled": "decoupled weight decay (lambda)",
}


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument("--lrs", type=float_list(low=0), default=None)
    parser.add_argument("--l2", type=float_list(low=0), default=None, help="L2 strengths s")
    parser.add_argument("--wd", type=float_list(low=0), default=None, help="decoupled lambdas")
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--replot", action="store_true", help="redo table and plot from CSV")
    args = parser.parse_args()
    full = {
        "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "l2": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        "wd": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
        "seeds": 2,
        "steps": 2000,
    }
    smoke = {"lrs": [1e-3, 1e-2], "l2": [1e-3], "wd": [1e-3], "seeds": 1, "steps": 40}
    for k, v in (smoke if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.l2 = [0.0] + [v for v in args.l2 if v > 0]
    args.wd = [0.0] + [v for v in args.wd if v > 0]
    return args


def models(args):
    """(method, lr, decay, seed) per model; decay 0 (plain Adam) once, method 'none'."""
    out = []
    for lr in args.lrs:
        for seed in range(args.seeds):
            out.append(("none", lr, 0.0, seed))
            out += [("l2", lr, s, seed) for s in args.l2[1:]]
            out += [("decoupled", lr, w, seed) for w in args.wd[1:]]
    return out


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.replot:
        rows = [
            {k: v if k == "method" else int(v) if k == "seed" else float(v) for k, v in r.items()}
            for r in read_csv(os.path.join(args.out, "grid.csv"))
        ]
        args.lrs = sorted({r["lr"] for r in rows})
        args.l2 = sorted({r["decay"] for r in rows if r["method"] == "l2"})
        args.wd = sorted({r["decay"] for r in rows if r["method"] == "decoupled"})
        args.seeds = len({r["seed"] for r in rows})
        return report(rows, args, start, "")
    chunk = 20 if args.smoke else 100
    steps = -(-args.steps // chunk) * chunk
    data = (
        load_data(num_samples=1000, train_size=400)
        if args.smoke
        else load_data(train_size=TRAIN_SIZE)
    )
    table = models(args)
    hp = {
        "lr": jnp.float32([lr for _, lr, _, _ in table]),
        "l2": jnp.float32([d if m == "l2" else 0.0 for m, _, d, _ in table]),
        "wd": jnp.float32([d if m == "decoupled" else 0.0 for m, _, d, _ in table]),
    }
    trainer = Trainer(
        init=lambda key: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        apply=lambda params, h, x, key: mlp(params, x),
        optimizer=lambda h: jaxreg.optax.decoupled_adamw(
            h["lr"], weight_decay=h["wd"], where=jaxreg.kernels_only
        ),
        penalty=lambda params, h: jaxreg.l2_penalty(
            params, strength=h["l2"], where=jaxreg.kernels_only
        ),
        batch_size=128,
        chunk_steps=chunk,
    )
    x, y, x_test, y_test = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    state = trainer.init_state(hp, np.int32([s for *_, s in table]))
    bar = progress(steps // chunk, models=len(table), chunk_steps=chunk)
    for _ in range(steps // chunk):
        state, _ = trainer.chunk(state, hp, x, y)
        bar.update(1)
    bar.close()
    test_loss, test_acc = (
        np.asarray(a) for a in trainer.evaluate(state.params, hp, x_test, y_test)
    )
    _, train_acc = (np.asarray(a) for a in trainer.evaluate(state.params, hp, x, y))
    norms = np.sqrt(sum(np.sum(np.asarray(p["kernel"]) ** 2, axis=(1, 2)) for p in state.params))
    rows = []
    for i, (m, lr, d, seed) in enumerate(table):
        for method in ("l2", "decoupled") if m == "none" else (m,):
            rows.append(
                {
                    "method": method,
                    "lr": lr,
                    "decay": d,
                    "seed": seed,
                    "test_err": round(1 - float(test_acc[i]), 5),
                    "train_err": round(1 - float(train_acc[i]), 5),
                    "test_loss": round(float(test_loss[i]), 5),
                    "kernel_norm": round(float(norms[i]), 4),
                }
            )
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "grid.csv"), rows)
    report(rows, args, start, f"MNIST-1D ({len(data.x_train)} training examples), {steps} steps, ")


def report(rows, args, start, what):
    err = {m: heat(rows, m, args) for m in ("l2", "decoupled")}
    plot(err, args)

    lines = []
    for j, lr in enumerate(args.lrs):
        line = [f"{lr:g}"]
        for m, decays in (("l2", args.l2), ("decoupled", args.wd)):
            e = err[m][:, j]  # (decays, seeds)
            best = int(e.mean(1).argmin())
            line += [
                f"{decays[best]:g}"
                + (f" ({decays[best] / lr:.2g} lr)" if m == "decoupled" else ""),
                mean_std(100 * e[best], ".1f"),
                mean_std(100 * e[0], ".1f"),
            ]
        lines.append(line)
    print(f"{what}MLP 40-128-128-10, {args.seeds} seeds; test error (%) mean ± std\n")
    print(
        markdown_table(
            [
                "lr",
                "best s (L2)",
                "err at best s",
                "err at s=0",
                "best lambda (decoupled)",
                "err at best lambda",
                "err at lambda=0",
            ],
            lines,
        )
    )
    print(f"\nwrote {args.out}/ in {time.perf_counter() - start:.0f} s")


def heat(rows, method, args):
    """(decays, lrs, seeds) test errors."""
    decays = args.l2 if method == "l2" else args.wd
    table = {(r["decay"], r["lr"], r["seed"]): r["test_err"] for r in rows if r["method"] == method}
    return np.array(
        [[[table[d, lr, s] for s in range(args.seeds)] for lr in args.lrs] for d in decays]
    )


def plot(err, args):
    plt = matplotlib_pyplot()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    means = {m: 100 * e.mean(2) for m, e in err.items()}
    lo = min(v.min() for v in means.values())
    hi = min(max(v.max() for v in means.values()), lo + 25)
    for ax, (m, decays) in zip(axes, (("l2", args.l2), ("decoupled", args.wd)), strict=True):
        mean, std = means[m], 100 * err[m].std(2, ddof=1) if args.seeds > 1 else 0 * means[m]
        im = ax.imshow(mean, origin="lower", cmap="viridis_r", vmin=lo, vmax=hi, aspect="auto")
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{mean[i, j]:.1f}\n±{std[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if mean[i, j] > (lo + hi) / 2 else "k",
                )
        best = mean.argmin(0)
        for j, i in enumerate(best):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="r", lw=2))
        ax.plot([], [], "s", mfc="none", mec="r", ms=10, label="best decay per learning rate")
        i, j = np.unravel_index(mean.argmin(), mean.shape)
        ax.plot(j + 0.36, i + 0.3, "r*", ms=9, label="best cell")
        ax.set_xticks(range(len(args.lrs)), [f"{v:g}" for v in args.lrs])
        ax.set_yticks(range(len(decays)), [f"{v:g}" for v in decays])
        sym = "s" if m == "l2" else "lambda"
        ax.set(
            xlabel="Adam learning rate (log grid)",
            ylabel=f"{sym} (log grid; first row 0)",
            title=LABELS[m],
        )
        if m == "l2":
            fig.legend(loc="lower center", ncol=2, fontsize=9)
    fig.subplots_adjust(bottom=0.2, top=0.88, wspace=0.3)
    fig.colorbar(im, ax=axes, label="test error (%), mean over seeds")
    fig.suptitle(
        f"Adam + L2 vs decoupled weight decay: test error on MNIST-1D, MLP "
        f"40-128-128-10; cell: mean ± std over {args.seeds} seeds"
    )
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=80)


if __name__ == "__main__":
    main()
