"""Does dropout slow convergence? Steps to a loss or error threshold, and gradient noise.

Claim (a tutorial's list of dropout's drawbacks): "Slower convergence during training
due to randomness." Here the sweep's MLP 40-128-128-10 (Adam 1e-3, batch 128) is
trained on MNIST-1D at several dropout rates x seeds, every model in one
``jaxreg.grid`` program. After every chunk of steps, the deterministic training loss
(no masks, on a fixed subset of the training set) and the validation error are
recorded; a model's *steps to threshold* is the first evaluation at or below it.
Rates are compared with rate 0 as paired differences over seeds (models sharing a seed
share initialisation and minibatch order).

The randomness is measured too: the "simple" gradient-noise scale
``B_simple = tr(Sigma) / |G|^2`` (McCandlish et al. 2018) of one training example's
gradient, at a few checkpoints, with the dropout masks (what SGD sees; every training
example with several mask draws) and without them (the same parameters, data noise
only). The per-example gradients' moments come from one backward pass per model (a
dense layer's per-example gradient is an outer product), equal to
``jax.vmap(jax.grad)`` of the training loss (a test checks it).

Writes ``dropout_convergence.csv`` (steps to each threshold per model),
``dropout_convergence_curves.csv``, ``dropout_convergence_noise.csv`` and
``dropout_convergence.png`` to ``--out``.

Run: python examples/dropout_convergence.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax
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
    save_figure,
    write_csv,
)
from _gradient_noise import gradient_moments, noise_stats
from _stats import holm, mean_sd, paired

import jaxreg.grid as jg

NAME = "dropout_convergence"
FULL = {
    "rates": [0.0, 0.1, 0.3, 0.5],
    "seeds": 8,
    "steps": 4000,
    "chunk": 50,
    "hidden": 128,
    "num_samples": 5000,
    "val_size": 1000,
    "loss_thresholds": [1.0, 0.5],
    "error_thresholds": [0.5, 0.45, 0.4],
    "checkpoints": [100, 500, 2000, 4000],
    "repeats": 8,
    "averaged_rate": 0.5,
    "masks": 4,
}
SMOKE = {
    "rates": [0.0, 0.5],
    "seeds": 2,
    "steps": 60,
    "chunk": 20,
    "hidden": 32,
    "num_samples": 1000,
    "val_size": 200,
    "loss_thresholds": [2.25],
    "error_thresholds": [0.85],
    "checkpoints": [20, 60],
    "repeats": 2,
    "averaged_rate": 0.5,
    "masks": 2,
}
LR, BATCH, LOSS_SUBSET = 1e-3, 128, 1000


def parse_args():
    parser = example_parser(__doc__, NAME)
    rates = float_list(low=0.0, high=1.0, high_open=True)
    parser.add_argument("--rates", type=rates, default=None, help="dropout rates (0 is added)")
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds 0..N-1")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps")
    parser.add_argument(
        "--masks", type=positive_int, default=None, help="masks averaged per step (1: no such arm)"
    )
    parser.add_argument(
        "--averaged-rate", type=rates, default=None, help="the rate of the averaged-masks arm"
    )
    args = parser.parse_args()
    if args.averaged_rate is not None:
        if len(args.averaged_rate) != 1:
            fail(f"{NAME}: error: --averaged-rate takes one rate, got {args.averaged_rate}")
        args.averaged_rate = args.averaged_rate[0]
    for k, v in (SMOKE if args.smoke else FULL).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if 0.0 not in args.rates:
        args.rates = [0.0, *args.rates]
    args.rates = sorted(args.rates)
    if args.masks > 1 and args.averaged_rate not in args.rates:
        fail(f"{NAME}: error: --averaged-rate {args.averaged_rate:g} must be one of --rates")
    if args.steps % args.chunk:
        fail(f"{NAME}: error: --steps {args.steps} must be a multiple of {args.chunk}")
    args.checkpoints = sorted({min(c, args.steps) for c in args.checkpoints})
    if args.seeds < 2 and not args.smoke:
        fail(f"{NAME}: error: --seeds must be >= 2 for paired intervals")
    return args


# -- the model and its metrics (one model; the grid vmaps them) ----------------------


def loss_fn(params, hp, batch, key):
    return cross_entropy(mlp(params, batch["x"], key=key, rates=hp["rate"]), batch["y"])


def error_fn(params, hp, batch):  # per-example 0/1 errors, no dropout
    return (jnp.argmax(mlp(params, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


def det_loss_fn(params, hp, batch):  # per-example training loss, no dropout
    logits = mlp(params, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])


# -- training -------------------------------------------------------------------------


def averaged_loss(masks):
    """The dropout loss averaged over ``masks`` mask draws per example and step: the
    same objective in expectation as ``loss_fn``, with 1/masks of its mask variance."""

    def loss(params, hp, batch, key):
        keys = jax.random.split(key, masks)
        return jax.vmap(lambda k: loss_fn(params, hp, batch, k))(keys).mean()

    return loss


def run(args):
    """Trains both grids; returns arms [(rate, masks)], curves (arms, seeds, chunks),
    the noise statistics per checkpoint (for the one-mask arms) and the steps."""
    data = load_data(num_samples=args.num_samples, val_size=args.val_size)
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    subset = {k: v[:LOSS_SUBSET] for k, v in train.items()}
    noise_x, noise_y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    sizes = (data.num_features, args.hidden, args.hidden, data.num_classes)
    chunks = args.steps // args.chunk
    seeds = list(range(args.seeds))
    noise = {}

    def train_grid(grid, loss, with_noise):
        trainer = jg.Trainer(
            init=lambda key, hp: init_mlp(key, sizes),
            loss=loss,
            optimizer=lambda hp: optax.adam(LR),
            batch_size=BATCH,
            chunk_steps=args.chunk,
            validation=error_fn,
            strategy="vmap",  # small dense models: vmap (no "auto" probe to compile)
        )
        train_loss = np.full((grid.size, chunks), np.nan)
        val_error = np.full((grid.size, chunks), np.nan)

        def callback(state, c):
            val_error[:, c] = state.to_host(state.metric)
            train_loss[:, c] = trainer.evaluate(state, subset, {"loss": det_loss_fn})["loss"]
            step = (c + 1) * args.chunk
            if with_noise and step in args.checkpoints:
                params = state.to_host(state.params)
                rates = state.to_host(state.hparams["rate"])
                moments = gradient_moments(
                    params, rates, noise_x, noise_y, step, repeats=args.repeats
                )
                noise[step] = [
                    grid.reshape(a) for a in noise_stats(moments, len(noise_x), args.repeats)
                ]

        state = trainer.init_state(grid, train)
        trainer.train(state, train, steps=args.steps, validation_data=val, callback=callback)
        return grid.reshape(train_loss), grid.reshape(val_error)

    grid = jg.product(rate=args.rates, seed=seeds)
    train_loss, val_error = train_grid(grid, loss_fn, True)
    arms = [(r, 1) for r in args.rates]
    if args.masks > 1:
        avg = jg.product(rate=[args.averaged_rate], seed=seeds)
        tl, ve = train_grid(avg, averaged_loss(args.masks), False)
        train_loss, val_error = np.concatenate([train_loss, tl]), np.concatenate([val_error, ve])
        arms.append((args.averaged_rate, args.masks))
    steps = args.chunk * np.arange(1, chunks + 1)
    return arms, steps, train_loss, val_error, noise


def first_step(curve, steps, threshold):
    """The first step whose value is <= threshold (nan if never), over the last axis."""
    hit = curve <= threshold
    return np.where(hit.any(-1), steps[hit.argmax(-1)], np.nan)


def compare(args, hit, ref):
    """Paired steps-to-threshold difference ``hit - ref`` over seeds, censoring-aware.

    A model that never reached the threshold counts as reaching it one chunk after the
    end; the difference is then a bound ("≤" when only ``ref`` has such models, "≥"
    when only ``hit`` has them). Returns a dict for the table.
    """
    hit_c, ref_c = ~np.isfinite(hit), ~np.isfinite(ref)
    if args.seeds < 2 or (hit_c.any() and ref_c.any()):
        return {"diff": "censored in both", "p": np.nan, "bound": ""}
    late = args.steps + args.chunk
    d = paired(np.nan_to_num(hit, nan=late), np.nan_to_num(ref, nan=late))
    bound = "≤ " if ref_c.any() else ("≥ " if hit_c.any() else "")
    return {
        "diff": bound + d.format(fmt="+.0f"),
        "p": d.p,
        "bound": bound,
        "low": d.low,
        "high": d.high,
    }


def verdicts(rows):
    """Holm-adjusted p-values over every comparison, and a verdict: a direction when
    the Holm p is below 0.05 and the interval excludes zero on the side a bound allows
    ("≤" can only show "faster", "≥" only "slower")."""
    ps = [r["p"] for r in rows if np.isfinite(r["p"])]
    adjusted = iter(holm(ps)) if ps else iter(())
    for r in rows:
        r["p_holm"] = next(adjusted) if np.isfinite(r["p"]) else np.nan
        lo, hi = r.get("low", np.nan), r.get("high", np.nan)
        if not np.isfinite(r["p"]):
            r["verdict"] = ""
        elif r["p_holm"] >= 0.05:
            r["verdict"] = "inconclusive"
        elif hi < 0 and r["bound"] != "≥ ":
            r["verdict"] = "faster"
        elif lo > 0 and r["bound"] != "≤ ":
            r["verdict"] = "slower"
        else:
            r["verdict"] = "inconclusive"


def label(arm):
    rate, masks = arm
    return f"rate {rate:g}" + (f", {masks} masks" if masks > 1 else "")


def summarize(args, arms, steps, train_loss, val_error):
    """Table rows per (metric, threshold, arm), and the per-seed steps to threshold."""
    rows, hits = [], []
    for metric, curve, thresholds in (
        ("train loss", train_loss, args.loss_thresholds),
        ("val error", val_error, args.error_thresholds),
    ):
        for th in thresholds:
            hit = first_step(curve, steps, th)  # (arms, seeds)
            hits.append((metric, th, hit))
            for i, arm in enumerate(arms):
                reached = np.isfinite(hit[i])
                row = {
                    "metric": metric,
                    "threshold": th,
                    "arm": label(arm),
                    "reached": f"{reached.sum()}/{args.seeds}",
                    "steps": mean_sd(hit[i][reached], ".0f") if reached.any() else "-",
                }
                if i == 0:
                    row.update(diff="(reference)", p=np.nan, bound="")
                else:
                    row.update(compare(args, hit[i], hit[0]))
                rows.append(row)
                if arm[1] > 1:  # the averaged arm against the same rate with one mask
                    j = arms.index((arm[0], 1))
                    extra = {
                        "metric": metric,
                        "threshold": th,
                        "arm": f"{label(arm)} vs 1 mask",
                        "reached": "",
                        "steps": "",
                    }
                    extra.update(compare(args, hit[i], hit[j]))
                    rows.append(extra)
    verdicts(rows)
    return rows, hits


def report(args, arms, steps, train_loss, val_error, noise, elapsed):
    rows, hits = summarize(args, arms, steps, train_loss, val_error)
    best = np.nanmin(val_error, -1)  # (arms, seeds)
    out_rows = [
        {
            "metric": metric.replace(" ", "_"),
            "threshold": th,
            "rate": arm[0],
            "masks": arm[1],
            "seed": s,
            "steps_to_threshold": "" if np.isnan(hit[i, s]) else int(hit[i, s]),
            "best_val_error": round(float(best[i, s]), 5),
        }
        for metric, th, hit in hits
        for i, arm in enumerate(arms)
        for s in range(args.seeds)
    ]
    write_csv(os.path.join(args.out, f"{NAME}.csv"), out_rows)
    curve_rows = [
        {
            "rate": arm[0],
            "masks": arm[1],
            "seed": s,
            "step": int(t),
            "train_loss": round(float(train_loss[i, s, c]), 5),
            "val_error": round(float(val_error[i, s, c]), 5),
        }
        for i, arm in enumerate(arms)
        for s in range(args.seeds)
        for c, t in enumerate(steps)
    ]
    write_csv(os.path.join(args.out, f"{NAME}_curves.csv"), curve_rows)
    names = (
        "trace_sigma_masks",
        "grad_norm2_masks",
        "mask_share",
        "trace_sigma_no_masks",
        "grad_norm2_no_masks",
    )
    noise_rows = [
        {
            "rate": rate,
            "seed": s,
            "step": step,
            **{k: float(v[i, s]) for k, v in zip(names, noise[step], strict=True)},
        }
        for step in sorted(noise)
        for i, rate in enumerate(args.rates)
        for s in range(args.seeds)
    ]
    write_csv(os.path.join(args.out, f"{NAME}_noise.csv"), noise_rows)

    print(
        f"MNIST-1D ({args.num_samples * 4 // 5 - args.val_size} train, "
        f"{args.val_size} val), MLP 40-{args.hidden}-{args.hidden}-10, Adam {LR:g}, "
        f"batch {BATCH}, {args.steps} steps, evaluated every {args.chunk}; "
        f"{args.seeds} seeds; {len(arms) * args.seeds} models in two grids, {elapsed:.0f} s\n"
    )
    print(
        markdown_table(
            [
                "metric",
                "threshold",
                "setting",
                "reached",
                "steps (mean ± sd)",
                "vs rate 0 [95% CI]",
                "Holm p",
                "verdict",
            ],
            [
                [
                    r["metric"],
                    f"{r['threshold']:g}",
                    r["arm"],
                    r["reached"],
                    r["steps"],
                    r["diff"],
                    "" if np.isnan(r["p_holm"]) else f"{r['p_holm']:.2g}",
                    r["verdict"],
                ]
                for r in rows
            ],
        )
    )
    if arms[-1][1] > 1:
        i, j = len(arms) - 1, arms.index((arms[-1][0], 1))
        lines = []
        for metric, th, hit in hits:
            if np.isfinite(hit[[0, i, j]]).all():
                frac = (hit[j] - hit[i]) / (hit[j] - hit[0])
                lines.append([metric, f"{th:g}", paired(frac, np.zeros_like(frac)).format()])
        print(
            f"\nshare of the extra steps (rate {arms[i][0]:g} vs rate 0) that averaging "
            f"{arms[i][1]} masks per step removes, per seed (1 - extra steps with "
            f"{arms[i][1]} masks / extra steps with 1), mean [95% CI]:"
        )
        print(markdown_table(["metric", "threshold", "share removed"], lines))
    print("\nbest validation error over training, % (mean ± sd over seeds):")
    print(
        markdown_table(
            ["setting", "best val error %", "vs rate 0, points [95% CI]"],
            [
                [
                    label(arm),
                    mean_sd(100 * best[i], ".1f"),
                    "(reference)" if i == 0 else paired(best[i], best[0]).format(scale=100),
                ]
                for i, arm in enumerate(arms)
            ],
        )
    )
    print(
        "\ngradient-noise scale B_simple = tr(Sigma)/|G|^2 in examples (ratio of the means "
        "over seeds), with masks / without masks at the same parameters; in brackets the "
        "masks' share of tr(Sigma) with masks:"
    )
    table = []
    for step in sorted(noise):
        bm, bd, share = b_simple(noise[step])
        table.append(
            [step]
            + [f"{fmt_b(bm[i])} / {fmt_b(bd[i])} ({share[i]:.0%})" for i in range(len(args.rates))]
        )
    print(markdown_table(["step"] + [f"rate {r:g}" for r in args.rates], table))
    plot(args, arms, steps, train_loss, val_error, noise, hits)
    print(f"\nwrote {args.out}/{NAME}.csv, _curves.csv, _noise.csv, .png")


def b_simple(stats):
    """Per rate: B_simple with masks and without (ratio of seed means), mask share."""
    tr_m, g2_m, share, tr_d, g2_d = (a.mean(-1) for a in stats)
    return tr_m / np.where(g2_m > 0, g2_m, np.nan), tr_d / g2_d, share


def fmt_b(b):
    return "unresolved" if not np.isfinite(b) else f"{b:.3g}"


def plot(args, arms, steps, train_loss, val_error, noise, hits):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 9))
    rate_color = {r: f"C{i}" for i, r in enumerate(args.rates)}
    style = [(rate_color[r], "-" if m == 1 else "--") for r, m in arms]
    for i, arm in enumerate(arms):
        color, ls = style[i]
        plot_band(axes[0, 0], steps, train_loss[i], label=label(arm), color=color, ls=ls)
        plot_band(axes[0, 1], steps, 100 * val_error[i], label=label(arm), color=color, ls=ls)
    for th in args.loss_thresholds:
        axes[0, 0].axhline(th, color="gray", ls=":", lw=1)
    for th in args.error_thresholds:
        axes[0, 1].axhline(100 * th, color="gray", ls=":", lw=1)
    axes[0, 0].set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (no masks, log)",
        title=f"Training loss on {LOSS_SUBSET} training examples (dotted: thresholds)",
    )
    axes[0, 1].set(xlabel="step", ylabel="validation error (%)", title="Validation error")
    axes[0, 1].set_ylim(top=min(100.0, 100 * np.nanmax(val_error[..., len(steps) // 10 :]) + 5))

    ax = axes[1, 0]
    width = 0.8 / len(arms)
    for j, (_, _, hit) in enumerate(hits):
        for i, arm in enumerate(arms):
            x = j + (i - (len(arms) - 1) / 2) * width
            ok = np.isfinite(hit[i])
            color, ls = style[i]
            if ok.any():
                ax.bar(
                    x,
                    np.mean(hit[i][ok]),
                    width,
                    color=color,
                    alpha=0.75,
                    hatch=None if ls == "-" else "//",
                    label=label(arm) if j == 0 else None,
                )
                ax.plot(np.full(ok.sum(), x), hit[i][ok], "k.", ms=3)
            if not ok.all():  # staggered, so that neighbours' notes do not overlap
                ax.text(
                    x,
                    args.steps * (1.01 + 0.09 * (i % 2)),
                    f"{(~ok).sum()}/{ok.size}\nnever",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    color=color,
                )
    ax.set_xticks(range(len(hits)), [f"{m}\n≤ {th:g}" for m, th, _ in hits], fontsize=8)
    ax.axhline(args.steps, color="gray", ls=":", lw=1)
    ax.set(
        ylabel="steps to threshold",
        ylim=(0, args.steps * 1.45),
        title="Steps to threshold (bar: mean of the seeds that reached it; dots: seeds)",
    )
    ax.legend(fontsize=7, loc="upper left", ncol=3)

    ax = axes[1, 1]
    ckpts = sorted(noise)
    bs = [b_simple(noise[c]) for c in ckpts]
    for i, r in enumerate(args.rates):
        ax.plot(
            ckpts,
            [b[0][i] for b in bs],
            "o-",
            color=rate_color[r],
            label=f"rate {r:g}" + (", masks" if r > 0 else ""),
        )
        if r > 0:
            ax.plot(
                ckpts,
                [b[1][i] for b in bs],
                "s:",
                color=rate_color[r],
                alpha=0.6,
                label=f"rate {r:g}, no masks",
            )
    ax.axhline(BATCH, color="gray", lw=1)
    ax.text(ckpts[0], BATCH * 1.1, f"batch size {BATCH}", fontsize=7, color="gray")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="step (log)",
        ylabel="B_simple = tr Σ / |G|² (examples, log)",
        title="Gradient-noise scale on the training set (mean over seeds)",
    )
    ax.legend(fontsize=7, ncol=2)
    for a in axes.flat:
        a.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(
        f"Dropout and convergence: MLP 40-{args.hidden}-{args.hidden}-10 on MNIST-1D, Adam "
        f"{LR:g}, batch {BATCH}; {args.seeds} seeds (bands: min-max)\ndashed / hatched: "
        f"rate {args.averaged_rate:g} with the loss averaged over {args.masks} masks per step",
        fontsize=11,
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    arms, steps, train_loss, val_error, noise = run(args)
    os.makedirs(args.out, exist_ok=True)
    report(args, arms, steps, train_loss, val_error, noise, time.perf_counter() - start)


if __name__ == "__main__":
    main()
