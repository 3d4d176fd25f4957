"""What does choosing the dropout rate on a validation set cost against the test oracle?

Claim (a tutorial's answer on dropout): the rate "should be chosen through
experimentation on the validation set to find the best value". How much test error
does that give up? The sweep's MLP 40-128-128-10 (Adam 1e-3, batch 128) is trained on
MNIST-1D for every training-set size x dropout rate x seed, all in one
``jaxreg.grid`` program (training-set sizes are per-model subsets of one pool; each
seed draws its own training subset and owns a disjoint validation pool). For each
validation-set size, random validation sets drawn from the seed's pool choose a rate
(argmin of validation error; ties split evenly); the *regret* is the test error at
the chosen rate minus the lowest test error over the rates of that seed and size.

The test set here only MEASURES the regret of validation selection against a
test-set oracle: no setting reported as "ours" is chosen on it.

Writes ``validation_rate_gap.csv`` (regret per size, validation size and seed),
``validation_rate_gap_models.csv`` (test and validation-pool error per model) and
``validation_rate_gap.png`` to ``--out``.

Run: python examples/validation_rate_gap.py [--smoke] [--out DIR]
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
    positive_int,
    save_figure,
    write_csv,
)
from _stats import mean_sd, paired

import jaxreg.grid as jg

NAME = "validation_rate_gap"
FULL = {
    "rates": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    "sizes": [500, 2000, 8000],
    "val_sizes": [100, 300, 1000, 3000],
    "seeds": 5,
    "steps": 1500,
    "chunk": 100,
    "hidden": 128,
    "batch": 128,
    "train_pool": 9000,
    "draws": 200,
}
SMOKE = {
    "rates": [0.0, 0.3, 0.6],
    "sizes": [100, 200],
    "val_sizes": [50, 100],
    "seeds": 2,
    "steps": 40,
    "chunk": 20,
    "hidden": 32,
    "batch": 32,
    "train_pool": 300,
    "draws": 20,
}
LR = 1e-3
FIXED = (0.0, 0.2, 0.5)  # fixed rates for reference: none, and the seed's "0.2 to 0.5"


def int_list(text):
    """An argparse type: comma-separated integers >= 1."""
    return [positive_int(t) for t in text.split(",") if t.strip()] or positive_int("")


def parse_args():
    parser = example_parser(__doc__, NAME)
    rates = float_list(low=0.0, high=1.0, high_open=True)
    parser.add_argument("--rates", type=rates, default=None, help="dropout rates")
    parser.add_argument("--sizes", type=int_list, default=None, help="training-set sizes")
    parser.add_argument("--val-sizes", type=int_list, default=None, help="validation sizes")
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds 0..N-1")
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps")
    args = parser.parse_args()
    for k, v in (SMOKE if args.smoke else FULL).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.rates, args.sizes, args.val_sizes = (
        sorted(args.rates),
        sorted(args.sizes),
        sorted(args.val_sizes),
    )
    if args.steps % args.chunk:
        fail(f"{NAME}: error: --steps {args.steps} must be a multiple of {args.chunk}")
    if args.sizes[-1] > args.train_pool:
        fail(f"{NAME}: error: --sizes must be <= the training pool of {args.train_pool}")
    if args.sizes[0] < args.batch:
        fail(f"{NAME}: error: --sizes must be >= the batch size {args.batch}")
    if len(args.rates) < 2:
        fail(f"{NAME}: error: --rates needs at least two rates to choose from")
    return args


def loss_fn(params, hp, batch, key):
    return cross_entropy(mlp(params, batch["x"], key=key, rates=hp["rate"]), batch["y"])


def error_fn(params, hp, batch):  # per-example 0/1 errors, no dropout
    return (jnp.argmax(mlp(params, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


@jax.jit
def pool_errors(params, pools_x, pools_y, pool_index):
    """Per model: 0/1 errors on its seed's whole validation pool, ``(models, pool)``.

    The grid's ``evaluate`` averages per-example values; selection on random
    validation subsets needs the per-example errors, so they are computed here from
    the trained parameters (one model at a time, ``lax.map``).
    """

    def one(args):
        p, i = args
        logits = mlp(p, pools_x[i])
        return (jnp.argmax(logits, -1) != pools_y[i]).astype(jnp.float32)

    return jax.lax.map(one, (params, pool_index))


def run(args):
    max_val = args.val_sizes[-1]
    need = args.train_pool + args.seeds * max_val  # the training part of MNIST-1D
    data = load_data(num_samples=-(-need * 5 // 4) + 20, val_size=args.seeds * max_val)
    if len(data.x_train) < args.train_pool:
        fail(f"{NAME}: error: the training pool has only {len(data.x_train)} examples")
    train = {"x": data.x_train[: args.train_pool], "y": data.y_train[: args.train_pool]}
    test = {"x": data.x_test, "y": data.y_test}
    args.test_size = len(data.x_test)
    pools_x = data.x_val.reshape(args.seeds, max_val, -1)  # seed s owns pool s
    pools_y = data.y_val.reshape(args.seeds, max_val)

    rows, subsets = [], []
    for n in args.sizes:
        for s in range(args.seeds):
            rng = np.random.default_rng([s, n])
            subsets.append(np.sort(rng.choice(args.train_pool, n, replace=False)))
            rows.append({"train_size": n, "seed": s, "subset": len(subsets) - 1})
    grid = jg.product(jg.rows(rows, name="data"), rate=args.rates)
    sizes = (data.num_features, args.hidden, args.hidden, data.num_classes)
    trainer = jg.Trainer(
        init=lambda key, hp: init_mlp(key, sizes),
        loss=loss_fn,
        optimizer=lambda hp: optax.adam(LR),
        batch_size=args.batch,
        chunk_steps=args.chunk,
        strategy="vmap",  # small dense models: vmap (no "auto" probe to compile)
    )
    state = trainer.init_state(grid, train)
    state = trainer.train(state, train, steps=args.steps, subsets=subsets)
    test_error = trainer.evaluate(state, test, {"error": error_fn})["error"]
    params = state.to_host(state.params)
    seeds = state.to_host(state.hparams["seed"])
    val = np.asarray(pool_errors(params, pools_x, pools_y, seeds))
    shape = (len(args.sizes), args.seeds, len(args.rates))
    return grid, test_error.reshape(shape), val.reshape(*shape, max_val)


def select(args, test, val):
    """Regret per (size, seed, validation size), averaged over random validation sets.

    ``test``: (sizes, seeds, rates) test error; ``val``: (sizes, seeds, rates, pool)
    per-example validation errors. Also returns the mean chosen rate.
    """
    rates = np.asarray(args.rates)
    best = test.min(-1)
    regret = np.zeros((len(args.sizes), args.seeds, len(args.val_sizes)))
    chosen = np.zeros_like(regret)
    pool = val.shape[-1]
    for s in range(args.seeds):
        rng = np.random.default_rng(1000 + s)
        for j, v in enumerate(args.val_sizes):
            draws = 1 if v == pool else args.draws
            idx = np.stack([rng.choice(pool, v, replace=False) for _ in range(draws)])
            # errors of every rate on every draw: (sizes, rates, draws)
            err = val[:, s][..., idx].mean(-1)
            tie = err == err.min(1, keepdims=True)  # argmin, ties split evenly
            weight = tie / tie.sum(1, keepdims=True)
            regret[:, s, j] = np.einsum("krd,kr->k", weight, test[:, s] - best[:, s, None]) / draws
            chosen[:, s, j] = np.einsum("krd,r->k", weight, rates) / draws
    return regret, chosen


def fixed_regret(test, i):
    return test[..., i] - test.min(-1)  # (sizes, seeds)


def report(args, grid, test, val, elapsed):
    regret, chosen = select(args, test, val)
    rates = np.asarray(args.rates)
    oracle = rates[test.argmin(-1)]  # (sizes, seeds)
    out, table = [], []
    zeros = np.zeros(args.seeds)
    for a, n in enumerate(args.sizes):
        for j, v in enumerate(args.val_sizes):
            d = paired(100 * regret[a, :, j], zeros)
            for s in range(args.seeds):
                out.append(
                    {
                        "train_size": n,
                        "val_size": v,
                        "seed": s,
                        "regret": round(float(regret[a, s, j]), 6),
                        "mean_chosen_rate": round(float(chosen[a, s, j]), 4),
                        "oracle_rate": float(oracle[a, s]),
                        "oracle_test_error": round(float(test[a, s].min()), 6),
                    }
                )
            table.append(
                [
                    n,
                    v,
                    f"{d.mean:.2f} [{d.low:.2f}, {d.high:.2f}]",
                    mean_sd(chosen[a, :, j], ".2f"),
                    mean_sd(oracle[a], ".2f"),
                    mean_sd(100 * test[a].min(-1), ".1f"),
                ]
            )
    write_csv(os.path.join(args.out, f"{NAME}.csv"), out)
    model_rows = grid.rows(
        test_error=[round(float(e), 6) for e in test.reshape(-1)],
        val_pool_error=[round(float(e), 6) for e in val.mean(-1).reshape(-1)],
    )
    for r in model_rows:
        r["rate"] = round(r["rate"], 4)
    write_csv(os.path.join(args.out, f"{NAME}_models.csv"), model_rows)

    print(
        f"MNIST-1D, MLP 40-{args.hidden}-{args.hidden}-10, Adam {LR:g}, batch {args.batch}, "
        f"{args.steps} steps (final parameters); rates {', '.join(f'{r:g}' for r in rates)}; "
        f"{args.seeds} seeds, {args.draws} random validation sets per seed and size; "
        f"{args.test_size} test examples; {grid.size} models in one grid, {elapsed:.0f} s\n"
    )
    print(
        markdown_table(
            [
                "train size",
                "val size",
                "regret, test error pp (mean [95% CI])",
                "chosen rate (mean ± sd)",
                "oracle rate",
                "oracle test error %",
            ],
            table,
        )
    )
    fixed_rates = [r for r in FIXED if r in args.rates]
    fixed = [
        [n]
        + [
            paired(100 * fixed_regret(test, args.rates.index(r))[a], zeros).format()
            for r in fixed_rates
        ]
        for a, n in enumerate(args.sizes)
    ]
    print("\nfor reference, the regret of a fixed rate (no search), test error pp [95% CI]:")
    print(markdown_table(["train size"] + [f"rate {r:g}" for r in fixed_rates], fixed))
    plot(args, test, regret, chosen, oracle)
    print(f"\nwrote {args.out}/{NAME}.csv, {NAME}_models.csv, {NAME}.png")


def plot(args, test, regret, chosen, oracle):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    zeros = np.zeros(args.seeds)
    ax = axes[0]
    for a, n in enumerate(args.sizes):
        m = 100 * test[a].mean(0)
        half = [paired(100 * test[a, :, i], zeros) for i in range(len(args.rates))]
        ax.errorbar(
            args.rates,
            m,
            yerr=[m - [h.low for h in half], [h.high for h in half] - m],
            marker="o",
            capsize=3,
            label=f"{n} training examples",
            color=f"C{a}",
        )
    ax.set(
        xlabel="dropout rate",
        ylabel="test error (%)",
        title="Test error by rate (mean, 95% CI over seeds)",
    )
    ax.legend(fontsize=8)

    ax = axes[1]
    for a, n in enumerate(args.sizes):
        d = [paired(100 * regret[a, :, j], zeros) for j in range(len(args.val_sizes))]
        m = np.array([x.mean for x in d])
        ax.errorbar(
            np.asarray(args.val_sizes) * (1 + 0.04 * a),
            m,
            yerr=[m - [x.low for x in d], [x.high for x in d] - m],
            marker="o",
            capsize=3,
            label=f"{n} training examples",
            color=f"C{a}",
        )
    ax.axhline(0, color="gray", lw=1)
    ax.set(
        xscale="log",
        xlabel="validation examples (log)",
        ylabel="regret: test error points above the oracle",
        title="Validation-chosen rate vs test oracle (95% CI)",
    )
    ax.legend(fontsize=8)

    ax = axes[2]
    for a, n in enumerate(args.sizes):
        ax.errorbar(
            np.asarray(args.val_sizes) * (1 + 0.04 * a),
            chosen[a].mean(0),
            yerr=chosen[a].std(0, ddof=1) if args.seeds > 1 else None,
            marker="o",
            capsize=3,
            color=f"C{a}",
            label=f"{n}: chosen (mean ± sd)",
        )
        ax.axhline(oracle[a].mean(), color=f"C{a}", ls="--", lw=1, label=f"{n}: oracle rate (mean)")
    ax.set(
        xscale="log",
        xlabel="validation examples (log)",
        ylabel="dropout rate",
        title="Chosen rate (mean over validation sets and seeds)",
    )
    ax.set_ylim(top=ax.get_ylim()[1] + 0.12)
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    for a in axes[1:]:
        a.set_xticks(args.val_sizes, [str(v) for v in args.val_sizes])
        a.minorticks_off()
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(
        f"Choosing the dropout rate on validation: MLP 40-{args.hidden}-{args.hidden}-10 on "
        f"MNIST-1D, Adam {LR:g}, {args.steps} steps; {args.seeds} seeds"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=110)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    grid, test, val = run(args)
    os.makedirs(args.out, exist_ok=True)
    report(args, grid, test, val, time.perf_counter() - start)


if __name__ == "__main__":
    main()
