"""Activation variance per hidden layer over training, with and without dropout.

A tutorial seed asks: "What is the variance of the activations in each hidden layer
when dropout is and is not applied? Draw a plot to show how this quantity evolves over
time" and answers that dropout *reduces* it. Here an MLP 40-128-128-128-10 (Adam 1e-3)
is trained on MNIST-1D at several dropout rates x seeds, all as one vmapped program.
Every 100 steps the activations of each hidden layer are measured on a fixed probe
batch (the first 512 test examples), in two modes:

* eval mode: after ReLU, no dropout (what the network computes at test time);
* train mode: after ReLU and after (inverted) dropout, with one fixed mask key per
  model, so that only the weights change between measurements.

The variance is taken per unit over the probe examples, then averaged over the units
of the layer. Writes ``variance.csv`` and ``activation_variance.png`` to ``--out``.

Run: python examples/activation_variance.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    Trainer,
    example_parser,
    float_list,
    grid,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    mean_std,
    mlp,
    mlp_hidden,
    plot_band,
    positive_int,
    progress,
    read_csv,
    save_figure,
    write_csv,
)

NAME = "activation_variance"
WIDTHS = (128, 128, 128)
PROBE = 512


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument("--rates", type=float_list(low=0, high=1, high_open=True), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--replot", action="store_true", help="redo table and plot from CSV")
    args = parser.parse_args()
    if args.rates is None:
        args.rates = [0.0, 0.5] if args.smoke else [0.0, 0.2, 0.5]
    if args.seeds is None:
        args.seeds = 2 if args.smoke else 3
    if args.steps is None:
        args.steps = 40 if args.smoke else 3000
    return args


def layer_stats(params, h, x, seed):
    """(modes=2, layers) variance and mean of each hidden layer on the probe ``x``."""
    key = jax.random.fold_in(jax.random.key(seed), 12345)  # fixed across training
    out = []
    for k in (None, key):
        acts = mlp_hidden(params, x, key=k, rates=h["rate"])
        out.append(jnp.stack([jnp.stack([a.var(0).mean(), a.mean()]) for a in acts]))
    s = jnp.stack(out)  # (mode, layer, 2)
    return s[..., 0], s[..., 1]


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
    data = load_data(num_samples=1000) if args.smoke else load_data()
    hp = grid(rate=args.rates, seed=list(range(args.seeds)))  # float64: rows keep 0.2 exact
    h = {"rate": jnp.asarray(hp["rate"])}
    k = len(hp["rate"])
    trainer = Trainer(
        init=lambda key: init_mlp(key, (data.num_features, *WIDTHS, data.num_classes)),
        apply=lambda params, hh, x, key: mlp(params, x, key=key, rates=hh["rate"]),
        optimizer=lambda hh: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
    )
    x, y, x_test, y_test = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    probe = jnp.asarray(data.x_test[:PROBE])
    measure = jax.jit(jax.vmap(layer_stats, in_axes=(0, 0, None, 0)))
    seeds = jnp.asarray(hp["seed"])

    rows = []
    state = trainer.init_state(h, hp["seed"])

    def record(state):
        var, mean = (np.asarray(a) for a in measure(state.params, h, probe, seeds))
        err = 1.0 - np.asarray(trainer.evaluate(state.params, h, x_test, y_test)[1])
        step = int(np.asarray(state.step)[0])
        for i in range(k):
            for m, mode in enumerate(("eval", "train")):
                for layer in range(len(WIDTHS)):
                    rows.append(
                        {
                            "rate": float(hp["rate"][i]),
                            "seed": int(hp["seed"][i]),
                            "step": step,
                            "layer": layer + 1,
                            "mode": mode,
                            "variance": float(var[i, m, layer]),
                            "mean": float(mean[i, m, layer]),
                            "test_err": round(float(err[i]), 5),
                        }
                    )

    record(state)
    bar = progress(steps // chunk, models=k, chunk_steps=chunk)
    for _ in range(steps // chunk):
        state, _ = trainer.chunk(state, h, x, y)
        record(state)
        bar.update(1)
    bar.close()
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, "variance.csv"), rows)
    report(rows, args, start)


def report(rows, args, start):
    plot(rows, args)

    table = []
    for rate in args.rates:
        for layer in range(1, len(WIDTHS) + 1):
            ev = final(rows, rate, layer, "eval", "variance")
            tr = final(rows, rate, layer, "train", "variance")
            table.append([f"{rate:g}", layer, mean_std(ev), mean_std(tr), mean_std(tr / ev, ".2f")])
        table.append(
            [f"{rate:g}", "test err", mean_std(final(rows, rate, 1, "eval", "test_err")), "", ""]
        )
    steps = max(r["step"] for r in rows)
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, Adam 1e-3, {steps} steps, "
        f"{args.seeds} seeds; variance on {PROBE} probe examples at the last step\n"
    )
    print(markdown_table(["rate", "layer", "eval-mode var", "train-mode var", "train/eval"], table))
    print(f"\nwrote {args.out}/ in {time.perf_counter() - start:.0f} s")


def series(rows, rate, layer, mode, key="variance"):
    sel = [r for r in rows if r["rate"] == rate and r["layer"] == layer and r["mode"] == mode]
    steps = sorted({r["step"] for r in sel})
    seeds = sorted({r["seed"] for r in sel})
    table = {(r["seed"], r["step"]): r[key] for r in sel}
    return np.array(steps), np.array([[table[s, t] for t in steps] for s in seeds])


def final(rows, rate, layer, mode, key):
    return series(rows, rate, layer, mode, key)[1][:, -1]


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
        steps, e = series(rows, rate, 1, "eval", "test_err")
        plot_band(ax, steps[1:], 100 * e[:, 1:], label=f"rate {rate:g}", color=colors[rate])
    ax.set(xlabel="training step", ylabel="test error (%)", title="test error (eval mode)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(
        f"Activation variance with vs without dropout, MLP 40-128-128-128-10 on MNIST-1D; "
        f"{PROBE} probe examples; solid: eval mode, dashed: train mode (after dropout); "
        f"band: min-max over {args.seeds} seeds",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=80)


if __name__ == "__main__":
    main()
