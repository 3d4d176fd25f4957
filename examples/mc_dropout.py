"""MC dropout vs standard dropout inference (Gal & Ghahramani 2016): RMSE and log-likelihood.

Question: does averaging T dropout-on forward passes (Monte Carlo dropout) predict
better than the usual deterministic pass with dropout off ("standard dropout", weight
scaling), in RMSE and in test log-likelihood, and does its spread grow away from the
data? The paper's UCI table compares MC dropout with VI and PBP, not with weight
scaling; the authors' logs report nearly equal RMSE for MC and standard dropout.

Protocol (after the paper's UCI experiments): a ReLU MLP D-50-1 with dropout on the
inputs and on the hidden layer; weight decay from the length-scale formula
``l**2 (1 - p) / (2 N tau)`` (l = 1e-2); the rate p and the model precision tau chosen
on a VALIDATION split (per split and per inference, by validation log-likelihood); the
MC predictive is the mixture of T Gaussians N(f_t(x), 1/tau) (its log-likelihood a
logsumexp over the T samples), the standard one N(f(x), 1/tau); 20 splits per data set:

* ``diabetes``: scikit-learn's diabetes data (442 patients, 10 features), random splits;
* ``diabetes_shift``: the same data, the test set the 10% of patients furthest along a
  random direction of feature space (one per split): covariate shift, extrapolation;
* ``friedman1``: ``make_friedman1`` (10 features, 5 used, noise sd 0.5), 100 training,
  50 validation and 500 test points per split: small n, low noise, nonlinear.

Every (data set, split) x p x tau model trains in ONE ``jaxreg.grid`` program (the
splits are the grid's per-model ``subsets``). Part 2, a 1-D toy: y = sin(2x) + noise on
[-2, -0.6] and [0.6, 2]; the MC predictive band over [-5, 5] for several seeds.

Run: python examples/mc_dropout.py [--smoke] [--out DIR]
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
import optax

import jaxreg
import jaxreg.grid as jg

HIDDEN = 50
LENGTH_SCALE = 1e-2
DATASETS = ("diabetes", "diabetes_shift", "friedman1")


def make_splits(num_splits: int, smoke: bool):
    """One data table (standardised copies per split) and train/val/test index lists."""
    from sklearn.datasets import load_diabetes, make_friedman1

    xd, yd = load_diabetes(return_X_y=True)
    xs_all = (xd - xd.mean(0)) / xd.std(0)
    xs, ys, subs, meta, offset = [], [], {"train": [], "val": [], "test": []}, [], 0
    for d, name in enumerate(DATASETS):
        for j in range(num_splits):
            rng = np.random.default_rng(1000 * d + j)
            if name == "friedman1":
                n_tr, n_va, n_te = (60, 30, 100) if smoke else (100, 50, 500)
                x, y = make_friedman1(n_tr + n_va + n_te, n_features=10, noise=0.5, random_state=j)
                tr, va, te = np.split(np.arange(len(x)), [n_tr, n_tr + n_va])
            else:
                x, y = xd, yd
                n = len(x)
                if name == "diabetes":
                    perm = rng.permutation(n)
                else:  # test: the 10% furthest along a random direction
                    u = rng.standard_normal(x.shape[1])
                    far = np.argsort(xs_all @ u)[::-1]
                    perm = np.concatenate([far[: n // 10], rng.permutation(far[n // 10 :])])
                te, va, tr = np.split(perm, [n // 10, 2 * (n // 10)])
            xm, xsd, ym, ysd = x[tr].mean(0), x[tr].std(0), y[tr].mean(), y[tr].std()
            xs.append((x - xm) / xsd)
            ys.append((y - ym) / ysd)
            for k, idx in (("train", tr), ("val", va), ("test", te)):
                subs[k].append(idx + offset)
            meta.append({"dataset": d, "split": j, "n_train": len(tr), "y_sd": float(ysd)})
            offset += len(x)
    data = {"x": np.concatenate(xs).astype(np.float32), "y": np.concatenate(ys).astype(np.float32)}
    return data, subs, meta


def forward(params, rate, x, key=None):
    """D-50-1 ReLU MLP; dropout on the inputs and the hidden layer when ``key`` is given."""
    (l1, l2), keys = params, (None, None) if key is None else jax.random.split(key)
    if key is not None:
        x = jaxreg.dropout(keys[0], x, rate=rate)
    h = jax.nn.relu(x @ l1["kernel"] + l1["bias"])
    if key is not None:
        h = jaxreg.dropout(keys[1], h, rate=rate)
    return (h @ l2["kernel"] + l2["bias"])[:, 0]


def gauss_ll(y, mean, tau):
    return -0.5 * tau * jnp.square(y - mean) - 0.5 * jnp.log(2 * jnp.pi) + 0.5 * jnp.log(tau)


def metrics(num_samples: int):
    def ws(params, hp, batch):  # standard dropout: one deterministic pass
        m = forward(params, hp["rate"], batch["x"])
        return jnp.stack([jnp.square(m - batch["y"]), gauss_ll(batch["y"], m, hp["tau"])], 1)

    def mc(params, hp, batch):  # T dropout-on passes, a mixture of T Gaussians
        y, tau = batch["y"], hp["tau"]
        base = jax.random.fold_in(jax.random.key(hp["seed"]), 7)

        def step(carry, t):
            s, s2, lse = carry
            f = forward(params, hp["rate"], batch["x"], jax.random.fold_in(base, t))
            lse = jnp.logaddexp(lse, -0.5 * tau * jnp.square(y - f))
            return (s + f, s2 + f * f, lse), None

        zero = jnp.zeros_like(y)
        (s, s2, lse), _ = jax.lax.scan(
            step, (zero, zero, jnp.full_like(y, -jnp.inf)), jnp.arange(num_samples)
        )
        mean = s / num_samples
        var = jnp.maximum(s2 / num_samples - mean**2, 0.0) + 1 / tau
        ll = lse - jnp.log(num_samples) - 0.5 * jnp.log(2 * jnp.pi) + 0.5 * jnp.log(tau)
        return jnp.stack([jnp.square(mean - y), ll, jnp.sqrt(var)], 1)

    return {"ws": ws, "mc": mc}


def uci(a):
    data, subs, meta = make_splits(a.splits, a.smoke)
    rows = [{"subset": i, "seed": m["split"], "n_train": m["n_train"]} for i, m in enumerate(meta)]
    grid = jg.product(jg.rows(rows, name="split"), rate=a.rates, tau=a.taus)

    def loss(params, hp, batch, key):
        pred = forward(params, hp["rate"], batch["x"], key)
        reg = LENGTH_SCALE**2 * (1 - hp["rate"]) / (2 * hp["n_train"] * hp["tau"])
        return jnp.mean(jnp.square(pred - batch["y"])) + jaxreg.l2_penalty(params, strength=reg)

    trainer = jg.Trainer(
        init=lambda key, hp: common.init_mlp(key, (data["x"].shape[1], HIDDEN, 1)),
        loss=loss,
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=32,
        chunk_steps=a.chunk,
    )
    state = trainer.init_state(grid, data)
    bar = common.progress(a.steps // a.chunk, models=grid.size, chunk_steps=a.chunk, desc="uci")
    state = trainer.train(
        state, data, steps=a.steps, subsets=subs["train"], callback=lambda s, c: bar.update(1)
    )
    bar.close()
    res = {}
    for part in ("val", "test"):
        out = trainer.evaluate(state, data, metrics(a.mc), subsets=subs[part], batch_size=128)
        for inf in ("ws", "mc"):
            res[f"{part}_sq_{inf}"], res[f"{part}_ll_{inf}"] = out[inf][:, 0], out[inf][:, 1]
        res[f"{part}_mc_std"] = out["mc"][:, 2]
    out = []
    for i, r in enumerate(grid.rows()):
        m = meta[r["subset"]]
        row = {"dataset": DATASETS[m["dataset"]], "split": m["split"]}
        row |= {k: float(f"{r[k]:.6g}") for k in ("rate", "tau")}  # float32 -> as given
        for inf in ("mc", "ws"):  # original units: RMSE x sd(y), LL - log sd(y)
            row[f"rmse_{inf}"] = float(np.sqrt(res[f"test_sq_{inf}"][i]) * m["y_sd"])
            row[f"ll_{inf}"] = float(res[f"test_ll_{inf}"][i] - np.log(m["y_sd"]))
            row[f"val_ll_{inf}"] = float(res[f"val_ll_{inf}"][i] - np.log(m["y_sd"]))
        row["mc_std"] = float(res["test_mc_std"][i] * m["y_sd"])
        out.append(row)
    return out


def toy(a, rate=0.1):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-2, -0.6, 20), rng.uniform(0.6, 2, 20)]).astype(np.float32)
    y = (np.sin(2 * x) + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)

    def loss(params, hp, batch, key):
        pred = common.mlp(params, batch["x"], key=key, rates=rate)[:, 0]
        return jnp.mean(jnp.square(pred - batch["y"])) + jaxreg.l2_penalty(params, strength=1e-5)

    trainer = jg.Trainer(
        init=lambda key, hp: common.init_mlp(key, (1, 128, 128, 1)),
        loss=loss,
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=20,
        chunk_steps=a.chunk,
    )
    grid = jg.product(seed=list(range(a.toy_seeds)))
    data = {"x": x[:, None], "y": y}
    state = trainer.train(trainer.init_state(grid, data), data, steps=a.toy_steps)
    gx = np.linspace(-5, 5, 201, dtype=np.float32)

    @jax.jit
    @jax.vmap
    def band(params, seed):  # evaluation only: the curve needs every x, not an average
        def sample(key, xs):
            return common.mlp(params, xs, key=key, rates=rate)[:, 0]

        key = jax.random.fold_in(jax.random.key(seed), 2)
        m, v = jaxreg.mc_predict(key, sample, gx[:, None], num_samples=a.mc)
        return jnp.stack([m, jnp.sqrt(v), common.mlp(params, gx[:, None])[:, 0]], 1)

    params = state.to_host(state.params)
    out = np.asarray(band(params, jnp.arange(a.toy_seeds)))
    mean, std, ws = out[..., 0], out[..., 1], out[..., 2]
    rows = [
        {"seed": s, "x": float(gx[j]), "mc_mean": float(mean[s, j]), "mc_std": float(std[s, j])}
        | {"ws_pred": float(ws[s, j])}
        for s in range(a.toy_seeds)
        for j in range(len(gx))
    ]
    return rows, (x, y, gx, mean, std, ws)


def region_std(rows):
    """Mean MC std over seeds in three x regions: on the data, in the gap, far outside."""
    x = np.array([r["x"] for r in rows])
    sd = np.array([r["mc_std"] for r in rows])
    regions = {"data": (np.abs(x) >= 0.6) & (np.abs(x) <= 2), "gap": np.abs(x) < 0.3}
    regions["far"] = np.abs(x) >= 4
    return {k: float(sd[m].mean()) for k, m in regions.items()}


def select(rows, dataset, rate=None):
    """Per split and inference: the (rate, tau) of best validation LL; the test values there.

    Returns {inference: {"rmse": [...], "ll": [...], "rate": [...], "tau": [...]}} over splits.
    """
    sel = [r for r in rows if r["dataset"] == dataset and (rate is None or r["rate"] == rate)]
    out = {}
    for inf in ("mc", "ws"):
        cols = {"rmse": [], "ll": [], "rate": [], "tau": []}
        for j in sorted({r["split"] for r in sel}):
            cand = [r for r in sel if r["split"] == j]
            best = max(cand, key=lambda r: r[f"val_ll_{inf}"])
            for k in ("rmse", "ll"):
                cols[k].append(best[f"{k}_{inf}"])
            cols["rate"].append(best["rate"])
            cols["tau"].append(best["tau"])
        out[inf] = cols
    return out


def summarise(rows, rates):
    """Table rows: per data set, the validation-chosen (p, tau) and each fixed p."""
    table, plot_data = [], {}
    for d in DATASETS:
        for rate in [None, *rates]:
            s = select(rows, d, rate)
            mc, ws = s["mc"], s["ws"]
            drmse, dll = st.paired(mc["rmse"], ws["rmse"]), st.paired(mc["ll"], ws["ll"])
            plot_data[d, rate] = (np.subtract(mc["ll"], ws["ll"]), dll)
            table.append(
                [
                    d,
                    "chosen" if rate is None else f"{rate:g}",
                    st.mean_sd(mc["rmse"], ".3g"),
                    st.mean_sd(ws["rmse"], ".3g"),
                    drmse.format(1, "+.3g") + " " + drmse.verdict("MC lower", "MC higher"),
                    st.mean_sd(mc["ll"], ".3f"),
                    st.mean_sd(ws["ll"], ".3f"),
                    dll.format(1, "+.3f")
                    + f" t={dll.mean / dll.se:+.1f} "
                    + dll.verdict("MC worse", "MC better"),
                ]
            )
    return table, plot_data


def plot(plot_data, rates, toy_data, path, n_splits):
    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    ax = axes[0]
    labels = ["chosen", *[f"{r:g}" for r in rates]]
    for k, d in enumerate(DATASETS):
        for i, rate in enumerate([None, *rates]):
            diffs, p = plot_data[d, rate]
            xpos = i + 0.25 * (k - 1)
            ax.plot(np.full(len(diffs), xpos), diffs, ".", color=f"C{k}", alpha=0.3)
            ax.errorbar(
                xpos,
                p.mean,
                yerr=[[p.mean - p.low], [p.high - p.mean]],
                color=f"C{k}",
                marker="o",
                capsize=3,
                label=d if i == 0 else None,
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(*np.clip(ax.get_ylim(), -3, 3))
    ax.set_xlabel("dropout rate p (chosen: p and tau chosen on validation per split)")
    ax.set_ylabel("test log-lik., MC minus standard (nats/point)")
    ax.set_title(f"paired difference over {n_splits} splits (mean, 95% t interval)")
    ax.legend(fontsize=8)
    x, y, gx, mean, std, ws = toy_data
    ax = axes[1]
    ax.fill_between(gx, mean[0] - 2 * std[0], mean[0] + 2 * std[0], alpha=0.3, label="MC ± 2 std")
    ax.plot(gx, mean[0], color="C0", label="MC mean")
    ax.plot(gx, ws[0], "--", color="C1", label="standard dropout")
    ax.plot(x, y, "k.", ms=4, label="training data")
    ax.set(ylim=(-4, 4), xlabel="x", ylabel="y", title="1-D toy: MC dropout band (seed 0)")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[2]
    for i in range(len(std)):
        ax.plot(gx, std[i], color="C0", alpha=0.5, lw=1, label="one seed" if i == 0 else None)
    ax.plot(gx, std.mean(0), color="k", lw=2, label=f"mean of {len(std)} seeds")
    for lo, hi in ((-2, -0.6), (0.6, 2)):
        ax.axvspan(lo, hi, color="grey", alpha=0.15)
    ax.set(xlabel="x (grey: training data)", ylabel="MC predictive std (y units)")
    ax.set_title("1-D toy: MC std vs distance from data")
    ax.legend(fontsize=8)
    fig.suptitle("MC dropout vs standard dropout inference (after Gal & Ghahramani 2016)")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = common.example_parser(__doc__, "mc_dropout")
    p.add_argument("--splits", type=common.positive_int, default=20)
    p.add_argument("--steps", type=common.positive_int, default=1000)
    p.add_argument("--mc", type=common.positive_int, default=100, help="MC samples T")
    rate_list = common.float_list(low=0.0, high=1.0, high_open=True)
    p.add_argument("--rates", type=rate_list, default=[0.01, 0.05, 0.1, 0.2, 0.5])
    p.add_argument("--taus", type=common.float_list(low=0.0), default=[0.5, 2, 8, 32, 128])
    a = p.parse_args(argv)
    a.chunk, a.toy_seeds, a.toy_steps = 500, 5, 3000
    if a.smoke:
        a.splits, a.steps, a.rates, a.taus, a.mc = 2, 100, [0.05, 0.5], [1.0, 8.0], 20
        a.chunk, a.toy_seeds, a.toy_steps = 50, 2, 100
    t0 = time.time()
    rows = uci(a)
    toy_rows, toy_data = toy(a)
    common.write_csv(os.path.join(a.out, "mc_dropout.csv"), rows)
    common.write_csv(os.path.join(a.out, "toy_1d.csv"), toy_rows)
    table, plot_data = summarise(rows, a.rates)
    plot(plot_data, a.rates, toy_data, os.path.join(a.out, "mc_dropout.png"), a.splits)
    heads = ["data", "p", "RMSE MC", "RMSE std.", "RMSE MC-std [95% CI]", "LL MC", "LL std."]
    print(common.markdown_table([*heads, "LL MC-std [95% CI]"], table))
    for d in DATASETS:
        s = select(rows, d)
        print(
            f"{d}: validation-chosen p (MC) {np.round(s['mc']['rate'], 3).tolist()}, "
            f"tau {s['mc']['tau']}"
        )
    reg = region_std(toy_rows)
    print(
        "toy MC std (mean over seeds): on data {data:.3f}, in the gap {gap:.3f}, "
        "|x| >= 4 {far:.3f}".format(**reg)
    )
    print(f"wrote {a.out}/mc_dropout.csv, toy_1d.csv, mc_dropout.png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
