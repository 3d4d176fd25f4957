"""When to drop: early, late, throughout or never, in an underfitting and an overfitting net.

Liu et al. (2023) report that dropout used only at the start of training ("early
dropout", the rate falling linearly to 0 over the first sixth of training in their
ViT-T runs) lowers the final *training* loss of underfitting models and improves their
test accuracy, while standard dropout hurts them; and that dropout switched on only
after that point ("late dropout") improves overfitting models more than standard
dropout. Here both regimes are built on MNIST-1D:

* underfitting: a small MLP (40-16-16-10) on 18,000 training examples;
* overfitting: a larger MLP (40-128-128-10) on 1,000 training examples.

Schedules (``step`` counted from 0, ``T`` the training steps, ``k = cutoff * T``):
none; standard (``rate`` throughout); early (``rate * (1 - step / k)`` before ``k``,
then 0); late (0 before ``k``, then ``rate``). The rate (small ones for the underfitting
net, large ones for the overfitting net, so that each grid brackets its optimum) and the
cutoff (1/6 or 1/3 of training) of each schedule are chosen on a validation split (mean
over seeds). The dropout rate is a traced
function of the step computed inside the loss (``jaxreg.grid`` passes the step number as
``hparams["step"]``), so every schedule, rate and seed of a regime is one compiled
program. Adam with cosine decay; the final parameters are reported (as in the paper),
and no-dropout stopped early on validation is shown as an extra baseline.

Writes ``when_to_drop.csv`` (one row per model), ``when_to_drop_curves.csv`` (validation
error and training loss per evaluation, for the validation-chosen settings) and
``when_to_drop.png`` to ``--out``; ``--replot`` redoes the table and the plot from them.

Run: python examples/when_to_drop.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

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
    plot_band,
    positive_int,
    read_csv,
    save_figure,
    write_csv,
)
from _stats import holm, mean_sd, paired

import jaxreg.grid as jg

NAME = "when_to_drop"
SCHEDULES = ("none", "standard", "early", "late")
LEARNING_RATE = 3e-3


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument(
        "--rates",
        type=float_list(low=0, high=1, high_open=True),
        default=None,
        help="rates for both regimes (default: small ones underfitting, large overfitting)",
    )
    parser.add_argument(
        "--cutoffs", type=float_list(low=0, high=1), default=None, help="fractions of steps"
    )
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None, help="steps per model")
    parser.add_argument("--replot", action="store_true", help="redo table and plot from CSVs")
    args = parser.parse_args()
    defaults = (
        {"rates": [0.25], "cutoffs": [0.25], "seeds": 2, "steps": 40}
        if args.smoke
        else {"rates": None, "cutoffs": [1 / 6, 1 / 3], "seeds": 8, "steps": 3000}
    )
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.rates is not None:
        args.rates = sorted(r for r in set(args.rates) if r > 0)
    args.cutoffs = sorted(c for c in set(args.cutoffs) if 0 < c < 1)
    return args


def rate_at(hp, steps):
    """The schedule's dropout rate at ``hp["step"]`` (all traced)."""
    t = hp["step"].astype(jnp.float32)
    k = hp["cutoff"] * steps
    early = hp["rate"] * jnp.clip(1.0 - t / k, 0.0, 1.0)
    late = jnp.where(t >= k, hp["rate"], 0.0)
    s = hp["schedule"]
    return jnp.where(s == 1, hp["rate"], jnp.where(s == 2, early, jnp.where(s == 3, late, 0.0)))


def run_regime(regime, widths, rates, data, args, *, chunk, batch_size):
    settings = [{"schedule": 0, "rate": 0.0, "cutoff": 1.0}]
    settings += [{"schedule": 1, "rate": r, "cutoff": 1.0} for r in rates]
    settings += [
        {"schedule": s, "rate": r, "cutoff": c} for s in (2, 3) for r in rates for c in args.cutoffs
    ]
    grid = jg.product(jg.rows(settings, name="setting"), seed=list(range(args.seeds)))
    sizes = (data.num_features, *widths, data.num_classes)
    steps = args.steps

    def loss(params, hp, batch, key):
        logits = mlp(params, batch["x"], key=key, rates=rate_at(hp, steps))
        return cross_entropy(logits, batch["y"])

    def error(params, hp, batch):
        return (jnp.argmax(mlp(params, batch["x"]), -1) != batch["y"]).astype(jnp.float32)

    def clean_loss(params, hp, batch):
        return cross_entropy(mlp(params, batch["x"]), batch["y"])

    trainer = jg.Trainer(
        init=lambda key, hp: init_mlp(key, sizes),
        loss=loss,
        optimizer=lambda hp: optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, steps)),
        batch_size=batch_size,
        chunk_steps=chunk,
        validation=error,
        strategy="vmap",  # small MLPs: all models at once
    )
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    curves = []

    def record(state, c):
        val_err = state.to_host(state.metric)
        train_loss = trainer.evaluate(state, train, {"loss": clean_loss})["loss"]
        for i, r in enumerate(grid.rows()):
            curves.append(
                {
                    "regime": regime,
                    "schedule": SCHEDULES[r["schedule"]],
                    "rate": round(r["rate"], 4),
                    "cutoff": round(r["cutoff"], 4),
                    "seed": r["seed"],
                    "step": (c + 1) * chunk,
                    "val_err": round(float(val_err[i]), 5),
                    "train_loss": round(float(train_loss[i]), 5),
                }
            )

    t0 = time.perf_counter()
    state = trainer.train(
        trainer.init_state(grid, train), train, steps=steps, validation_data=val, callback=record
    )
    res = {
        "train_loss": trainer.evaluate(state, train, {"v": clean_loss})["v"],
        "train_err": trainer.evaluate(state, train, {"v": error})["v"],
        "val_err": trainer.evaluate(state, val, {"v": error})["v"],
        "test_err": trainer.evaluate(state, test, {"v": error})["v"],
        "test_err_best": trainer.evaluate(state, test, {"v": error}, best=True)["v"],
        "best_step": state.to_host(state.best_step),
    }
    rows = []
    for r in grid.rows(**{k: v.tolist() for k, v in res.items()}):
        row = {"regime": regime, "widths": "-".join(map(str, sizes)), **r}
        row["schedule"] = SCHEDULES[r["schedule"]]
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = round(v, 4 if k in ("rate", "cutoff") else 5)  # as in the curves
        rows.append(row)
    return rows, curves, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# Selection on validation, paired comparisons
# ---------------------------------------------------------------------------------------


def per_seed(rows, regime, schedule, rate, cutoff, key):
    sel = sorted(
        (
            r
            for r in rows
            if (r["regime"], r["schedule"], r["rate"], r["cutoff"])
            == (regime, schedule, rate, cutoff)
        ),
        key=lambda r: r["seed"],
    )
    return np.array([r[key] for r in sel])


def choose(rows, regime, schedule):
    """The (rate, cutoff) of ``schedule`` with the lowest mean validation error."""
    options = sorted(
        {
            (r["rate"], r["cutoff"])
            for r in rows
            if (r["regime"], r["schedule"]) == (regime, schedule)
        }
    )
    return min(options, key=lambda o: (per_seed(rows, regime, schedule, *o, "val_err").mean(), o))


def summarize(rows):
    out = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        chosen = {s: choose(rows, regime, s) for s in SCHEDULES}
        get = {
            (s, k): per_seed(rows, regime, s, *chosen[s], k)
            for s in SCHEDULES
            for k in ("test_err", "train_loss")
        }
        get["none (early-stopped)", "test_err"] = per_seed(
            rows, regime, "none", *chosen["none"], "test_err_best"
        )
        tests = [(s, "none") for s in SCHEDULES[1:]] + [("early", "standard"), ("late", "standard")]
        if regime == "overfitting":  # is a schedule better than stopping early?
            tests.append(("late", "none (early-stopped)"))
        losses = [("early", "none"), ("standard", "none")]  # the underfitting claim
        diffs = {
            (a, b, "test_err"): paired(get[a, "test_err"], get[b, "test_err"]) for a, b in tests
        }
        diffs.update(
            {
                (a, b, "train_loss"): paired(get[a, "train_loss"], get[b, "train_loss"])
                for a, b in losses
            }
        )
        keys = list(diffs)
        adjusted = dict(zip(keys, holm([diffs[k].p for k in keys]), strict=True))
        for a, b, k in keys:
            d = diffs[a, b, k]
            scale = 100 if k == "test_err" else 1
            out.append(
                {
                    "regime": regime,
                    "metric": k,
                    "comparison": f"{a} - {b}",
                    "setting_a": describe(a, chosen.get(a)),
                    "value_a": mean_sd(scale * get[a, k], ".3f" if scale == 1 else ".2f"),
                    "value_b": mean_sd(scale * get[b, k], ".3f" if scale == 1 else ".2f"),
                    "diff": d.format(scale, "+.3f" if scale == 1 else "+.2f"),
                    "mean": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "p": d.p,
                    "p_holm": float(adjusted[a, b, k]),
                    "verdict": "inconclusive"
                    if adjusted[a, b, k] >= 0.05
                    else d.verdict("a lower", "a higher"),
                }
            )
    return out


def describe(schedule, choice):
    if choice is None or schedule == "none":
        return "-"
    rate, cutoff = choice
    return f"rate {rate:g}" + ("" if schedule == "standard" else f", cutoff {cutoff:.2g}")


def plot(rows, curves, summary, args, path):
    plt = matplotlib_pyplot()
    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    fig, axes = plt.subplots(3, len(regimes), figsize=(5.8 * len(regimes), 12), squeeze=False)
    for col, regime in enumerate(regimes):
        widths = next(r["widths"] for r in rows if r["regime"] == regime)
        for i, s in enumerate(SCHEDULES):
            rate, cutoff = choose(rows, regime, s)
            sel = [
                c
                for c in curves
                if (c["regime"], c["schedule"], c["rate"], c["cutoff"]) == (regime, s, rate, cutoff)
            ]
            steps = sorted({c["step"] for c in sel})
            table = {(c["seed"], c["step"]): c for c in sel}
            seeds = sorted({c["seed"] for c in sel})
            for row, key in enumerate(("val_err", "train_loss")):
                ys = np.array([[table[sd, t][key] for t in steps] for sd in seeds])
                plot_band(
                    axes[row, col],
                    steps,
                    100 * ys if key == "val_err" else ys,
                    label=s if s == "none" else f"{s} ({describe(s, (rate, cutoff))})",
                    color=f"C{i}",
                )
        for row, label in enumerate(("validation error (%)", "training loss (no dropout)")):
            ax = axes[row, col]
            ax.set(
                xlabel="training step",
                ylabel=label,
                title=f"{regime}: MLP {widths}",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper right" if row == 0 else "lower left")
        axes[1, col].set_yscale("log")
        comps = [s for s in summary if s["regime"] == regime]
        note = "final training loss, paired (Holm p):\n" + "\n".join(
            f"{s['comparison']}: {s['diff'].split(' (')[0]} ({s['p_holm']:.2g})"
            for s in comps
            if s["metric"] == "train_loss"
        )
        axes[1, col].text(
            0.98, 0.4, note, transform=axes[1, col].transAxes, ha="right", va="center",
            fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
        )  # fmt: skip
        ax = axes[2, col]
        comps = [s for s in comps if s["metric"] == "test_err"]
        y = np.arange(len(comps))[::-1]
        for yi, s in zip(y, comps, strict=True):
            ax.errorbar(
                100 * s["mean"],
                yi,
                xerr=[[100 * (s["mean"] - s["low"])], [100 * (s["high"] - s["mean"])]],
                fmt="o",
                capsize=4,
                color="C3" if s["verdict"] != "inconclusive" else "0.5",
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            y,
            [f"{s['comparison']}\n(a: {s['setting_a']})" for s in comps],
            fontsize=8,
        )
        ax.set(
            xlabel="test error a - b, pp (95% paired t interval)\nred: Holm p < 0.05",
            title=f"{regime}: final test error, paired over {args.seeds} seeds",
        )
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(
        "MNIST-1D: early / late / standard dropout vs none (Liu et al. 2023); "
        "bands: min-max over seeds"
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.smoke:
        big = load_data(num_samples=800, val_size=100)
        small = big._replace(x_train=big.x_train[:200], y_train=big.y_train[:200])
        regimes = (("underfitting", (8,), big, None), ("overfitting", (32, 32), small, None))
        chunk, batch_size = 20, 32
    else:
        big = load_data(num_samples=25000, val_size=1000)
        small = big._replace(x_train=big.x_train[:1000], y_train=big.y_train[:1000])
        regimes = (  # the rate grids bracket each regime's validation optimum
            ("underfitting", (16, 16), big, [0.025, 0.05, 0.1, 0.25]),
            ("overfitting", (128, 128), small, [0.1, 0.25, 0.5, 0.75]),
        )
        chunk, batch_size = 100, 64
    if args.replot:
        rows, curves = (
            [{k: typed(k, v) for k, v in r.items()} for r in read_csv(os.path.join(args.out, f))]
            for f in (f"{NAME}.csv", f"{NAME}_curves.csv")
        )
        args.seeds = len({r["seed"] for r in rows})
        return report(rows, curves, args, batch_size, ["replotted from CSV"], start)
    rows, curves, notes = [], [], []
    for regime, widths, data, rates in regimes:
        rates = args.rates if args.rates is not None else rates
        r, c, seconds = run_regime(
            regime, widths, rates, data, args, chunk=chunk, batch_size=batch_size
        )
        rows += r
        curves += c
        notes.append(f"{regime}: rates {rates}, {len(r)} models, {seconds:.0f} s")
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), rows)
    chosen = {
        (regime, s, *choose(rows, regime, s))
        for regime in dict.fromkeys(r["regime"] for r in rows)
        for s in SCHEDULES
    }
    curves = [c for c in curves if (c["regime"], c["schedule"], c["rate"], c["cutoff"]) in chosen]
    write_csv(os.path.join(args.out, f"{NAME}_curves.csv"), curves)  # chosen settings only
    report(rows, curves, args, batch_size, notes, start)


def typed(key, value):
    if key in ("regime", "widths", "schedule"):
        return value
    return int(value) if key in ("seed", "step", "best_step") else float(value)


def report(rows, curves, args, batch_size, notes, start):
    summary = summarize(rows)
    plot(rows, curves, summary, args, os.path.join(args.out, f"{NAME}.png"))
    print(
        f"MNIST-1D; Adam, cosine decay from {LEARNING_RATE:g}, batch {batch_size}, "
        f"{args.steps} steps; rates (below), cutoffs "
        f"{[round(c, 3) for c in args.cutoffs]} chosen on validation per schedule; "
        f"{args.seeds} seeds; final parameters\n"
    )
    print(
        markdown_table(
            [
                "regime",
                "metric",
                "comparison",
                "a: chosen",
                "a",
                "b",
                "a - b [95% CI] (p)",
                "Holm p",
                "verdict",
            ],
            [
                [
                    s["regime"],
                    s["metric"],
                    s["comparison"],
                    s["setting_a"],
                    s["value_a"],
                    s["value_b"],
                    s["diff"],
                    f"{s['p_holm']:.2g}",
                    s["verdict"],
                ]
                for s in summary
            ],
        )
    )
    print("\n" + "; ".join(notes))
    print(f"wrote {args.out}/ in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
