"""Activation variance per hidden layer over training, with and without dropout.

A tutorial seed asks: "What is the variance of the activations in each hidden layer
when dropout is and is not applied? Draw a plot to show how this quantity evolves over
time" and answers that dropout *reduces* it. Here an MLP 40-128-128-128-10 (Adam 1e-3)
is trained on MNIST-1D at several dropout rates x seeds, all as one ``jaxreg.grid``
program. Every 100 steps the activations of each hidden layer are measured on a fixed
probe batch (the first 512 validation examples), in two modes:

* eval mode: after ReLU, no dropout (what the network computes at test time);
* train mode: after ReLU and after (inverted) dropout, with one fixed mask key per
  model, so that only the weights change between measurements.

The variance is taken per unit over the probe examples, then averaged over the units
of the layer. Comparisons are paired over seeds (shared initialisation, data order and
masks) and reported as ratios with 95% intervals, Holm-corrected. Writes
``variance.csv``, ``ratios.csv`` and ``activation_variance.png`` to ``--out``.

Run: python examples/activation_variance.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _stats
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    cross_entropy,
    example_parser,
    float_list,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mlp,
    mlp_hidden,
    plot_band,
    positive_int,
    progress,
    read_csv,
    save_figure,
    write_csv,
)

import jaxreg.grid as jg

NAME = "activation_variance"
WIDTHS = (128, 128, 128)
PROBE = 512
MODES = ("eval", "train")


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument("--rates", type=float_list(low=0, high=1, high_open=True), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--replot", action="store_true", help="redo table and plot from CSV")
    args = parser.parse_args()
    if args.rates is None:
        args.rates = [0.0, 0.5] if args.smoke else [0.0, 0.2, 0.5]
    if 0.0 not in args.rates:
        args.rates = [0.0, *args.rates]
    if args.seeds is None:
        args.seeds = 2 if args.smoke else 5
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    return args


def error(params, hp, batch):
    """Per-example 0/1 error without dropout."""
    return (jnp.argmax(mlp(params, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


def layer_metric(mode, layer, stat):
    """A scalar metric: the layer's activation variance (mean over units) or mean."""

    def metric(params, hp, batch):
        # One fixed mask key per model (train mode), so only the weights change.
        key = jax.random.fold_in(jax.random.key(hp["seed"]), 12345) if mode == "train" else None
        a = mlp_hidden(params, batch["x"], key=key, rates=hp["rate"])[layer]
        return a.var(0).mean() if stat == "variance" else a.mean()

    return metric


METRICS = {
    (mode, layer, stat): layer_metric(mode, layer, stat)
    for mode in MODES
    for layer in range(len(WIDTHS))
    for stat in ("variance", "mean")
}


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.replot:
        ints, strs = ("seed", "step", "layer"), ("mode",)
        rows = [
            {
                k: v if k in strs else int(v) if k in ints else round(float(v), 7)
                for k, v in r.items()
            }
            for r in read_csv(os.path.join(args.out, "variance.csv"))
        ]
        args.rates = sorted({r["rate"] for r in rows})
        args.seeds = len({r["seed"] for r in rows})
        return report(rows, args, start)
    chunk = 20 if args.smoke else 100
    steps = -(-args.steps // chunk) * chunk
    data = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    probe = {"x": data.x_val[:PROBE]}  # fixed probe batch from the validation split
    grid = jg.product(rate=args.rates, seed=list(range(args.seeds)))
    rates = [args.rates[i // args.seeds] for i in range(grid.size)]
    seeds = [int(s) for s in grid.hparams["seed"]]
    trainer = jg.Trainer(
        init=lambda key, hp: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        loss=lambda params, hp, batch, key: cross_entropy(
            mlp(params, batch["x"], key=key, rates=hp["rate"]), batch["y"]
        ),
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
        strategy="vmap",
        validation=error,
    )
    metrics = {"/".join(map(str, k)): f for k, f in METRICS.items()}
    rows = []

    def record(st, step):
        m = trainer.evaluate(st, probe, metrics)
        errs = trainer.evaluate(st, val, {"val": error})
        errs.update(trainer.evaluate(st, test, {"test": error}))
        for i in range(grid.size):
            for mode in MODES:
                for layer in range(len(WIDTHS)):
                    rows.append(
                        {
                            "rate": rates[i],
                            "seed": seeds[i],
                            "step": step,
                            "layer": layer + 1,
                            "mode": mode,
                            "variance": float(m[f"{mode}/{layer}/variance"][i]),
                            "mean": float(m[f"{mode}/{layer}/mean"][i]),
                            "val_err": round(float(errs["val"][i]), 5),
                            "test_err": round(float(errs["test"][i]), 5),
                        }
                    )

    state = trainer.init_state(grid, train)
    record(state, 0)
    bar = progress(steps // chunk, models=grid.size, chunk_steps=chunk)

    def after_chunk(st, c):
        record(st, (c + 1) * chunk)
        bar.update(1)

    trainer.train(state, train, steps=steps, validation_data=val, callback=after_chunk)
    bar.close()
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "variance.csv"), rows)
    report(rows, args, start)


def log_ratio_text(res):
    """A paired difference of logs as a ratio: ``x1.23 [x1.10, x1.37] (p=0.004)``."""
    m, lo, hi = (float(np.exp(v)) for v in (res.mean, res.low, res.high))
    return f"x{m:.2f} [x{lo:.2f}, x{hi:.2f}] (p={res.p:.2g})"


def compare(rows, args):
    """Paired comparisons over seeds (Holm over the whole family); rows for a CSV."""
    last = max(r["step"] for r in rows)
    layers = range(1, len(WIDTHS) + 1)
    pairs, labels = [], []
    for rate in args.rates[1:]:
        for layer in layers:
            for mode in MODES:  # dropout net's variance / no-dropout net's, end of training
                pairs.append(
                    (
                        np.log(at(rows, rate, layer, mode, "variance", last)),
                        np.log(at(rows, 0.0, layer, "eval", "variance", last)),
                    )
                )
                labels.append(("end/none", rate, layer, mode))
            for step in (0, last):  # train mode / eval mode at fixed weights
                pairs.append(
                    (
                        np.log(at(rows, rate, layer, "train", "variance", step)),
                        np.log(at(rows, rate, layer, "eval", "variance", step)),
                    )
                )
                labels.append(("train/eval", rate, layer, f"step {step}"))
    out = []
    for (kind, rate, layer, what), res in zip(labels, _stats.paired_holm(pairs), strict=True):
        out.append(
            {
                "ratio": kind,
                "rate": rate,
                "layer": layer,
                "which": what,
                "ratio_mean": round(float(np.exp(res.mean)), 4),
                "ratio_low": round(float(np.exp(res.low)), 4),
                "ratio_high": round(float(np.exp(res.high)), 4),
                "p_holm": round(res.p, 6),
                "verdict": res.verdict("lower", "higher"),
                "text": log_ratio_text(res),
            }
        )
    return out


def report(rows, args, start):
    plot(rows, args)
    last = max(r["step"] for r in rows)
    comps = compare(rows, args)
    write_csv(os.path.join(args.out, "ratios.csv"), comps)
    table = []
    for rate in args.rates:
        for layer in range(1, len(WIDTHS) + 1):
            ev = at(rows, rate, layer, "eval", "variance", last)
            tr = at(rows, rate, layer, "train", "variance", last)
            table.append([f"{rate:g}", layer, _stats.mean_sd(ev), _stats.mean_sd(tr)])
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, Adam 1e-3, {last} steps, "
        f"{args.seeds} seeds; variance on {PROBE} validation examples at the last step "
        "(mean ± sd, ddof=1)\n"
    )
    print(markdown_table(["rate", "layer", "eval-mode var", "train-mode var"], table))
    print(
        "\nPaired ratios over seeds (geometric mean, 95% interval, Holm over all "
        f"{len(comps)} ratios):\n"
    )
    print(
        markdown_table(
            ["ratio", "rate", "layer", "which", "ratio [95% CI] (p)", "verdict"],
            [
                [c["ratio"], f"{c['rate']:g}", c["layer"], c["which"], c["text"], c["verdict"]]
                for c in comps
            ],
        )
    )
    # Error: rate chosen on validation, test error reported there; paired vs no dropout.
    val = {r: at(rows, r, 1, "eval", "val_err", last) for r in args.rates}
    test = {r: at(rows, r, 1, "eval", "test_err", last) for r in args.rates}
    chosen = min(args.rates, key=lambda r: (val[r].mean(), r))
    lines = [
        [f"{r:g}", _stats.mean_sd(100 * val[r], ".1f"), _stats.mean_sd(100 * test[r], ".1f")]
        for r in args.rates
    ]
    print()
    print(markdown_table(["rate", "val err %", "test err %"], lines))
    if chosen != 0.0:
        d = _stats.paired(test[chosen], test[0.0])
        print(
            f"\nrate chosen on validation: {chosen:g}; test error minus no dropout: "
            f"{d.format(100, '+.1f')} points ({d.verdict('lower', 'higher')})"
        )
    else:
        print("\nrate chosen on validation: 0 (no dropout)")
    print(f"\nwrote {args.out}/ in {time.perf_counter() - start:.0f} s")


def at(rows, rate, layer, mode, key, step):
    """Per-seed values of ``key`` at ``step``."""
    steps, v = series(rows, rate, layer, mode, key)
    return v[:, list(steps).index(step)]


def series(rows, rate, layer, mode, key="variance"):
    sel = [r for r in rows if r["rate"] == rate and r["layer"] == layer and r["mode"] == mode]
    steps = sorted({r["step"] for r in sel})
    seeds = sorted({r["seed"] for r in sel})
    table = {(r["seed"], r["step"]): r[key] for r in sel}
    return np.array(steps), np.array([[table[s, t] for t in steps] for s in seeds])


def plot(rows, args):
    plt = matplotlib_pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(1, len(WIDTHS) + 1, figsize=(4.2 * (len(WIDTHS) + 1), 4.2))
    colors = {r: f"C{i}" for i, r in enumerate(args.rates)}
    for layer, ax in enumerate(axes[:-1], start=1):
        for rate in args.rates:
            for mode, ls in (("eval", "-"), ("train", "--")):
                if rate == 0 and mode == "train":
                    continue  # identical to eval mode
                steps, v = series(rows, rate, layer, mode)
                label = f"rate {rate:g}, {mode} mode" if rate else "no dropout"
                plot_band(ax, steps, v, label=label, color=colors[rate], ls=ls)
        ax.set(
            yscale="log",
            xlabel="training step",
            ylabel="activation variance (mean over units)",
            title=f"hidden layer {layer} (after ReLU)",
        )
        ax.grid(alpha=0.3, which="both")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for rate in args.rates:
        steps, e = series(rows, rate, 1, "eval", "val_err")
        plot_band(ax, steps[1:], 100 * e[:, 1:], label=f"rate {rate:g}", color=colors[rate])
    ax.set(xlabel="training step", ylabel="validation error (%)", title="validation error")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Activation variance with vs without dropout, MLP 40-128-128-128-10 on MNIST-1D; "
        f"{PROBE} probe examples; solid: eval mode, dashed: train mode (after dropout); "
        f"band: min-max over {args.seeds} seeds",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=100)


if __name__ == "__main__":
    main()
