"""How do I choose the dropout rate? Concrete dropout learns it; a grid selects it.

An MLP 40-128-128-10 (the sweep's) is trained on MNIST-1D at three training-set sizes
with dropout after each hidden layer, either

* at a fixed rate from a grid (0, 0.1, ..., 0.6), the rate chosen per seed by the
  validation error (what a practitioner does with a grid), or
* with concrete dropout (``jaxreg.concrete_dropout``, Gal, Hron & Kendall 2017)
  learning each hidden layer's rate: ``rate = sigmoid(logit)``, the logits inside
  ``params``, trained by Adam (step size ``--rate-lrs``, a grid axis) with the weights
  against ``jaxreg.concrete_dropout_penalty`` (N = the model's training-set size,
  length-scale ``--length-scale``).

Every method x size x seed is one ``jaxreg.grid`` program: a ``method`` row block
(``concrete`` flag, fixed ``rate``, logit step size ``rate_lr``) times a ``size`` row
block (``subset`` index and N) times seeds; one loss handles both methods with
``jnp.where`` on the traced flag, and the training sets are the grid's per-model
``subsets`` (nested prefixes of one training set). Models sharing a seed share their
initialisation, minibatches and dropout keys, so learned-vs-grid differences are paired.

Then, each with its own loss: the concrete rows alone at one step size and the
fixed-rate grid alone, timed (``--timing``), and the concrete rows alone trained on to
``--long-steps`` (where the learned rates go with a longer budget).

Writes to ``--out``: ``learned_dropout_rate.csv`` (one row per model),
``learned_dropout_rate_rates.csv`` (the learned rates after every chunk),
``learned_dropout_rate_long.csv``, ``learned_dropout_rate_timing.csv`` and
``learned_dropout_rate.png``; ``--replot`` redoes the table and figure from them.

Run: python examples/learned_dropout_rate.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
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
from _stats import holm, mean_sd, paired

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
        "--rate-lrs", type=float_list(low=0.0), default=None, help="Adam step sizes of the logits"
    )
    parser.add_argument("--temperature", type=positive_float, default=0.1)
    parser.add_argument(
        "--timing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the two methods alone (default: on, off with --smoke)",
    )
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
    args.timing = not smoke if args.timing is None else args.timing
    args.rate_lrs = args.rate_lrs or [1e-3, 1e-2]
    args.steps = args.steps or (40 if smoke else 2000)
    args.chunk = 20 if smoke else 100
    args.timing_steps = min(args.steps, args.chunk * (2 if smoke else 6))
    args.long_steps = max(args.steps, args.long_steps or (60 if smoke else 6000))
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

    def optimizer(hp):  # the logits' step size is a (traced) hyperparameter
        return optax.multi_transform(
            {"net": optax.adam(LR), "rate": optax.adam(hp["rate_lr"])},
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


def build_grid(args, methods=("fixed", "concrete"), rate_lrs=None):
    rows = []
    if "fixed" in methods:
        rows += [{"concrete": False, "rate": r, "rate_lr": 0.0} for r in args.rates]
    if "concrete" in methods:
        lrs = args.rate_lrs if rate_lrs is None else rate_lrs
        rows += [{"concrete": True, "rate": INIT_RATE, "rate_lr": lr} for lr in lrs]
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
    part = np.repeat(np.eye(2, dtype=np.float32), [len(d.y_val), len(d.y_test)], axis=0)
    held_out = {
        "x": np.concatenate([d.x_val, d.x_test]),
        "part": part,
        "y": np.concatenate([d.y_val, d.y_test]),
    }

    grid = build_grid(args)
    trainer = make_trainer(args)
    rate_rows = []
    state, times = timed_run(
        trainer, grid, data, subsets, args.steps, rate_recorder(args, grid, "combined", rate_rows)
    )
    plan = trainer.plan(state, data, subsets=subsets)
    val_err, test_err, train_err, rates = measure(trainer, state, held_out, data, subsets)
    chunks = args.steps // args.chunk
    timing = [timing_row("combined", grid.size, plan.strategy, times, chunks, args.steps)]
    long_rows = []
    if args.timing:
        # The learned runs alone (one step size: one learned run per size and seed) and
        # the fixed-rate grid alone, each with its own loss: timing_steps steps each.
        for methods, lrs in ((("concrete",), args.rate_lrs[:1]), (("fixed",), None)):
            g, t = build_grid(args, methods, lrs), make_trainer(args, methods)
            st, times = timed_run(t, g, data, subsets, args.timing_steps)
            strategy = t.plan(st, data, subsets=subsets).strategy
            timing.append(
                timing_row(methods[0], g.size, strategy, times, chunks, args.timing_steps)
            )
    if args.long_steps > args.steps:
        # The concrete rows alone, trained on to --long-steps: where their rates go.
        g, t = build_grid(args, ("concrete",)), make_trainer(args, ("concrete",))
        record = rate_recorder(args, g, "concrete alone", rate_rows)
        st, _ = timed_run(t, g, data, subsets, args.long_steps, record)
        v, e, _, r = measure(t, st, held_out)
        long_rows = [
            {
                "n": int(h["n"]),
                "seed": h["seed"],
                "rate_lr": float(f"{h['rate_lr']:.6g}"),
                "steps": args.long_steps,
                "val_err": round(float(v[i]), 5),
                "test_err": round(float(e[i]), 5),
                **{f"rate{j + 1}": round(float(r[i, j]), 4) for j in range(len(WIDTHS))},
            }
            for i, h in enumerate(g.rows())
        ]

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
        r["rate_lr"] = float(f"{r['rate_lr']:.6g}")
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), rows)
    write_csv(os.path.join(args.out, f"{NAME}_rates.csv"), rate_rows)
    write_csv(os.path.join(args.out, f"{NAME}_timing.csv"), timing)
    if long_rows:
        write_csv(os.path.join(args.out, f"{NAME}_long.csv"), long_rows)
    report(args, rows, rate_rows, timing, long_rows, time.perf_counter() - start)


def measure(trainer, state, held_out, data=None, subsets=None):
    """Validation and test error (no dropout), the training error (with ``data``) and
    the learned rates, per model. ``held_out``: validation and test examples in one
    data set whose ``part`` column (one-hot) tells them apart (one compiled program)."""
    share = held_out["part"].mean(0)

    def split_error(params, hp, batch):  # per example: (error if val, error if test)
        return error(params, hp, batch)[:, None] * batch["part"]

    val_err, test_err = (trainer.evaluate(state, held_out, {"e": split_error})["e"] / share).T
    train_err = None
    if data is not None:
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
                    "rate_lr": float(f"{grid.hparams['rate_lr'][i]:.6g}"),
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
    rows, rate_rows, timing = (
        load(f"{NAME}.csv"),
        load(f"{NAME}_rates.csv"),
        load(f"{NAME}_timing.csv"),
    )
    has_long = os.path.exists(os.path.join(args.out, f"{NAME}_long.csv"))
    long_rows = load(f"{NAME}_long.csv") if has_long else []
    for r in rows:
        r["rate"], r["n"] = float(f"{r['rate']:.6g}"), int(r["n"])
    args.sizes = sorted({r["n"] for r in rows})
    args.rates = sorted({r["rate"] for r in rows if r["method"] == "fixed"})
    args.seeds = len({r["seed"] for r in rows})
    args.rate_lrs = sorted({r["rate_lr"] for r in rows if r["method"] == "concrete"})
    args.steps = max(r["step"] for r in rate_rows if r["run"] == "combined")
    args.chunk = min(r["step"] for r in rate_rows)
    args.timing_steps = max([r["steps_run"] for r in timing if r["program"] == "fixed"] or [0])
    args.long_steps = max([r["steps"] for r in long_rows] or [args.steps])
    report(args, rows, rate_rows, timing, long_rows, time.perf_counter() - start)


# --- analysis ----------------------------------------------------------------------


def summarize(args, rows):
    """Per size: the grid's per-seed choice and, per logit step size, the learned runs
    and their paired test-error differences."""
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
        # Validation selection per seed (ties: the smaller rate), as with one grid run.
        chosen = {s: min(fixed[s], key=lambda r: (r["val_err"], r["rate"])) for s in seeds}
        mean_val = {
            rate: np.mean([r["val_err"] for s in seeds for r in fixed[s] if r["rate"] == rate])
            for rate in args.rates
        }
        chosen_test = [chosen[s]["test_err"] for s in seeds]
        zero = [next((r for r in fixed[s] if r["rate"] == 0.0), None) for s in seeds]
        entry = {
            "n": n,
            "seeds": seeds,
            "fixed": fixed,
            "chosen": chosen,
            "learned": {},
            "diff": {},
            "diff0": {},
            "mean_val_rate": min(mean_val, key=lambda k: (mean_val[k], k)),
        }
        for lr in args.rate_lrs:
            learned = [
                next(
                    r
                    for r in at
                    if r["method"] == "concrete" and r["seed"] == s and r["rate_lr"] == lr
                )
                for s in seeds
            ]
            test = [r["test_err"] for r in learned]
            entry["learned"][lr] = learned
            entry["diff"][lr] = paired(test, chosen_test)
            entry["diff0"][lr] = (
                None if None in zero else paired(test, [r["test_err"] for r in zero])
            )
        out.append(entry)
    return out


def report(args, rows, rate_rows, timing, long_rows, elapsed):
    summary = summarize(args, rows)
    plot(args, rate_rows, summary)
    layers = range(len(WIDTHS))
    pvalues = holm([s["diff"][lr].p for s in summary for lr in args.rate_lrs])
    lines, long_lines = [], []
    for s in summary:
        seeds = s["seeds"]
        grid_rate = mean_sd([s["chosen"][k]["rate"] for k in seeds], ".2f")
        for lr in args.rate_lrs:
            learned, d = s["learned"][lr], s["diff"][lr]
            lines.append(
                [
                    s["n"],
                    f"{lr:g}",
                    " / ".join(
                        mean_sd([r[f"rate{j + 1}"] for r in learned], ".2f") for j in layers
                    ),
                    grid_rate,
                    f"{s['mean_val_rate']:g}",
                    mean_sd([100 * r["test_err"] for r in learned], ".1f"),
                    mean_sd([100 * s["chosen"][k]["test_err"] for k in seeds], ".1f"),
                    d.format(100, "+.2f"),
                    f"{pvalues[len(lines)]:.2g}",
                    d.verdict("learned better", "grid better"),
                    "" if s["diff0"][lr] is None else s["diff0"][lr].format(100, "+.2f"),
                ]
            )
            at = [r for r in long_rows if r["n"] == s["n"] and r["rate_lr"] == lr]
            if at:
                long_lines.append(
                    [
                        s["n"],
                        f"{lr:g}",
                        " / ".join(mean_sd([r[f"rate{j + 1}"] for r in at], ".3f") for j in layers),
                        " / ".join(
                            mean_sd([r[f"rate{j + 1}"] for r in learned], ".3f") for j in layers
                        ),
                        grid_rate,
                        mean_sd([100 * r["test_err"] for r in at], ".1f"),
                    ]
                )
    print(
        f"MNIST-1D, MLP 40-{'-'.join(map(str, WIDTHS))}-10, Adam {LR:g}, batch {BATCH}, "
        f"{args.steps} steps, {args.seeds} seeds; concrete dropout: temperature "
        f"{args.temperature:g}, length-scale {args.length_scale:g}, rates start at {INIT_RATE}, "
        f"logits trained by Adam at the step size in the table; grid rates "
        f"{', '.join(f'{r:g}' for r in args.rates)}, chosen per seed on the validation split\n"
    )
    print(
        markdown_table(
            [
                "train size N",
                "logit step size",
                "learned rates (layer 1 / layer 2)",
                "grid rate, chosen per seed",
                "grid rate, best mean val",
                "test err % learned",
                "test err % grid-chosen",
                "learned - grid (pp, 95% CI)",
                "Holm p",
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
                    "logit step size",
                    f"learned rates after {args.long_steps} steps",
                    f"after {args.steps} steps",
                    "grid rate, chosen per seed",
                    f"test err % after {args.long_steps} steps",
                ],
                long_lines,
            )
        )
        key = lambda r: (r["size"], r["seed"], r["rate_lr"], r["step"])  # noqa: E731
        alone = {key(r): r for r in rate_rows if r["run"] != "combined"}
        gap = max(
            abs(r[f"rate{j + 1}"] - alone[key(r)][f"rate{j + 1}"])
            for r in rate_rows
            if r["run"] == "combined"
            for j in layers
        )
        print(
            f"\n(the concrete-only program reproduces the combined program's rates up to step "
            f"{args.steps} within {gap:.1e}: same seeds, same keys, another program)"
        )
    print()
    labels = {
        "combined": "both methods, one program (the results)",
        "concrete": f"concrete rows only, logit step {args.rate_lrs[0]:g} (one learned run "
        "per size and seed)",
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


def plot(args, rate_rows, summary):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {n: f"C{i}" for i, n in enumerate(args.sizes)}
    markers = dict(zip(args.rate_lrs, ("*", "P", "X", "D"), strict=False))
    rates = np.array(args.rates)
    ax = axes[0, 0]
    for s in summary:
        n, c = s["n"], colors[s["n"]]
        v = 100 * np.array([[r["val_err"] for r in s["fixed"][k]] for k in s["seeds"]])
        t = 100 * np.array([[r["test_err"] for r in s["fixed"][k]] for k in s["seeds"]])
        sd = t.std(0, ddof=1) if len(t) > 1 else None
        ax.errorbar(
            rates, t.mean(0), yerr=sd, color=c, marker="o", ms=4, capsize=3, label=f"N = {n}"
        )
        ax.plot(rates, v.mean(0), color=c, ls=":", lw=1)
        for lr, learned in s["learned"].items():
            r = np.array([[x[f"rate{j + 1}"] for x in learned] for j in range(len(WIDTHS))])
            y = 100 * np.mean([x["test_err"] for x in learned])
            ax.plot(r.mean(1)[[0, -1]], [y, y], color=c, lw=1)  # layer 1 .. last layer
            ax.plot(r.mean(), y, color=c, marker=markers[lr], ms=13, mec="k", ls="none")
    for lr, m in markers.items():
        ax.plot(
            [],
            [],
            color="w",
            marker=m,
            mec="k",
            ms=11,
            ls="none",
            label=f"concrete, logit step {lr:g}",
        )
    ax.set(
        xlabel="dropout rate (concrete: mean of the layers; bar: layer 1 to layer 2)",
        ylabel="test error (%), mean ± sd",
        title="Fixed rates (dotted: validation) and learned rates",
    )
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.set_ylim(top=ax.get_ylim()[1] + 6)
    ax = axes[0, 1]
    labels = []
    for s in summary:
        for lr in args.rate_lrs:
            d, i = s["diff"][lr], len(labels)
            ax.errorbar(
                [100 * d.mean],
                [i],
                xerr=[[100 * (d.mean - d.low)], [100 * (d.high - d.mean)]],
                color=colors[s["n"]],
                marker=markers[lr],
                ms=10,
                mec="k",
                capsize=4,
            )
            labels.append(f"N = {s['n']}, step {lr:g}")
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(
        xlabel="test error, learned - grid-chosen (points), 95% CI",
        title=f"Paired over {args.seeds} seeds (right of 0: the grid is better)",
    )
    run = "concrete alone" if any(r["run"] != "combined" for r in rate_rows) else "combined"
    curves = [r for r in rate_rows if r["run"] == run]
    for ax, lr in zip(axes[1], args.rate_lrs, strict=False):
        for n in args.sizes:
            for j, ls in zip(range(len(WIDTHS)), ("-", "--"), strict=False):
                at = [r for r in curves if r["size"] == n and r["rate_lr"] == lr]
                steps = sorted({r["step"] for r in at})
                ys = np.array([[r[f"rate{j + 1}"] for r in at if r["step"] == st] for st in steps])
                ax.plot(steps, ys.mean(1), color=colors[n], ls=ls, label=f"N = {n}, layer {j + 1}")
                ax.fill_between(steps, ys.min(1), ys.max(1), color=colors[n], alpha=0.15, lw=0)
        ax.axvline(args.steps, color="k", lw=1, ls=":")
        ax.set(
            xlabel=f"step (dotted: the {args.steps} steps of the comparison)",
            ylabel="learned rate",
            title=f"Learned rates, logit step size {lr:g} (band: min-max over seeds)",
        )
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"How do I choose the dropout rate? Concrete dropout vs a validation-selected grid, "
        f"MLP 40-128-128-10 on MNIST-1D, {args.steps} steps, length-scale {args.length_scale:g}"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=110)


if __name__ == "__main__":
    main()
