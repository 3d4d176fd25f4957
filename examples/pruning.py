"""How much can I prune? Test error against the fraction of hidden units kept.

An MLP 40-128-128-10 (256 hidden units) is trained on MNIST-1D (3000 training
examples, Adam 1e-3) and pruned by whole hidden units, three ways:

* **L0 gates** (Louizos, Welling & Kingma 2018): a hard-concrete gate per hidden unit
  (``jaxreg.hard_concrete_gate``, one draw per example), its ``log_alpha`` in
  ``params``, ``strength * jaxreg.l0_penalty`` added to the loss; at test time the
  deterministic gate ``jaxreg.hard_concrete_gate_inference`` (exactly 0: pruned);
* **proximal group lasso** on units: ``jaxreg.optax.proximal_group_lasso`` chained
  after Adam on the hidden kernels, one group per unit = its incoming weights (a
  kernel column, ``axis=0``); a unit whose column is 0 outputs the constant
  ``relu(bias)``, which folds into the next layer's bias: pruned;
* **magnitude pruning** after training an unregularized network: per layer, keep the
  units with the largest incoming-weight norm (the others' columns and biases set to
  0), evaluated as is and after a short fine-tuning (``--finetune-steps``) with the
  pruned units held at 0.

L0 and group lasso sweep their strength; magnitude pruning is applied to the same
seed's dense network at exactly the per-layer unit counts each L0 / group-lasso model
ended with (paired comparisons at equal sparsity), and on a regular grid of kept
fractions. Everything trains through ``jaxreg.grid``: stage 1 (dense, L0, group lasso)
is one program with ``l0`` / ``gl`` flags and a traced ``strength``; stage 2 (magnitude
pruning, fine-tuning) is a second grid whose ``init`` loads the dense network of the
model's seed and zeroes the pruned units.

Writes ``pruning.csv`` (one row per model of both stages) and ``pruning.png``.

Run: python examples/pruning.py [--smoke] [--out DIR]
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
    positive_int,
    read_csv,
    save_figure,
    write_csv,
)
from _stats import mean_sd, paired

import jaxreg
import jaxreg.grid as jg
import jaxreg.optax

NAME = "pruning"
WIDTHS = (128, 128)
UNITS = sum(WIDTHS)
BATCH = 128
LR = 1e-3  # Adam, weights
GATE_LR = 1e-2  # Adam, log_alpha
GATE_INIT = float(np.log(0.8 / 0.2))  # log_alpha at init: test-time gate 0.86
TOLERANCE = 0.01  # "as good as dense": validation error within 1 point of dense
FRACTIONS = (0.03, 0.06, 0.1, 0.2, 0.3, 0.5, 0.75, 0.9)  # magnitude pruning grid


def parse_args():
    parser = example_parser(__doc__, NAME)
    strengths = float_list(low=0.0)
    parser.add_argument("--l0", type=strengths, default=None, help="L0 strengths (per gate)")
    parser.add_argument("--gl", type=strengths, default=None, help="group-lasso strengths")
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--finetune-steps", type=positive_int, default=None)
    parser.add_argument("--strategy", choices=("auto", "vmap", "map"), default=None)
    parser.add_argument("--replot", action="store_true", help="table and plot from the CSV")
    args = parser.parse_args()
    smoke = args.smoke
    args.l0 = args.l0 or ([1e-3, 1e-2] if smoke else [4e-3, 6e-3, 8e-3, 1e-2, 1.5e-2, 2.5e-2])
    args.gl = args.gl or ([0.3, 3.0] if smoke else [1.25, 1.5, 2.0, 2.5, 3.0, 4.0])
    args.seeds = args.seeds or (2 if smoke else 5)
    args.chunk = 20 if smoke else 100
    args.steps = -(-(args.steps or (40 if smoke else 2000)) // args.chunk) * args.chunk
    ft = args.finetune_steps or (20 if smoke else 500)
    args.finetune_steps = -(-ft // args.chunk) * args.chunk
    args.strategy = args.strategy or ("vmap" if smoke else "auto")
    return args


# --- the model -------------------------------------------------------------------


def init(key, hp):
    return {
        "mlp": init_mlp(key, (40, *WIDTHS, 10)),
        "log_alpha": [jnp.full(w, GATE_INIT, jnp.float32) for w in WIDTHS],
    }


def forward(params, hp, x, key=None):
    """Logits. L0 models multiply each hidden unit by its gate (sampled per example
    with ``key``, the test-time gate without); the other models use gate 1."""
    layers = params["mlp"]
    keys = jax.random.split(key, len(WIDTHS)) if key is not None else [None] * len(WIDTHS)
    for layer, log_alpha, k in zip(layers[:-1], params["log_alpha"], keys, strict=True):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        if k is None:
            gate = jaxreg.hard_concrete_gate_inference(log_alpha)
        else:
            gate = jaxreg.hard_concrete_gate(k, log_alpha, shape=x.shape)
        x = x * jnp.where(hp["l0"], gate, 1.0)
    return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def loss(params, hp, batch, key):
    logits = forward(params, hp, batch["x"], key)
    data = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    l0 = jaxreg.l0_penalty(params["log_alpha"], strength=hp["strength"])
    return data + jnp.where(hp["l0"], l0, 0.0)


def hidden_kernels(params):
    """True for the hidden layers' kernels (the group-lasso leaves)."""
    mask = jax.tree.map(lambda _: False, params)
    for i in range(len(WIDTHS)):
        mask["mlp"][i]["kernel"] = True
    return mask


def optimizer(hp):
    adam = optax.multi_transform(
        {"net": optax.adam(LR), "gates": optax.adam(GATE_LR)},
        lambda p: {
            "mlp": jax.tree.map(lambda _: "net", p["mlp"]),
            "log_alpha": ["gates"] * len(WIDTHS),
        },
    )
    gl = jnp.where(hp["gl"], hp["strength"], 0.0)
    prox = jaxreg.optax.proximal_group_lasso(LR, strength=gl, axis=0, where=hidden_kernels)
    return optax.chain(adam, prox)


def error(params, hp, batch):
    return (jnp.argmax(forward(params, hp, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


def trainer_for(args, init_fn):
    return jg.Trainer(
        init=init_fn,
        loss=loss,
        optimizer=optimizer,
        batch_size=BATCH,
        chunk_steps=args.chunk,
        strategy=args.strategy,
    )


# --- stage 2: magnitude pruning of the dense networks ------------------------------


def magnitude_init(dense):
    """``init`` that loads the dense network of the model's seed and zeroes all but the
    ``keep<i>`` units of largest incoming-weight norm in hidden layer ``i``."""

    def init_fn(key, hp):
        params = jax.tree.map(lambda a: jnp.asarray(a)[hp["source"]], dense)
        for i in range(len(WIDTHS)):
            layer = params["mlp"][i]
            norms = jnp.linalg.norm(layer["kernel"], axis=0)
            rank = jnp.argsort(jnp.argsort(-norms))
            keep = (rank < hp[f"keep{i + 1}"]).astype(norms.dtype)
            params["mlp"][i] = {"kernel": layer["kernel"] * keep, "bias": layer["bias"] * keep}
        return params

    return init_fn


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.replot:  # --steps / --finetune-steps only label the output
        text = ("method",)
        rows = [
            {
                k: v if k in text else float(v) if "." in v or "e" in v else int(v)
                for k, v in r.items()
            }
            for r in read_csv(os.path.join(args.out, f"{NAME}.csv"))
        ]
        args.l0 = sorted({r["strength"] for r in rows if r["method"] == "L0"})
        args.gl = sorted({r["strength"] for r in rows if r["method"] == "group lasso"})
        args.seeds = len({r["seed"] for r in rows})
        return report(args, rows, float("nan"), time.perf_counter() - start)
    d = load_data(num_samples=1000, val_size=200) if args.smoke else load_data(val_size=1000)
    data = {"x": d.x_train, "y": d.y_train}
    val, test = {"x": d.x_val, "y": d.y_val}, {"x": d.x_test, "y": d.y_test}

    # Stage 1: dense, L0 and group lasso, one program.
    rows = [{"method": 0, "l0": False, "gl": False, "strength": 0.0}]
    rows += [{"method": 1, "l0": True, "gl": False, "strength": s} for s in args.l0]
    rows += [{"method": 2, "l0": False, "gl": True, "strength": s} for s in args.gl]
    grid = jg.product(jg.rows(rows, name="setting"), seed=range(args.seeds))
    trainer = trainer_for(args, init)
    state = trainer.train(trainer.init_state(grid, data), data, steps=args.steps)
    t1 = time.perf_counter() - start
    metrics = {"err": error}
    val_err = trainer.evaluate(state, val, metrics)["err"]
    test_err = trainer.evaluate(state, test, metrics)["err"]
    params = state.to_host(state.params)
    cols = [np.any(layer["kernel"] != 0, axis=1) for layer in params["mlp"][:-1]]
    gates = [np.asarray(jaxreg.hard_concrete_gate_inference(a)) > 0 for a in params["log_alpha"]]
    l0 = grid.hparams["l0"][:, None]
    kept = np.stack(
        [(c & np.where(l0, g, True)).sum(1) for c, g in zip(cols, gates, strict=True)], 1
    )

    # Stage 2: magnitude pruning of each seed's dense network, at the unit counts each
    # L0 / group-lasso model reached and at regular fractions; evaluated, fine-tuned.
    dense_idx = [
        int(np.flatnonzero((grid.hparams["method"] == 0) & (grid.hparams["seed"] == s))[0])
        for s in range(args.seeds)
    ]
    dense = jax.tree.map(lambda a: a[np.array(dense_idx)], params)
    stage2 = []
    for i in np.flatnonzero(grid.hparams["method"] > 0):
        stage2.append((int(grid.hparams["seed"][i]), *map(int, kept[i]), i))
    for f in FRACTIONS:
        k = [max(1, round(f * w)) for w in WIDTHS]
        stage2 += [(s, *k, -1) for s in range(args.seeds)]
    grid2 = jg.rows(
        [
            {
                "seed": s,
                "source": s,
                "keep1": k1,
                "keep2": k2,
                "match": m,
                "l0": False,
                "gl": False,
                "strength": 0.0,
            }
            for s, k1, k2, m in stage2
        ],
        name="pruned",
    )
    trainer2 = trainer_for(args, magnitude_init(dense))
    state2 = trainer2.init_state(grid2, data)
    pruned_val = trainer2.evaluate(state2, val, metrics)["err"]
    pruned_test = trainer2.evaluate(state2, test, metrics)["err"]
    state2 = trainer2.train(state2, data, steps=args.finetune_steps)
    ft_val = trainer2.evaluate(state2, val, metrics)["err"]
    ft_test = trainer2.evaluate(state2, test, metrics)["err"]
    p2 = state2.to_host(state2.params)
    kept2 = np.stack([np.any(layer["kernel"] != 0, axis=1).sum(1) for layer in p2["mlp"][:-1]], 1)
    # The fine-tuned pruned units stay at exactly 0 (relu'(0) = 0): a check.
    want = np.stack([grid2.hparams["keep1"], grid2.hparams["keep2"]], 1)
    if not np.array_equal(kept2, np.minimum(want, WIDTHS)):
        raise SystemExit("pruning: fine-tuning revived pruned units (a bug)")

    names = {0: "dense", 1: "L0", 2: "group lasso"}
    out = []
    for i, h in enumerate(grid.rows()):
        out.append(
            {
                "stage": 1,
                "method": names[h["method"]],
                "strength": float(f"{h['strength']:.6g}"),  # float32 -> the value given
                "seed": h["seed"],
                "match": -1,
                "keep1": int(kept[i, 0]),
                "keep2": int(kept[i, 1]),
                "kept_frac": round(kept[i].sum() / UNITS, 5),
                "val_err": round(float(val_err[i]), 5),
                "test_err": round(float(test_err[i]), 5),
            }
        )
    for j, h in enumerate(grid2.rows()):
        for method, v, t in (
            ("magnitude", pruned_val, pruned_test),
            ("magnitude+ft", ft_val, ft_test),
        ):
            out.append(
                {
                    "stage": 2,
                    "method": method,
                    "strength": 0.0,
                    "seed": h["seed"],
                    "match": h["match"],
                    "keep1": h["keep1"],
                    "keep2": h["keep2"],
                    "kept_frac": round((h["keep1"] + h["keep2"]) / UNITS, 5),
                    "val_err": round(float(v[j]), 5),
                    "test_err": round(float(t[j]), 5),
                }
            )
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), out)
    report(args, out, t1, time.perf_counter() - start)


# --- analysis ----------------------------------------------------------------------


def select(rows, dense):
    """The model of smallest kept fraction whose validation error is within TOLERANCE
    of the dense network's (ties: lower validation error); the dense network itself
    (nothing pruned) when none is."""
    ok = [r for r in rows if r["val_err"] <= dense["val_err"] + TOLERANCE]
    return min(ok, key=lambda r: (r["kept_frac"], r["val_err"])) if ok else dense


def interpolate(rows, frac):
    """Test error at kept fraction ``frac``, linear in log(fraction) between the two
    nearest models (None outside the range the rows cover)."""
    pts = sorted((r["kept_frac"], r["test_err"]) for r in rows if r["kept_frac"] > 0)
    f = np.log([p[0] for p in pts])
    if not pts or np.log(frac) < f[0] or np.log(frac) > f[-1]:
        return None
    return float(np.interp(np.log(frac), f, [p[1] for p in pts]))


def report(args, rows, stage1_s, elapsed):
    seeds = range(args.seeds)
    stage1 = [r for r in rows if r["stage"] == 1]
    dense = {s: next(r for r in stage1 if r["method"] == "dense" and r["seed"] == s) for s in seeds}
    matched = {}  # (stage-1 row index) -> {method: row}
    for r in rows:
        if r["stage"] == 2 and r["match"] >= 0:
            matched.setdefault(r["match"], {})[r["method"]] = r
    lines = []
    for method, strengths in (("L0", args.l0), ("group lasso", args.gl)):
        for st in strengths:
            idx = [i for i, r in enumerate(stage1) if r["method"] == method and r["strength"] == st]
            sel = [stage1[i] for i in idx]
            mag = [matched[i]["magnitude"] for i in idx]
            ft = [matched[i]["magnitude+ft"] for i in idx]
            err = [r["test_err"] for r in sel]
            lines.append(
                [
                    method,
                    f"{st:g}",
                    mean_sd([100 * r["kept_frac"] for r in sel], ".1f"),
                    " / ".join(mean_sd([r[f"keep{j + 1}"] for r in sel], ".0f") for j in range(2)),
                    mean_sd([100 * e for e in err], ".1f"),
                    mean_sd([100 * r["test_err"] for r in mag], ".1f"),
                    mean_sd([100 * r["test_err"] for r in ft], ".1f"),
                    paired(err, [r["test_err"] for r in ft]).format(100),
                    paired(err, [dense[r["seed"]]["test_err"] for r in sel]).format(100),
                ]
            )
    d_err = [dense[s]["test_err"] for s in seeds]
    print(
        f"MNIST-1D (3000 train), MLP 40-128-128-10 ({UNITS} hidden units), Adam {LR:g} "
        f"(gates {GATE_LR:g}), batch {BATCH}, {args.steps} steps, {args.seeds} seeds; "
        f"magnitude fine-tuning {args.finetune_steps} steps; dense test error "
        f"{mean_sd([100 * e for e in d_err], '.1f')} %\n"
    )
    print(
        "At equal sparsity (magnitude pruning at each model's own per-layer unit counts, "
        "same seed's dense network), test error in %:\n"
    )
    print(
        markdown_table(
            [
                "method",
                "strength",
                "units kept %",
                "kept per layer (of 128)",
                "test err",
                "magnitude, same counts",
                "magnitude + fine-tune",
                "method - magnitude+ft (pp)",
                "method - dense (pp)",
            ],
            lines,
        )
    )
    # How much can I prune: validation selection.
    sel_lines = []
    selected = {}
    for method in ("L0", "group lasso", "magnitude", "magnitude+ft"):
        pool = [r for r in rows if r["method"] == method and (r["stage"] == 1 or r["match"] < 0)]
        chosen = []
        for s in seeds:
            c = select([r for r in pool if r["seed"] == s], dense[s])
            chosen.append(c)
        selected[method] = chosen
        sel_lines.append(
            [
                method,
                f"{sum(c['method'] != 'dense' for c in chosen)} of {len(chosen)}",
                mean_sd([100 * c["kept_frac"] for c in chosen], ".1f"),
                mean_sd([100 * c["test_err"] for c in chosen], ".1f"),
                paired([c["test_err"] for c in chosen], d_err).format(100),
                paired([c["test_err"] for c in chosen], d_err).verdict(
                    "better than dense", "worse than dense"
                ),
            ]
        )
    print(
        f"\nHow much can I prune? Per seed, the smallest kept fraction whose validation "
        f"error is within {100 * TOLERANCE:g} point of the dense network's (magnitude: "
        f"from the fractions {', '.join(f'{f:g}' for f in FRACTIONS)}; the dense network, "
        "100%, where none is):\n"
    )
    print(
        markdown_table(
            [
                "method",
                "seeds that pruned",
                "units kept % (selected on val)",
                "test err %",
                "selected - dense (pp)",
                "verdict",
            ],
            sel_lines,
        )
    )
    # L0 vs group lasso vs magnitude+ft at common kept fractions (interpolated).
    cmp_lines = []
    for frac in (0.05, 0.1, 0.2, 0.4):
        per = {}
        for method in ("L0", "group lasso", "magnitude+ft"):
            pool = [
                r for r in rows if r["method"] == method and (r["stage"] == 1 or r["match"] < 0)
            ]
            per[method] = [interpolate([r for r in pool if r["seed"] == s], frac) for s in seeds]
        cells = [f"{100 * frac:g}"]
        for method in per:
            v = per[method]
            cells.append("outside range" if None in v else mean_sd([100 * x for x in v], ".1f"))
        for a, b in (
            ("L0", "group lasso"),
            ("L0", "magnitude+ft"),
            ("group lasso", "magnitude+ft"),
        ):
            if None in per[a] or None in per[b]:
                cells.append("")
            else:
                cells.append(paired(per[a], per[b]).format(100))
        cmp_lines.append(cells)
    print(
        "\nAt common kept fractions (test error interpolated per seed, linear in "
        "log fraction, between the fractions each method reached):\n"
    )
    print(
        markdown_table(
            [
                "units kept %",
                "L0",
                "group lasso",
                "magnitude+ft",
                "L0 - GL (pp)",
                "L0 - mag+ft (pp)",
                "GL - mag+ft (pp)",
            ],
            cmp_lines,
        )
    )
    plot(args, rows, dense, selected)
    print(
        f"\nstage 1 (dense, L0, group lasso) took {stage1_s:.0f} s; wrote {args.out}/ in "
        f"{elapsed:.0f} s"
    )


def plot(args, rows, dense, selected):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    style = {
        "L0": ("C0", "o"),
        "group lasso": ("C1", "s"),
        "magnitude": ("C3", "v"),
        "magnitude+ft": ("C2", "^"),
    }
    for method, (c, m) in style.items():
        pool = [r for r in rows if r["method"] == method]
        # models that kept no unit predict one class (chance): off the log axis
        grid_pts = [r for r in pool if (r["stage"] == 1 or r["match"] < 0) and r["kept_frac"] > 0]
        if not grid_pts:
            continue
        x = np.array([r["kept_frac"] for r in grid_pts])
        y = 100 * np.array([r["test_err"] for r in grid_pts])
        axes[0].scatter(100 * x, y, color=c, marker=m, s=14, alpha=0.5, label=method)
        # mean over seeds per setting (strength, or fraction for magnitude)
        key = "strength" if method in ("L0", "group lasso") else "kept_frac"
        settings = sorted({r[key] for r in grid_pts})
        settings = [k for k in settings if sum(r[key] == k for r in grid_pts) == args.seeds]
        mx = [np.mean([r["kept_frac"] for r in grid_pts if r[key] == k]) for k in settings]
        my = [np.mean([r["test_err"] for r in grid_pts if r[key] == k]) for k in settings]
        order = np.argsort(mx)
        axes[0].plot(100 * np.array(mx)[order], 100 * np.array(my)[order], color=c, lw=1.5)
        if method in ("L0", "group lasso"):  # matched magnitude, paired differences
            continue
    dmean = 100 * np.mean([r["test_err"] for r in dense.values()])
    axes[0].axhline(dmean, color="k", lw=1, ls="--", label="dense (no pruning)")
    axes[0].set(
        xscale="log",
        xlabel="hidden units kept (%), log scale",
        ylabel="test error (%)",
        title="Test error vs units kept (dots: models; lines: mean per setting; 0 kept: not shown)",
    )
    axes[0].legend(fontsize=8)
    # Paired differences at equal sparsity: method - magnitude+ft at its own counts.
    stage1 = [r for r in rows if r["stage"] == 1]
    matched = {r["match"]: r for r in rows if r["method"] == "magnitude+ft" and r["match"] >= 0}
    for method, strengths in (("L0", args.l0), ("group lasso", args.gl)):
        c, m = style[method]
        for st in strengths:
            idx = [i for i, r in enumerate(stage1) if r["method"] == method and r["strength"] == st]
            dd = paired([stage1[i]["test_err"] for i in idx], [matched[i]["test_err"] for i in idx])
            x = 100 * np.mean([stage1[i]["kept_frac"] for i in idx])
            axes[1].errorbar(
                [x],
                [100 * dd.mean],
                yerr=[[100 * (dd.mean - dd.low)], [100 * (dd.high - dd.mean)]],
                color=c,
                marker=m,
                capsize=3,
            )
        axes[1].plot([], [], color=c, marker=m, label=f"{method} - magnitude+ft")
    axes[1].axhline(0, color="k", lw=1)
    axes[1].set(
        xscale="log",
        xlabel="hidden units kept (%), log scale",
        ylabel="test error difference (pp), 95% CI",
        title=f"Paired at equal per-layer counts ({args.seeds} seeds)",
    )
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"Pruning hidden units of an MLP 40-128-128-10 on MNIST-1D: L0 gates, proximal group "
        f"lasso, magnitude (+{args.finetune_steps} fine-tuning steps)"
    )
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, f"{NAME}.png"), dpi=110)


if __name__ == "__main__":
    main()
