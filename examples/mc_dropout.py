"""MC dropout vs weight scaling (Gal & Ghahramani 2016): regression quality and uncertainty.

Question: does averaging many dropout-on forward passes (Monte Carlo dropout,
``jaxreg.mc_predict``) predict better than the usual weight-scaling inference (dropout
off), and does its spread grow away from the training data, as the paper shows?

Part 1, scikit-learn's diabetes data (442 patients, 10 features, no download): 20 random
train/validation/test splits, one ReLU MLP (10-50-1, dropout on the hidden layer) per
split and dropout rate, all trained as one vmapped program. Per model: test RMSE and
test log-likelihood (Gaussian predictive, observation-noise variance picked on the
validation part, by the same rule for both inferences).

Part 2, a 1-D toy: y = sin(2x) + noise observed on [-2, -0.6] and [0.6, 2]; the MC
predictive band over [-5, 5] for several seeds.

Run: python examples/mc_dropout.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import _common as common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg

HIDDEN = 50
NOISE_GRID = np.logspace(-3, 1, 161)  # observation-noise variances (standardised targets)


def mse_pairs(out, _labels):
    """Loss for ``apply`` outputs stacked as (prediction, target); the labels are unused."""
    return jnp.mean(jnp.square(out[:, 0] - out[:, 1]))


def split_data(num_splits: int, seed: int = 0):
    """Per split: standardised train/val/test arrays (stats from the training part)."""
    from sklearn.datasets import load_diabetes

    x_all, y_all = load_diabetes(return_X_y=True)
    x_all, y_all = x_all.astype(np.float32), y_all.astype(np.float32)
    n = len(x_all)
    n_test = n // 10
    n_val = n // 10
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("xtr", "ytr", "xva", "yva", "xte", "yte", "mu", "sd")}
    for _ in range(num_splits):
        perm = rng.permutation(n)
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        xm, xs = x_all[tr].mean(0), x_all[tr].std(0)
        mu, sd = y_all[tr].mean(), y_all[tr].std()
        for name, idx in (("tr", tr), ("va", va), ("te", te)):
            out["x" + name].append((x_all[idx] - xm) / xs)
            out["y" + name].append((y_all[idx] - mu) / sd)
        out["mu"].append(mu)
        out["sd"].append(sd)
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def gauss_ll(y, mean, var):
    return -0.5 * (jnp.log(2 * jnp.pi * var) + jnp.square(y - mean) / var)


def diabetes(rates, num_splits, steps, chunk, mc_samples):
    d = split_data(num_splits)
    g = common.grid(rate=rates, split=np.arange(num_splits))
    s = g["split"]
    hp = {"rate": g["rate"].astype(np.float32), "x": d["xtr"][s], "y": d["ytr"][s]}
    n_train = d["xtr"].shape[1]

    # Each model has its own split: the Trainer samples indices into the shared
    # arange(n_train), and ``apply`` looks the examples up in the model's own hp.
    def apply(params, hp, idx, key):
        pred = common.mlp(params, hp["x"][idx], key=key, rates=hp["rate"])[:, 0]
        return jnp.stack([pred, hp["y"][idx]], axis=1)

    trainer = common.Trainer(
        init=lambda key: common.init_mlp(key, (d["xtr"].shape[2], HIDDEN, 1)),
        apply=apply,
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=32,
        chunk_steps=chunk,
        loss=mse_pairs,
        penalty=lambda params, hp: jaxreg.l2_penalty(params, strength=1e-4),
    )
    state = trainer.init_state(hp, seeds=s)
    idx = np.arange(n_train)
    bar = common.progress(steps // chunk, models=len(s), chunk_steps=chunk, desc="diabetes")
    for _ in range(steps // chunk):
        state, _ = trainer.chunk(state, hp, idx, idx)
        bar.update(1)
    bar.close()

    @jax.jit
    @jax.vmap
    def evaluate(params, rate, seed, xva, yva, xte, yte, mu, sd):
        def sample(key, x):
            return common.mlp(params, x, key=key, rates=rate)[:, 0]

        key = jax.random.fold_in(jax.random.key(seed), 2)
        out = {}
        both = jnp.concatenate([xva, xte])
        m_mc, v_mc = jaxreg.mc_predict(key, sample, both, num_samples=mc_samples, chunk_size=100)
        m_ws = common.mlp(params, both, key=None)[:, 0]
        nva = xva.shape[0]
        for name, m, v in (("mc", m_mc, v_mc), ("ws", m_ws, jnp.zeros_like(m_ws))):
            # Observation noise: the variance on the grid that maximises validation LL.
            grid = jnp.asarray(NOISE_GRID)
            ll_val = gauss_ll(yva[None], m[None, :nva], v[None, :nva] + grid[:, None]).mean(1)
            s2 = grid[jnp.argmax(ll_val)]
            mt, vt = m[nva:], v[nva:] + s2
            out[f"rmse_{name}"] = jnp.sqrt(jnp.mean(jnp.square(mt - yte))) * sd
            out[f"ll_{name}"] = gauss_ll(yte, mt, vt).mean() - jnp.log(sd)
            out[f"noise_var_{name}"] = s2
        out["mc_std"] = jnp.sqrt(v_mc[nva:]).mean() * sd
        return out

    res = common.to_host(
        evaluate(
            state.params,
            hp["rate"],
            s,
            *(d[k][s] for k in ("xva", "yva", "xte", "yte", "mu", "sd")),
        )
    )
    # Context: a linear least-squares fit on the same splits (the data are nearly linear).
    lin = []
    for j in range(num_splits):
        xa = np.concatenate([d["xtr"][j], np.ones((n_train, 1), np.float32)], 1)
        coef = np.linalg.lstsq(xa, d["ytr"][j], rcond=None)[0]
        pred = np.concatenate([d["xte"][j], np.ones((len(d["xte"][j]), 1))], 1) @ coef
        lin.append(float(np.sqrt(np.mean((pred - d["yte"][j]) ** 2)) * d["sd"][j]))
    rows = []
    for i in range(len(s)):
        row = {"rate": float(g["rate"][i]), "split": int(s[i]), "rmse_linear": lin[s[i]]}
        row.update({k: float(v[i]) for k, v in res.items()})
        rows.append(row)
    return rows


def toy(seeds, steps, chunk, mc_samples, rate=0.1):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-2, -0.6, 20), rng.uniform(0.6, 2, 20)]).astype(np.float32)
    y = (np.sin(2 * x) + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
    hp = {"rate": np.full(len(seeds), rate, np.float32)}
    trainer = common.Trainer(
        init=lambda key: common.init_mlp(key, (1, 128, 128, 1)),
        apply=lambda params, hp, xb, key: common.mlp(params, xb, key=key, rates=hp["rate"])[:, 0],
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=20,
        chunk_steps=chunk,
        loss=lambda pred, yb: jnp.mean(jnp.square(pred - yb)),
        penalty=lambda params, hp: jaxreg.l2_penalty(params, strength=1e-5),
    )
    state = trainer.init_state(hp, seeds=np.asarray(seeds))
    for _ in range(steps // chunk):
        state, _ = trainer.chunk(state, hp, x[:, None], y)
    grid_x = np.linspace(-5, 5, 201, dtype=np.float32)

    @jax.jit
    @jax.vmap
    def predict(params, seed):
        def sample(key, xs):
            return common.mlp(params, xs, key=key, rates=rate)[:, 0]

        key = jax.random.fold_in(jax.random.key(seed), 2)
        m, v = jaxreg.mc_predict(key, sample, grid_x[:, None], num_samples=mc_samples)
        return m, jnp.sqrt(v), common.mlp(params, grid_x[:, None], key=None)[:, 0]

    mean, std, ws = common.to_host(predict(state.params, jnp.asarray(seeds)))
    rows = [
        {
            "seed": int(seeds[i]),
            "x": float(grid_x[j]),
            "mc_mean": float(mean[i, j]),
            "mc_std": float(std[i, j]),
            "ws_pred": float(ws[i, j]),
        }
        for i in range(len(seeds))
        for j in range(len(grid_x))
    ]
    return rows, (x, y, grid_x, mean, std, ws)


def region_std(rows):
    """Mean MC std over seeds in three x regions: on the data, in the gap, far outside."""
    x = np.array([r["x"] for r in rows])
    sd = np.array([r["mc_std"] for r in rows])
    regions = {
        "data": (np.abs(x) >= 0.6) & (np.abs(x) <= 2),
        "gap": np.abs(x) < 0.3,
        "far": np.abs(x) >= 4,
    }
    return {k: float(sd[m].mean()) for k, m in regions.items()}


def summarise(rows, key_name="rate"):
    out = {}
    for r in sorted({row[key_name] for row in rows}):
        sel = [row for row in rows if row[key_name] == r]
        out[r] = {
            k: (np.mean([row[k] for row in sel]), np.std([row[k] for row in sel]))
            for k in ("rmse_mc", "rmse_ws", "ll_mc", "ll_ws", "mc_std")
        }
        diff = [row["ll_mc"] - row["ll_ws"] for row in sel]
        out[r]["ll_diff"] = (np.mean(diff), np.std(diff))
        out[r]["mc_wins_ll"] = sum(d > 0 for d in diff), len(diff)
        dr = [row["rmse_mc"] - row["rmse_ws"] for row in sel]
        out[r]["rmse_diff"] = (np.mean(dr), np.std(dr))
    return out


def plot(summary, toy_data, rows, path, title_note=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    rates = sorted(summary)
    split_rows = {r: [row for row in rows if row["rate"] == r] for r in rates}
    ax = axes[0]
    for j, (name, colour, off) in enumerate((("mc", "C0", -0.004), ("ws", "C1", 0.004))):
        for r in rates:  # every split as a faint point: the spread over splits
            vals = [row[f"rmse_{name}"] for row in split_rows[r]]
            ax.plot(np.full(len(vals), r + off), vals, ".", color=colour, alpha=0.25)
        m = [summary[r][f"rmse_{name}"][0] for r in rates]
        s = [summary[r][f"rmse_{name}"][1] for r in rates]
        ax.errorbar(
            np.array(rates) + off,
            m,
            yerr=s,
            color=colour,
            marker="o",
            capsize=3,
            label=("MC dropout" if j == 0 else "weight scaling") + " (mean ± std)",
        )
    ax.set_xlabel("dropout rate")
    ax.set_ylabel("test RMSE (disease-progression units)")
    ax.legend(fontsize=8)
    ax = axes[1]  # paired differences: same trained model, two inferences
    for metric, colour, off, lab in (
        ("ll", "C2", -0.004, "log-lik. (nats/patient)"),
        ("rmse", "C3", 0.004, "RMSE / 100 (units/100)"),
    ):
        scale = 0.01 if metric == "rmse" else 1.0
        for r in rates:
            d = [(row[f"{metric}_mc"] - row[f"{metric}_ws"]) * scale for row in split_rows[r]]
            ax.plot(np.full(len(d), r + off), d, ".", color=colour, alpha=0.35)
        m = [summary[r][f"{metric}_diff"][0] * scale for r in rates]
        s = [summary[r][f"{metric}_diff"][1] * scale for r in rates]
        ax.errorbar(
            np.array(rates) + off,
            m,
            yerr=s,
            color=colour,
            marker="o",
            capsize=3,
            label=f"MC - scaling: {lab}",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("dropout rate")
    ax.set_ylabel("MC dropout minus weight scaling (per split)")
    ax.legend(fontsize=8)
    n_splits = len(split_rows[rates[0]])
    axes[0].set_title(f"diabetes: test RMSE, {n_splits} random splits")
    axes[1].set_title("diabetes: paired difference, same models")

    x, y, gx, mean, std, ws = toy_data
    ax = axes[2]
    ax.fill_between(gx, mean[0] - 2 * std[0], mean[0] + 2 * std[0], alpha=0.3, label="MC ± 2 std")
    ax.plot(gx, mean[0], color="C0", label="MC mean")
    ax.plot(gx, ws[0], "--", color="C1", label="weight scaling")
    ax.plot(x, y, "k.", ms=4, label="training data")
    ax.set_ylim(-4, 4)
    ax.set_xlabel("x (input, arbitrary units)")
    ax.set_ylabel("y (arbitrary units)")
    ax.set_title("1-D toy: MC dropout band (seed 0)")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[3]
    for i in range(len(std)):
        ax.plot(gx, std[i], color="C0", alpha=0.5, lw=1, label="one seed" if i == 0 else None)
    ax.plot(gx, std.mean(0), color="k", lw=2, label=f"mean of {len(std)} seeds")
    for lo, hi in ((-2, -0.6), (0.6, 2)):
        ax.axvspan(lo, hi, color="grey", alpha=0.15)
    ax.set_xlabel("x (input; grey: where the training data lie)")
    ax.set_ylabel("MC predictive std (y units)")
    ax.set_title("1-D toy: MC std vs distance from data")
    ax.legend(fontsize=8)
    fig.suptitle("MC dropout vs weight-scaling inference (Gal & Ghahramani 2016)" + title_note)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=80)
    plt.close(fig)


def main(argv=None):
    p = common.example_parser(__doc__, "mc_dropout")
    p.add_argument("--splits", type=common.positive_int, default=20)
    p.add_argument("--steps", type=common.positive_int, default=4000)
    p.add_argument(
        "--rates",
        type=common.float_list(low=0.0, high=1.0, high_open=True),
        default=[0.05, 0.1, 0.2, 0.3, 0.5],
    )
    a = p.parse_args(argv)
    if a.smoke:
        a.splits, a.steps, a.rates = 3, 100, [0.1]
        chunk, mc, toy_steps, seeds = 50, 20, 100, [0, 1]
    else:
        chunk, mc, toy_steps, seeds = 500, 500, 3000, [0, 1, 2, 3, 4]
    t0 = time.time()
    rows = diabetes(a.rates, a.splits, a.steps, chunk, mc)
    toy_rows, toy_data = toy(seeds, toy_steps, chunk, mc)
    common.write_csv(os.path.join(a.out, "mc_dropout.csv"), rows)
    common.write_csv(os.path.join(a.out, "toy_1d.csv"), toy_rows)
    summary = summarise(rows)
    plot(summary, toy_data, rows, os.path.join(a.out, "mc_dropout.png"))
    table = []
    for r, v in summary.items():
        table.append(
            [f"{r:g}"]
            + [f"{v[k][0]:.2f} ± {v[k][1]:.2f}" for k in ("rmse_mc", "rmse_ws", "rmse_diff")]
            + [f"{v[k][0]:.3f} ± {v[k][1]:.3f}" for k in ("ll_mc", "ll_ws", "ll_diff")]
            + ["{}/{}".format(*v["mc_wins_ll"])]
        )
    heads = ["rate", "RMSE MC", "RMSE WS", "RMSE MC-WS", "LL MC", "LL WS", "LL MC-WS", "MC wins LL"]
    print(common.markdown_table(heads, table))
    lin = [r["rmse_linear"] for r in rows if r["rate"] == rows[0]["rate"]]
    print(f"linear least squares, same splits: RMSE {np.mean(lin):.2f} ± {np.std(lin):.2f}")
    reg = region_std(toy_rows)
    print(
        "toy MC std (mean over seeds): on data {data:.3f}, in the gap {gap:.3f}, "
        "|x| >= 4 {far:.3f}".format(**reg)
    )
    print(f"wrote {a.out}/mc_dropout.csv, toy_1d.csv, mc_dropout.png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
