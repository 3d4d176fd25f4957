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
    args = parser.parse_args()
    smoke = args.smoke
    if args.rates is None:
        args.rates = [0.0, 0.3] if smoke else [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    args.sizes = [int(s) for s in (args.sizes or ([150, 300, 600] if smoke else [300, 1000, 3000]))]
    args.seeds = args.seeds or (2 if smoke else 5)
    args.steps = args.steps or (40 if smoke else 2000)
    args.chunk = 20 if smoke else 100
    args.timing_steps = min(args.steps, args.chunk * (2 if smoke else 6))
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
    start = time.perf_counter()
    d = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    if max(args.sizes) > len(d.x_train):
        raise SystemExit(f"--sizes: at most {len(d.x_train)} training examples, got {args.sizes}")
    data = {"x": d.x_train, "y": d.y_train}
    subsets = [np.arange(n) for n in args.sizes]  # nested prefixes of one training set
    val, test = {"x": d.x_val, "y": d.y_val}, {"x": d.x_test, "y": d.y_test}

    grid = build_grid(args)
    trainer = make_trainer(args)
    curves = []

    def record(state, c):
        logits = state.to_host(state.params["logit"])
        curves.append(((c + 1) * args.chunk, np.asarray(jax.nn.sigmoid(logits))))

    state, times = timed_run(trainer, grid, data, subsets, args.steps, record)
    plan = trainer.plan(state, data, subsets=subsets)
    val_err = trainer.evaluate(state, val, {"e": error})["e"]
    test_err = trainer.evaluate(state, test, {"e": error})["e"]
    train_err = trainer.evaluate(state, data, {"e": error}, subsets=subsets)["e"]
    rates = np.asarray(jax.nn.sigmoid(state.to_host(state.params["logit"])))
    chunks = args.steps // args.chunk
    timing = {"combined": (grid.size, plan.strategy, *projected(times, chunks), times[-1])}
    if not args.no_timing:  # each method alone, with its own loss, for timing_steps
        for methods in (("concrete",), ("fixed",)):
            g, t = build_grid(args, methods), make_trainer(args, methods)
            st, times = timed_run(t, g, data, subsets, args.timing_steps)
            strategy = t.plan(st, data, subsets=subsets).strategy
            timing[methods[0]] = (g.size, strategy, *projected(times, chunks), None)

    rows = grid.rows(
        val_err=np.round(val_err, 5),
        test_err=np.round(test_err, 5),
        train_err=np.round(train_err, 5),
        **{f"rate{i + 1}": np.round(rates[:, i], 4) for i in range(len(WIDTHS))},
    )
    for r in rows:
        r["method"] = "concrete" if r.pop("concrete") else "fixed"
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), rows)
    concrete_idx = np.flatnonzero(grid.hparams["concrete"])
    rate_rows = [
        {
            "step": step,
            "size": int(grid.hparams["n"][i]),
            "seed": int(grid.hparams["seed"][i]),
            **{f"rate{j + 1}": round(float(r[i, j]), 5) for j in range(len(WIDTHS))},
        }
        for step, r in curves
        for i in concrete_idx
    ]
    write_csv(os.path.join(args.out, "rates.csv"), rate_rows)
    report(args, rows, rate_rows, timing, time.perf_counter() - start)


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


def report(args, rows, rate_rows, timing, elapsed):
    summary = summarize(args, rows)
    plot(args, rows, rate_rows, summary)
    lines = []
    for s in summary:
        seeds = s["seeds"]
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
    print()
    tl = []
    labels = {
        "combined": "both methods, one program (the results)",
        "concrete": "concrete rows only (one learned run per size and seed)",
        "fixed": f"fixed-rate grid only ({len(args.rates)} rates per size and seed)",
    }
    for k, label in labels.items():
        if k in timing:
            m, strategy, first, per, total, measured = timing[k]
            tl.append(
                [
                    label,
                    m,
                    strategy,
                    f"{first:.1f}",
                    f"{per:.2f}",
                    f"{total:.0f}",
                    "" if measured is None else f"{measured:.0f}",
                ]
            )
    print(
        markdown_table(
            [
                "program",
                "models",
                "strategy",
                "first chunk s (probe + compile)",
                f"s per later chunk of {args.chunk} steps",
                f"projected s for {args.steps} steps",
                "measured s",
            ],
            tl,
        )
    )
    if "concrete" in timing and "fixed" in timing:
        ratio = timing["fixed"][4] / timing["concrete"][4]
        steady = timing["fixed"][3] / timing["concrete"][3]
        print(
            f"\nthe fixed-rate grid ({len(args.rates)} rates) costs {ratio:.1f}x the wall time "
            f"of the learned runs for the same sizes and seeds ({steady:.1f}x per chunk once "
            f"compiled); timing grids run {args.timing_steps} steps, projected to {args.steps}"
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
    for n in args.sizes:
        for j, ls in zip(range(len(WIDTHS)), ("-", "--"), strict=False):
            steps = sorted({r["step"] for r in rate_rows})
            ys = np.array(
                [
                    [r[f"rate{j + 1}"] for r in rate_rows if r["size"] == n and r["step"] == st]
                    for st in steps
                ]
            )
            axes[1].plot(steps, ys.mean(1), color=colors[n], ls=ls, label=f"N={n}, layer {j + 1}")
            axes[1].fill_between(steps, ys.min(1), ys.max(1), color=colors[n], alpha=0.15, lw=0)
    axes[1].set(
        xlabel="step",
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
