"""How do I choose the dropout rate? Concrete dropout learns it; a grid selects it.

An MLP 40-128-128-10 (the sweep's) is trained on MNIST-1D at three training-set sizes
with dropout after each hidden layer, either

* at a fixed rate from a grid (0, 0.1, ..., 0.6), the rate chosen per seed by the
  validation error (what a practitioner does with a grid), or
* with concrete dropout (``jaxreg.concrete_dropout``, Gal, Hron & Kendall 2017)
  learning each hidden layer's rate: ``rate = sigmoid(logit)``, the logit inside
  ``params``, trained with the weights against ``jaxreg.concrete_dropout_penalty``
  (N = the model's training-set size, length-scale ``--length-scale``).

Every method x size x seed is one ``jaxreg.grid`` program: a ``method`` row block
(``concrete`` flag + fixed ``rate``) times a ``size`` row block (``subset`` index + N)
times seeds; one loss handles both methods with ``jnp.where`` on the traced flag,
and the training sets are the grid's per-model ``subsets`` (nested prefixes of one
training set). Models sharing a seed share their initialisation, minibatches and
dropout keys, so learned-vs-grid differences are paired.

Cost: two more programs time a grid with only the concrete rows (one learned run per
size and seed) against the fixed-rate grid alone, each with its own specialised loss.

Writes ``learned_dropout_rate.csv`` (one row per model), ``rates.csv`` (the learned
rates per chunk) and ``learned_dropout_rate.png`` to ``--out``.

Run: python examples/learned_dropout_rate.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    example_parser,
    float_list,
    init_mlp,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    positive_float,
    positive_int,
    read_csv,
    save_figure,
    write_csv,
)
from _stats import mean_sd, paired

import jaxreg
import jaxreg.grid as jg

NAME = "learned_dropout_rate"
WIDTHS = (128, 128)
BATCH = 128
LR = 1e-3  # Adam, the weights
TEXT = ("method", "program", "strategy", "run")  # the CSVs' text columns
INIT_RATE = 0.1  # the learned rates start here (the reference implementation's init)


def parse_args():
    parser = example_parser(__doc__, NAME)
    rates = float_list(low=0.0, high=1.0, high_open=True)
    parser.add_argument("--rates", type=rates, default=None, help="fixed-rate grid")
    parser.add_argument("--sizes", type=float_list(low=1), default=None, help="training sizes")
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument(
        "--length-scale", type=positive_float, default=1e-2, help="prior length-scale l (1e-2)"
    )
    parser.add_argument(
        "--rate-lr", type=positive_float, default=1e-2, help="Adam step size of the logits"
    )
    parser.add_argument("--temperature", type=positive_float, default=0.1)
    parser.add_argument("--no-timing", action="store_true", help="skip the two timing grids")
    parser.add_argument("--strategy", choices=("auto", "vmap", "map"), default=None)
    parser.add_argument(
        "--long-steps", type=positive_int, default=None, help="steps of the concrete-only run"
    )
    parser.add_argument("--replot", action="store_true", help="table and plot from the CSVs")
    args = parser.parse_args()
    smoke = args.smoke
    if args.rates is None:
        args.rates = [0.0, 0.3] if smoke else [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    args.sizes = [int(s) for s in (args.sizes or ([150, 300, 600] if smoke else [300, 1000, 3000]))]
    args.seeds = args.seeds or (2 if smoke else 5)
    args.steps = args.steps or (40 if smoke else 2000)
    args.chunk = 20 if smoke else 100
    args.timing_steps = min(args.steps, args.chunk * (2 if smoke else 6))
    args.long_steps = max(args.steps, args.long_steps or (args.steps if smoke else 6000))
    args.long_steps = -(-args.long_steps // args.chunk) * args.chunk
    args.strategy = args.strategy or ("vmap" if smoke else "auto")
    args.steps = -(-args.steps // args.chunk) * args.chunk
    return args


# --- the model: one loss for both methods ------------------------------------------


def init(key, hp):
    params = {"mlp": init_mlp(key, (40, *WIDTHS, 10))}
    params["logit"] = jnp.full(len(WIDTHS), np.log(INIT_RATE / (1 - INIT_RATE)), jnp.float32)
    return params


def learned_rates(params):
    return jax.nn.sigmoid(params["logit"])


def forward(params, hp, x, key=None, *, methods=("fixed", "concrete"), temperature=0.1):
    """Logits; with ``key``, dropout after each hidden layer (fixed or concrete).

    ``methods`` is static: a program that holds only one method computes only it.
    """
    layers = params["mlp"]
    rates = learned_rates(params)
    keys = jax.random.split(key, len(layers) - 1) if key is not None else None
    for i, layer in enumerate(layers[:-1]):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        if key is None:
            continue
        outs = {}
        if "fixed" in methods:
            outs["fixed"] = jaxreg.dropout(keys[i], x, rate=hp["rate"])
        if "concrete" in methods:
            outs["concrete"] = jaxreg.concrete_dropout(
                keys[i], x, rate=rates[i], temperature=temperature
            )
        if len(outs) == 2:
            x = jnp.where(hp["concrete"], outs["concrete"], outs["fixed"])
        else:
            (x,) = outs.values()
    return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def penalty(params, hp, length_scale):
    """Concrete dropout's KL term: layer i's rate against the kernel of layer i + 1."""
    rates = learned_rates(params)
    return sum(
        jaxreg.concrete_dropout_penalty(
            params["mlp"][i + 1]["kernel"],
            rate=rates[i],
            num_examples=hp["n"],
            length_scale=length_scale,
        )
        for i in range(len(WIDTHS))
    )


def make_trainer(args, methods=("fixed", "concrete")):
    def loss(params, hp, batch, key):
        logits = forward(params, hp, batch["x"], key, methods=methods, temperature=args.temperature)
        data = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        if "concrete" not in methods:
            return data
        pen = penalty(params, hp, args.length_scale)
        return data + (pen if methods == ("concrete",) else jnp.where(hp["concrete"], pen, 0.0))

    def optimizer(hp):
        return optax.multi_transform(
            {"net": optax.adam(LR), "rate": optax.adam(args.rate_lr)},
            lambda p: {"mlp": jax.tree.map(lambda _: "net", p["mlp"]), "logit": "rate"},
        )

    return jg.Trainer(
        init=init,
        loss=loss,
        optimizer=optimizer,
        batch_size=BATCH,
        chunk_steps=args.chunk,
        strategy=args.strategy,
    )


def error(params, hp, batch):
    return (jnp.argmax(forward(params, hp, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


# --- the grid ----------------------------------------------------------------------


def build_grid(args, methods=("fixed", "concrete")):
    rows = []
    if "fixed" in methods:
        rows += [{"concrete": False, "rate": r} for r in args.rates]
    if "concrete" in methods:
        rows += [{"concrete": True, "rate": INIT_RATE}]
    sizes = [{"subset": i, "n": float(n)} for i, n in enumerate(args.sizes)]
    return jg.product(
        jg.rows(rows, name="method"), jg.rows(sizes, name="size"), seed=range(args.seeds)
    )


def timed_run(trainer, grid, data, subsets, steps, record=None):
    """Trains; returns the state and the wall seconds at the end of each chunk."""
    times = []
    t0 = time.perf_counter()

    def callback(state, c):
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - t0)
        if record is not None:
            record(state, c)

    state = trainer.init_state(grid, data)
    state = trainer.train(state, data, steps=steps, subsets=subsets, callback=callback)
    return state, np.asarray(times)


def projected(times, chunks):
    """(first chunk s: probe + compile + one chunk, s per later chunk, projected total
    for ``chunks`` chunks)."""
    first = float(times[0])
    per = float(np.median(np.diff(times))) if len(times) > 1 else first
    return first, per, first + per * (chunks - 1)


def main() -> None:
    args = parse_args()
    if args.replot:
        return replot(args)
    start = time.perf_counter()
    d = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    if max(args.sizes) > len(d.x_train):
        raise SystemExit(f"--sizes: at most {len(d.x_train)} training examples, got {args.sizes}")
    data = {"x": d.x_train, "y": d.y_train}
    subsets = [np.arange(n) for n in args.sizes]  # nested prefixes of one training set
    val, test = {"x": d.x_val, "y": d.y_val}, {"x": d.x_test, "y": d.y_test}

    grid = build_grid(args)
    trainer = make_trainer(args)
    rate_rows = []
    state, times = timed_run(
        trainer, grid, data, subsets, args.steps, rate_recorder(args, grid, "combined", rate_rows)
    )
    plan = trainer.plan(state, data, subsets=subsets)
    val_err, test_err, train_err, rates = measure(trainer, state, data, subsets, val, test)
    chunks = args.steps // args.chunk
    timing = [timing_row("combined", grid.size, plan.strategy, times, chunks, args.steps)]
    long_rows = []
    if not args.no_timing:
        # The concrete rows alone, with their own loss: the time of the learned runs,
        # and (run on to --long-steps) where their rates go with a longer budget.
        g, t = build_grid(args, ("concrete",)), make_trainer(args, ("concrete",))
        record = rate_recorder(args, g, "concrete alone", rate_rows)
        st, times = timed_run(t, g, data, subsets, args.long_steps, record)
        strategy = t.plan(st, data, subsets=subsets).strategy
        timing.append(timing_row("concrete", g.size, strategy, times, chunks, args.long_steps))
        v, e, _, r = measure(t, st, data, subsets, val, test)
        long_rows = [
            {
                "n": int(h["n"]),
                "seed": h["seed"],
                "steps": args.long_steps,
                "val_err": round(float(v[i]), 5),
                "test_err": round(float(e[i]), 5),
                **{f"rate{j + 1}": round(float(r[i, j]), 4) for j in range(len(WIDTHS))},
            }
            for i, h in enumerate(g.rows())
        ]
        # The fixed-rate grid alone: timing_steps steps, projected to --steps.
        g, t = build_grid(args, ("fixed",)), make_trainer(args, ("fixed",))
        st, times = timed_run(t, g, data, subsets, args.timing_steps)
        strategy = t.plan(st, data, subsets=subsets).strategy
        timing.append(timing_row("fixed", g.size, strategy, times, chunks, args.timing_steps))

    r64 = lambda a, d: np.round(np.asarray(a, np.float64), d)  # noqa: E731
    rows = grid.rows(
        val_err=r64(val_err, 5),
        test_err=r64(test_err, 5),
        train_err=r64(train_err, 5),
        **{f"rate{i + 1}": r64(rates[:, i], 4) for i in range(len(WIDTHS))},
    )
    for r in rows:  # grid.rows() gives the float32 values (0.10000000149): round them
        r["method"] = "concrete" if r.pop("concrete") else "fixed"
        r["rate"], r["n"] = float(f"{r['rate']:.6g}"), int(r["n"])
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), rows)
    write_csv(os.path.join(args.out, "rates.csv"), rate_rows)
    write_csv(os.path.join(args.out, "timing.csv"), timing)
    if long_rows:
        write_csv(os.path.join(args.out, "long.csv"), long_rows)
    report(args, rows, rate_rows, timing, long_rows, time.perf_counter() - start)


def measure(trainer, state, data, subsets, val, test):
    """Validation, test and training error (no dropout) and the learned rates, per model."""
    val_err = trainer.evaluate(state, val, {"e": error})["e"]
    test_err = trainer.evaluate(state, test, {"e": error})["e"]
    train_err = trainer.evaluate(state, data, {"e": error}, subsets=subsets)["e"]
    rates = np.asarray(jax.nn.sigmoid(state.to_host(state.params["logit"])))
    return val_err, test_err, train_err, rates


def rate_recorder(args, grid, run, rows):
    """A ``train`` callback appending the concrete models' rates after each chunk."""
    concrete = np.flatnonzero(grid.hparams["concrete"])

    def record(state, c):
        r = np.asarray(jax.nn.sigmoid(state.to_host(state.params["logit"])))
        for i in concrete:
            rows.append(
                {
                    "run": run,
                    "step": (c + 1) * args.chunk,
                    "size": int(grid.hparams["n"][i]),
                    "seed": int(grid.hparams["seed"][i]),
                    **{f"rate{j + 1}": round(float(r[i, j]), 5) for j in range(len(WIDTHS))},
                }
            )

    return record


def timing_row(program, models, strategy, times, chunks, steps_run):
    """Seconds of a run: its first chunk (probe + compile + one chunk), a later chunk
    (median), the projected total for ``chunks`` chunks and, if it ran that far, the
    measured time at ``chunks`` chunks."""
    first, per, total = projected(times, chunks)
    return {
        "program": program,
        "models": models,
        "strategy": strategy,
        "steps_run": steps_run,
        "first_chunk_s": round(first, 2),
        "per_chunk_s": round(per, 3),
        "projected_s": round(total, 1),
        "measured_s": round(float(times[chunks - 1]), 1) if len(times) >= chunks else "",
    }


def replot(args):
    """Redoes the table and the figure from the CSVs of a finished run."""
    start = time.perf_counter()
    num = lambda v: int(v) if v.lstrip("-").isdigit() else float(v)  # noqa: E731
    load = lambda name: [  # noqa: E731
        {k: v if k in TEXT or v == "" else num(v) for k, v in r.items()}
        for r in read_csv(os.path.join(args.out, name))
    ]
    rows, rate_rows, timing = load(f"{NAME}.csv"), load("rates.csv"), load("timing.csv")
    has_long = os.path.exists(os.path.join(args.out, "long.csv"))
    long_rows = load("long.csv") if has_long else []
    for r in rows:
        r["rate"], r["n"] = float(f"{r['rate']:.6g}"), int(r["n"])
    args.sizes = sorted({r["n"] for r in rows})
    args.rates = sorted({r["rate"] for r in rows if r["method"] == "fixed"})
    args.seeds = len({r["seed"] for r in rows})
    args.steps = max(r["step"] for r in rate_rows if r["run"] == "combined")
    args.chunk = min(r["step"] for r in rate_rows)
    args.timing_steps = max([r["steps_run"] for r in timing if r["program"] == "fixed"] or [0])
    args.long_steps = max([r["steps"] for r in long_rows] or [args.steps])
    report(args, rows, rate_rows, timing, long_rows, time.perf_counter() - start)


# --- analysis ----------------------------------------------------------------------


def summarize(args, rows):
    """Per size: the learned rates, the grid's per-seed choice, paired test errors."""
    out = []
    for n in args.sizes:
        at = [r for r in rows if r["n"] == n]
        seeds = sorted({r["seed"] for r in at})
        fixed = {
            s: sorted(
                (r for r in at if r["method"] == "fixed" and r["seed"] == s),
                key=lambda r: r["rate"],
            )
            for s in seeds
        }
        learned = {
            s: next(r for r in at if r["method"] == "concrete" and r["seed"] == s) for s in seeds
        }
        # Validation selection per seed (ties: the smaller rate).
        chosen = {s: min(fixed[s], key=lambda r: (r["val_err"], r["rate"])) for s in seeds}
        mean_val = {
            rate: np.mean([r["val_err"] for s in seeds for r in fixed[s] if r["rate"] == rate])
            for rate in args.rates
        }
        out.append(
            {
                "n": n,
                "seeds": seeds,
                "learned": learned,
                "chosen": chosen,
                "fixed": fixed,
                "mean_val_rate": min(mean_val, key=lambda k: (mean_val[k], k)),
                "diff": paired(
                    [learned[s]["test_err"] for s in seeds], [chosen[s]["test_err"] for s in seeds]
                ),
                "diff0": paired(
                    [learned[s]["test_err"] for s in seeds],
                    [next(r for r in fixed[s] if r["rate"] == 0.0)["test_err"] for s in seeds],
                )
                if 0.0 in args.rates
                else None,
            }
        )
    return out


def report(args, rows, rate_rows, timing, long_rows, elapsed):
    summary = summarize(args, rows)
    plot(args, rows, rate_rows, summary)
    lines, long_lines = [], []
    for s in summary:
        seeds = s["seeds"]
        at = [r for r in long_rows if r["n"] == s["n"]]
        if at:
            long_lines.append(
                [
                    int(s["n"]),
                    " / ".join(
                        mean_sd([r[f"rate{j + 1}"] for r in at], ".3f") for j in range(len(WIDTHS))
                    ),
                    " / ".join(
                        mean_sd([s["learned"][k][f"rate{j + 1}"] for k in seeds], ".3f")
                        for j in range(len(WIDTHS))
                    ),
                    mean_sd([100 * s["chosen"][k]["rate"] for k in seeds], ".0f"),
                    mean_sd([100 * r["test_err"] for r in at], ".1f"),
                ]
            )
        lines.append(
            [
                int(s["n"]),
                " / ".join(
                    mean_sd([s["learned"][k][f"rate{j + 1}"] for k in seeds], ".2f")
                    for j in range(len(WIDTHS))
                ),
                mean_sd([s["chosen"][k]["rate"] for k in seeds], ".2f"),
                f"{s['mean_val_rate']:.1f}",
                mean_sd([100 * s["learned"][k]["test_err"] for k in seeds], ".1f"),
                mean_sd([100 * s["chosen"][k]["test_err"] for k in seeds], ".1f"),
                s["diff"].format(100, "+.2f"),
                s["diff"].verdict("learned better", "grid better"),
                "" if s["diff0"] is None else s["diff0"].format(100, "+.2f"),
            ]
        )
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, Adam {LR:g} (logits "
        f"{args.rate_lr:g}), batch {BATCH}, {args.steps} steps, {args.seeds} seeds; concrete "
        f"dropout: temperature {args.temperature:g}, length-scale {args.length_scale:g}, "
        f"rates start at {INIT_RATE}; grid rates {', '.join(f'{r:g}' for r in args.rates)}\n"
    )
    print(
        markdown_table(
            [
                "train size N",
                "learned rates (layer 1 / layer 2)",
                "grid rate, chosen per seed on val",
                "grid rate, best mean val",
                "test err % learned",
                "test err % grid-chosen",
                "learned - grid (pp, 95% CI)",
                "verdict",
                "learned - rate 0 (pp)",
            ],
            lines,
        )
    )
    if long_lines:
        print(
            f"\nThe concrete rows alone, trained on to {args.long_steps} steps (where the "
            "rates go with a longer budget; not a like-for-like comparison with the grid):\n"
        )
        print(
            markdown_table(
                [
                    "train size N",
                    f"learned rates after {args.long_steps} steps",
                    f"after {args.steps} steps",
                    "grid-chosen rate (x100)",
                    f"test err % after {args.long_steps} steps",
                ],
                long_lines,
            )
        )
        alone = {(r["size"], r["seed"], r["step"]): r for r in rate_rows if r["run"] != "combined"}
        gap = max(
            abs(r[f"rate{j + 1}"] - alone[r["size"], r["seed"], r["step"]][f"rate{j + 1}"])
            for r in rate_rows
            if r["run"] == "combined"
            for j in range(len(WIDTHS))
        )
        print(
            f"\n(the concrete-only program reproduces the combined program's rates up to step "
            f"{args.steps} within {gap:.1e}: same seeds, same keys)"
        )
    print()
    labels = {
        "combined": "both methods, one program (the results)",
        "concrete": "concrete rows only (one learned run per size and seed)",
        "fixed": f"fixed-rate grid only ({len(args.rates)} rates per size and seed)",
    }
    tl = [
        [
            labels[t["program"]],
            t["models"],
            t["strategy"],
            t["steps_run"],
            f"{t['first_chunk_s']:.1f}",
            f"{t['per_chunk_s']:.2f}",
            f"{t['projected_s']:.0f}",
        ]
        for t in timing
    ]
    print(
        markdown_table(
            [
                "program",
                "models",
                "strategy",
                "steps run",
                "first chunk s (probe + compile)",
                f"s per later chunk of {args.chunk} steps",
                f"s for {args.steps} steps (projected from the steps run)",
            ],
            tl,
        )
    )
    by = {t["program"]: t for t in timing}
    if "concrete" in by and "fixed" in by:
        ratio = by["fixed"]["projected_s"] / by["concrete"]["projected_s"]
        steady = by["fixed"]["per_chunk_s"] / by["concrete"]["per_chunk_s"]
        print(
            f"\nthe fixed-rate grid ({len(args.rates)} rates) costs {ratio:.1f}x the wall time "
            f"of the learned runs for the same sizes and seeds ({steady:.1f}x per chunk once "
            f"compiled); timing grids ran {args.timing_steps} steps, projected to {args.steps}"
        )
    print(f"\nwrote {args.out}/ in {elapsed:.0f} s")


def plot(args, rows, rate_rows, summary):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {n: f"C{i}" for i, n in enumerate(args.sizes)}
    rates = np.array(args.rates)
    for s in summary:
        n, c = s["n"], colors[s["n"]]
        v = 100 * np.array([[r["val_err"] for r in s["fixed"][k]] for k in s["seeds"]])
        t = 100 * np.array([[r["test_err"] for r in s["fixed"][k]] for k in s["seeds"]])
        axes[0].errorbar(
            rates,
            t.mean(0),
            yerr=t.std(0, ddof=1) if len(t) > 1 else None,
            color=c,
            marker="o",
            capsize=3,
            label=f"N={n}: fixed rate (test)",
        )
        axes[0].plot(rates, v.mean(0), color=c, ls=":", lw=1)
        learned_t = 100 * np.array([s["learned"][k]["test_err"] for k in s["seeds"]])
        learned_r = np.array(
            [[s["learned"][k][f"rate{j + 1}"] for j in range(len(WIDTHS))] for k in s["seeds"]]
        )
        axes[0].errorbar(
            learned_r.mean(),
            learned_t.mean(),
            xerr=learned_r.mean(1).std(ddof=1) if len(learned_r) > 1 else None,
            color=c,
            marker="*",
            ms=14,
            mec="k",
            ls="none",
            label=f"N={n}: concrete (mean rate)",
        )
    axes[0].set(
        xlabel="dropout rate", ylabel="error (%)", title="Test error vs rate (dotted: validation)"
    )
    run = "concrete alone" if any(r["run"] != "combined" for r in rate_rows) else "combined"
    curves = [r for r in rate_rows if r["run"] == run]
    for n in args.sizes:
        for j, ls in zip(range(len(WIDTHS)), ("-", "--"), strict=False):
            steps = sorted({r["step"] for r in curves})
            ys = np.array(
                [
                    [r[f"rate{j + 1}"] for r in curves if r["size"] == n and r["step"] == st]
                    for st in steps
                ]
            )
            axes[1].plot(steps, ys.mean(1), color=colors[n], ls=ls, label=f"N={n}, layer {j + 1}")
            axes[1].fill_between(steps, ys.min(1), ys.max(1), color=colors[n], alpha=0.15, lw=0)
    axes[1].axvline(args.steps, color="k", lw=1, ls=":")
    axes[1].set(
        xlabel=f"step (dotted: the {args.steps} steps of the comparison)",
        ylabel="learned rate",
        title="Concrete dropout's rates (band: min-max over seeds)",
    )
    for i, s in enumerate(summary):
        d = s["diff"]
        axes[2].errorbar(
            [100 * d.mean],
            [i],
            xerr=[[100 * (d.mean - d.low)], [100 * (d.high - d.mean)]],
            color=colors[s["n"]],
            marker="o",
            capsize=4,
        )
    axes[2].axvline(0, color="k", lw=1)
    axes[2].set_yticks(range(len(summary)), [f"N={s['n']}" for s in summary])
    axes[2].set(
        xlabel="test error, learned - grid-chosen (pp), 95% CI",
        title=f"Paired over {args.seeds} seeds",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(
        f"Learned (concrete) vs grid-selected dropout rate, MLP 40-128-128-10 on MNIST-1D, "
        f"{args.steps} steps, length-scale {args.length_scale:g}"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=110)


if __name__ == "__main__":
    main()
