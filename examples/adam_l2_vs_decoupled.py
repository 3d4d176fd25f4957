"""Adam + L2 in the loss vs decoupled weight decay: does the best decay move with the lr?

Loshchilov & Hutter (2019, Figure 2) found that with Adam + L2 the good region of the
(learning rate, decay) plane runs along a diagonal, while with decoupled weight decay
(AdamW, their Algorithm 2: ``w <- w - eta_t * (lr * adam_direction + lambda * w)``) the
best lambda hardly depends on the learning rate. Their networks have batch
normalisation (so the hidden kernels are scale-invariant) and a cosine schedule whose
multiplier ``eta_t`` scales both the learning rate and the decay. Two conditions here:

* ``plain``: MLP 40-H-H-10, constant schedule (``eta_t = 1``);
* ``bn_cosine``: the same MLP with batch normalisation after each hidden linear layer
  and ``eta_t = (1 + cos(pi t / T)) / 2`` on both the learning rate and the decay.

Each is trained on 1000 MNIST-1D examples with Adam + ``jaxreg.l2_penalty(strength=s)``
and with ``jaxreg.optax.decoupled_adamw(lr, weight_decay=lambda, multiplier=eta_t)``,
for every learning rate x decay x seed on half-decade grids (kernels only decayed), as
ONE ``jaxreg.grid`` program. The decay per learning rate is chosen on a VALIDATION
split; the regret of one decay shared by every learning rate is compared with the
regret of one shared decay/lr ratio. Writes ``grid.csv``, ``regret.csv`` and
``adam_l2_vs_decoupled.png`` to ``--out``.

Run: python examples/adam_l2_vs_decoupled.py [--smoke] [--out DIR] [--seeds N]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import _stats as st
import jax
import jax.numpy as jnp
import numpy as np

import jaxreg
import jaxreg.grid as jg
import jaxreg.optax

NAME = "adam_l2_vs_decoupled"
CONDITIONS = {"plain": (False, False), "bn_cosine": (True, True)}  # (batch norm, cosine)
METHODS = ("l2", "decoupled")
LABELS = {"l2": "Adam + L2 in the loss (s)", "decoupled": "decoupled decay (lambda)"}


def parse_args(argv=None):
    p = common.example_parser(__doc__, NAME)
    p.add_argument("--lr-exps", type=common.float_list(), default=[-4, -3.5, -3, -2.5, -2])
    p.add_argument("--decay-exps", type=common.float_list(), default=None)
    p.add_argument("--seeds", type=common.positive_int, default=5)
    p.add_argument("--steps", type=common.positive_int, default=500)
    p.add_argument("--hidden", type=common.positive_int, default=64)
    a = p.parse_args(argv)
    if a.decay_exps is None:  # log10 of s and lambda; 0 (plain Adam) is added
        a.decay_exps = [-5 + 0.5 * i for i in range(11)]  # 1e-5 .. 1
    if a.smoke:
        a.lr_exps, a.decay_exps, a.seeds, a.steps, a.hidden = [-3, -2.5], [-3, -2.5], 2, 40, 32
    return a


def build(a, data):
    """The grid (condition x lr x (method, decay) x seed) and its trainer."""
    settings = [{"method": 0, "decay_exp": 0.0, "s": 0.0, "wd": 0.0}]  # plain Adam
    for m in range(len(METHODS)):
        for e in a.decay_exps:
            d = float(10.0**e)
            settings.append(
                {"method": m + 1, "decay_exp": e, "s": d * (m == 0), "wd": d * (m == 1)}
            )
    cond = [{"bn": bn, "cosine": cos} for bn, cos in CONDITIONS.values()]
    grid = jg.product(
        jg.rows(cond, name="condition"),
        lr_exp=a.lr_exps,
        setting=list(range(len(settings))),
        seed=list(range(a.seeds)),
    )
    table = {k: np.array([s[k] for s in settings], np.float32) for k in ("s", "wd")}
    sizes = (data.num_features, a.hidden, a.hidden, data.num_classes)
    x_train = jnp.asarray(data.x_train)

    def init(key, hp):
        return {
            "mlp": common.init_mlp(key, sizes),
            "bn": [common.init_batch_norm(n) for n in sizes[1:-1]],
        }

    def forward(params, hp, x, stats=None):
        """Logits and the batch statistics used (batch norm only where hp["bn"])."""
        used = []
        for i, layer in enumerate(params["mlp"][:-1]):
            z = x @ layer["kernel"] + layer["bias"]
            zn, s = common.batch_norm(params["bn"][i], z, stats=None if stats is None else stats[i])
            used.append(s)
            x = jax.nn.relu(jnp.where(hp["bn"], zn, z))
        out = params["mlp"][-1]
        return x @ out["kernel"] + out["bias"], used

    def logits_eval(params, hp, x):
        """Inference: batch norm with the statistics of the whole training set."""
        _, stats = forward(params, hp, x_train)
        return forward(params, hp, x, stats)[0]

    def loss(params, hp, batch, key):
        logits, _ = forward(params, hp, batch["x"])
        s = jnp.asarray(table["s"])[hp["setting"]]
        penalty = jaxreg.l2_penalty(params["mlp"], strength=s, where=jaxreg.kernels_only)
        return common.cross_entropy(logits, batch["y"]) + penalty

    def optimizer(hp):
        def eta(count):  # the schedule multiplier, on the learning rate AND the decay
            cos = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, a.steps) / a.steps))
            return jnp.where(hp["cosine"], cos, 1.0)

        return jaxreg.optax.decoupled_adamw(
            10.0 ** hp["lr_exp"],
            weight_decay=jnp.asarray(table["wd"])[hp["setting"]],
            where=jaxreg.kernels_only,
            multiplier=eta,
        )

    def error(params, hp, batch):
        pred = jnp.argmax(logits_eval(params, hp, batch["x"]), -1)
        return (pred != batch["y"]).astype(jnp.float32)

    def kernel_norm(params, hp, batch):  # norm of the hidden (scale-invariant under BN) kernels
        return jnp.sqrt(sum(jnp.sum(lay["kernel"] ** 2) for lay in params["mlp"][:-1]))

    trainer = jg.Trainer(init=init, loss=loss, optimizer=optimizer, batch_size=128, chunk_steps=20)
    return grid, settings, trainer, {"error": error, "kernel_norm": kernel_norm}


def run(a):
    data = (
        common.load_data(num_samples=1500, train_size=400, val_size=200)
        if a.smoke
        else common.load_data(train_size=1000, val_size=1000)
    )
    grid, settings, trainer, metrics = build(a, data)
    train = {"x": data.x_train, "y": data.y_train}
    state = trainer.init_state(grid, train)
    chunks = -(-a.steps // trainer.chunk_steps)
    bar = common.progress(chunks, models=grid.size, chunk_steps=trainer.chunk_steps)
    state = trainer.train(
        state, train, steps=chunks * trainer.chunk_steps, callback=lambda s, c: bar.update(1)
    )
    bar.close()
    res = {}
    for split, x, y in (
        ("train", data.x_train, data.y_train),
        ("val", data.x_val, data.y_val),
        ("test", data.x_test, data.y_test),
    ):
        out = trainer.evaluate(state, {"x": x, "y": y}, metrics)
        res[f"{split}_err"] = out["error"]
        res["kernel_norm"] = out["kernel_norm"]
    names = list(CONDITIONS)
    rows = []
    for i, r in enumerate(grid.rows()):
        s = settings[r["setting"]]
        for method in METHODS if s["method"] == 0 else (METHODS[s["method"] - 1],):
            rows.append(
                {
                    "condition": names[list(CONDITIONS.values()).index((r["bn"], r["cosine"]))],
                    "method": method,
                    "lr": float(f"{10 ** r['lr_exp']:.4g}"),
                    "decay": float(f"{10 ** s['decay_exp']:.4g}") if s["method"] else 0.0,
                    "seed": r["seed"],
                    **{k: round(float(v[i]), 5) for k, v in res.items()},
                }
            )
    return rows, len(data.x_train), len(data.x_val)


def cube(rows, cond, method, key, lrs, decays, seeds):
    """(lrs, 1 + decays, seeds) values of ``key``; decay index 0 is no decay."""
    t = {
        (r["lr"], r["decay"], r["seed"]): r[key]
        for r in rows
        if (r["condition"], r["method"]) == (cond, method)
    }
    return np.array([[[t[lr, d, s] for s in seeds] for d in [0.0, *decays]] for lr in lrs])


def analyse(rows):
    """Per condition x method: validation choices, edges, regrets (per seed)."""
    lrs = sorted({r["lr"] for r in rows})
    decays = sorted({r["decay"] for r in rows} - {0.0})
    seeds = sorted({r["seed"] for r in rows})
    lexp, dexp = np.log10(lrs), np.log10(decays)
    out = {}
    for cond in CONDITIONS:
        for method in METHODS:
            val, test = (
                cube(rows, cond, method, k, lrs, decays, seeds) for k in ("val_err", "test_err")
            )
            val, test, test0 = val[:, 1:], test[:, 1:], test[:, 0]
            best = val.mean(2).argmin(1)  # per-lr choice on validation
            idx = np.arange(len(lrs))
            at_best = test[idx, best]  # (lrs, seeds)
            shared = int(val.mean((0, 2)).argmin())
            ratios = sorted({round(d - lr, 6) for d in dexp for lr in lexp})
            ok = [r for r in ratios if all(np.isclose(lr + r, dexp).any() for lr in lexp)]
            col = {r: np.array([int(np.isclose(lr + r, dexp).argmax()) for lr in lexp]) for r in ok}
            r_best = min(ok, key=lambda r: val[idx, col[r]].mean()) if ok else None
            reg_dec = (test[:, shared] - at_best).mean(0)
            reg_rat = (
                (test[idx, col[r_best]] - at_best).mean(0) if ok else np.full(len(seeds), np.nan)
            )
            out[cond, method] = {
                "lrs": lrs,
                "decays": decays,
                "best": best,
                "edge": [b in (0, len(decays) - 1) for b in best],
                "test_best": at_best,
                "test_none": test0,
                "test": test,
                "shared": shared,
                "ratio": r_best,
                "regret_decay": reg_dec,
                "regret_ratio": reg_rat,
                "diff": st.paired(reg_dec, reg_rat),
            }
    return out


def report(rows, a, elapsed, what):
    res = analyse(rows)
    lines, regret_rows = [], []
    for (cond, method), r in res.items():
        for i, lr in enumerate(r["lrs"]):
            d = r["decays"][r["best"][i]]
            lines.append(
                [
                    cond,
                    method,
                    f"{lr:.2g}",
                    f"{d:.2g}" + (" (edge)" if r["edge"][i] else ""),
                    st.mean_sd(100 * r["test_best"][i], ".1f"),
                    st.mean_sd(100 * r["test_none"][i], ".1f"),
                    st.paired(r["test_best"][i], r["test_none"][i]).format(100, "+.1f"),
                ]
            )
        regret_rows.append(
            {
                "condition": cond,
                "method": method,
                "shared_decay": r["decays"][r["shared"]],
                "shared_ratio_log10": r["ratio"],
                "regret_shared_decay": float(r["regret_decay"].mean()),
                "regret_shared_ratio": float(r["regret_ratio"].mean()),
                "difference": r["diff"].mean,
                "low": r["diff"].low,
                "high": r["diff"].high,
                "p": r["diff"].p,
                "verdict": r["diff"].verdict("shared decay better", "shared ratio better"),
            }
        )
    print(f"{what}{a.seeds} seeds; test error (%) at the decay chosen on validation per lr\n")
    heads = [
        "condition",
        "method",
        "lr",
        "decay (val.)",
        "test err",
        "err at decay 0",
        "chosen - 0 [95% CI]",
    ]
    print(common.markdown_table(heads, lines))
    print("\nregret (test-error points, mean over lrs) of ONE decay for every lr vs ONE decay/lr\n")
    print(
        common.markdown_table(
            [
                "condition",
                "method",
                "shared decay",
                "regret",
                "shared log10(decay/lr)",
                "regret",
                "difference [95% CI]",
                "verdict",
            ],
            [
                [
                    q["condition"],
                    q["method"],
                    f"{q['shared_decay']:.2g}",
                    f"{100 * q['regret_shared_decay']:.2f}",
                    f"{q['shared_ratio_log10']}",
                    f"{100 * q['regret_shared_ratio']:.2f}",
                    res[q["condition"], q["method"]]["diff"].format(100, "+.2f"),
                    q["verdict"],
                ]
                for q in regret_rows
            ],
        )
    )
    for q, adj in zip(regret_rows, st.holm([q["p"] for q in regret_rows]), strict=True):
        q["p_holm"] = float(adj)  # over the four condition x method comparisons
    common.write_csv(os.path.join(a.out, "regret.csv"), regret_rows)
    plot(res, a)
    holm = ", ".join(f"{q['condition']}/{q['method']} {q['p_holm']:.2g}" for q in regret_rows)
    print(f"\nHolm-adjusted p over the four regret comparisons: {holm}")
    print(f"\nwrote {a.out}/ in {elapsed:.0f} s")


def plot(res, a):
    plt = common.matplotlib_pyplot()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, ((cond, method), r) in zip(axes.ravel(), res.items(), strict=True):
        mean = 100 * r["test"].mean(2).T  # (decays, lrs)
        lo, hi = np.nanmin(mean), min(np.nanmax(mean), np.nanmin(mean) + 30)
        im = ax.imshow(mean, origin="lower", cmap="viridis_r", vmin=lo, vmax=hi, aspect="auto")
        for i in range(mean.shape[0]):
            for j in range(mean.shape[1]):
                c = "w" if mean[i, j] > (lo + hi) / 2 else "k"
                ax.text(j, i, f"{mean[i, j]:.1f}", ha="center", va="center", fontsize=7, color=c)
        for j, i in enumerate(r["best"]):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="r", lw=2))
        ax.axhline(r["shared"], color="w", ls="--", lw=1)
        if r["ratio"] is not None:
            lx, dx = np.log10(r["lrs"]), np.log10(r["decays"])
            ys = [np.interp(x + r["ratio"], dx, np.arange(len(dx))) for x in lx]
            ax.plot(range(len(lx)), ys, "m:", lw=2)
        ax.set_xticks(range(len(r["lrs"])), [f"{v:.2g}" for v in r["lrs"]])
        ax.set_yticks(range(len(r["decays"])), [f"{v:.2g}" for v in r["decays"]])
        ax.set(
            xlabel="Adam learning rate",
            ylabel="s" if method == "l2" else "lambda",
            title=f"{cond}: {LABELS[method]}",
        )
        fig.colorbar(im, ax=ax, label="test error (%)", shrink=0.8)
    fig.suptitle(
        f"MNIST-1D, MLP 40-{a.hidden}-{a.hidden}-10, {a.seeds} seeds, mean test error (%). "
        "Red: decay chosen on validation per lr;\nwhite dashes: one decay for all lrs; "
        "magenta dots: one decay/lr ratio (both chosen on validation)",
        fontsize=10,
    )
    fig.tight_layout()
    common.save_figure(fig, os.path.join(a.out, f"{NAME}.png"), dpi=90)
    plt.close(fig)


def main(argv=None):
    a = parse_args(argv)
    start = time.perf_counter()
    rows, n_train, n_val = run(a)
    os.makedirs(a.out, exist_ok=True)
    common.write_csv(os.path.join(a.out, "grid.csv"), rows)
    what = f"MNIST-1D ({n_train} train, {n_val} validation examples), {a.steps} steps, "
    report(rows, a, time.perf_counter() - start, what)


if __name__ == "__main__":
    main()
