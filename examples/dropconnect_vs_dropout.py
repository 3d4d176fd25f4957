"""DropConnect vs dropout vs none on MNIST-1D (Wan et al. 2013), and DropConnect inference.

Questions: (1) does dropping individual weights (DropConnect) regularise an MLP better
than dropping whole units (dropout)? (2) at test time, does the paper's Gaussian
moment-matching inference (``jaxreg.drop_connect_inference(method="moments")``) beat
plain weight scaling (``method="scale"``)? A Monte Carlo average over DropConnect masks
(``jaxreg.mc_predict``) is the reference both approximate.

Model: MLP 40-256-256-10 on 1000 MNIST-1D training examples (it overfits). Dropout drops
the outputs of both hidden layers; DropConnect drops entries of the two matrices those
outputs feed (layers 2 and 3), so both perturb the same weights: dropout a whole row,
DropConnect single entries. One DropConnect mask per minibatch (the paper draws one per
example: batch-size times more random numbers). Every setting and seed is one model of
one vmapped program (the rates are traced arrays).

Run: python examples/dropconnect_vs_dropout.py [--smoke] [--out DIR]
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

SIZES = (40, 256, 256, 10)


def forward(params, x, *, key, drop, dc):
    """Training forward pass: dropout ``drop`` on hidden outputs, DropConnect ``dc`` on W2, W3.

    ``key=None``: no noise (weight-scaling inference for both, since masks are inverted).
    """
    k = [None] * 4 if key is None else list(jax.random.split(key, 4))
    l1, l2, l3 = params
    h = jax.nn.relu(x @ l1["kernel"] + l1["bias"])
    if key is not None:
        h = jaxreg.dropout(k[0], h, rate=drop)
        h = jax.nn.relu(jaxreg.drop_connect_dense(k[1], h, l2["kernel"], l2["bias"], rate=dc))
        h = jaxreg.dropout(k[2], h, rate=drop)
        return jaxreg.drop_connect_dense(k[3], h, l3["kernel"], l3["bias"], rate=dc)
    h = jax.nn.relu(h @ l2["kernel"] + l2["bias"])
    return h @ l3["kernel"] + l3["bias"]


def dc_inference(params, x, *, key, dc, method, num_samples):
    """DropConnect inference through layers 2 (ReLU) and 3 (linear: moments == scale)."""
    l1, l2, l3 = params
    h = jax.nn.relu(x @ l1["kernel"] + l1["bias"])
    h = jaxreg.drop_connect_inference(
        key,
        h,
        l2["kernel"],
        l2["bias"],
        rate=dc,
        activation=jax.nn.relu,
        num_samples=num_samples,
        method=method,
    )
    return h @ l3["kernel"] + l3["bias"]


def settings(rates):
    out = [("none", 0.0, 0.0)]
    out += [("dropout", r, 0.0) for r in rates]
    out += [("dropconnect", 0.0, r) for r in rates]
    return out


def nll_err(probs, y):
    nll = -jnp.log(jnp.take_along_axis(probs, y[:, None], 1)[:, 0] + 1e-12).mean()
    return nll, 1.0 - (jnp.argmax(probs, -1) == y).mean()


def main(argv=None):
    p = common.example_parser(__doc__, "dropconnect_vs_dropout")
    p.add_argument("--seeds", type=common.positive_int, default=4)
    p.add_argument("--steps", type=common.positive_int, default=3000)
    p.add_argument("--train-size", type=common.positive_int, default=1000)
    p.add_argument(
        "--rates", type=common.float_list(low=0.0, high=1.0, high_open=True), default=[0.25, 0.5]
    )
    a = p.parse_args(argv)
    chunk, mc, z, num_samples = 250, 200, 1000, 5000
    if a.smoke:  # a small MNIST-1D (generating it is a good part of a smoke run)
        a.seeds, a.steps, a.rates, a.train_size = 1, 60, [0.5], 500
        chunk, mc, z, num_samples = 30, 8, 16, 1000
    t0 = time.time()
    data = common.load_data(num_samples=num_samples, train_size=a.train_size)
    sets = settings(a.rates)
    g = common.grid(setting=np.arange(len(sets)), seed=np.arange(a.seeds))
    names = [sets[i][0] for i in g["setting"]]
    hp = {
        "drop": np.array([sets[i][1] for i in g["setting"]], np.float32),
        "dc": np.array([sets[i][2] for i in g["setting"]], np.float32),
    }
    trainer = common.Trainer(
        init=lambda key: common.init_mlp(key, SIZES),
        apply=lambda params, hp, x, key: forward(params, x, key=key, drop=hp["drop"], dc=hp["dc"]),
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
    )
    state = trainer.init_state(hp, seeds=g["seed"])
    xtr, ytr, xte, yte = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    curve = []
    bar = common.progress(a.steps // chunk, models=len(names), chunk_steps=chunk)
    for c in range(a.steps // chunk):
        state, _ = trainer.chunk(state, hp, xtr, ytr)
        _, acc = trainer.evaluate(state.params, hp, xte, yte)
        _, acc_tr = trainer.evaluate(state.params, hp, xtr, ytr)
        curve.append(((c + 1) * chunk, 1 - common.to_host(acc), 1 - common.to_host(acc_tr)))
        bar.update(1)
    bar.close()

    # Inference variants, one model at a time (lax.map): the moment method holds
    # num_samples x batch x 256 floats.
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    def infer(args):
        params, dc, seed = args
        key = jax.random.fold_in(jax.random.key(seed), 3)
        k_mom, k_mc = jax.random.split(key)
        out = {}
        out["scale"] = nll_err(
            jax.nn.softmax(forward(params, x_test, key=None, drop=0, dc=0)), y_test
        )
        probs = jax.lax.map(
            lambda xb: jax.nn.softmax(
                dc_inference(params, xb, key=k_mom, dc=dc, method="moments", num_samples=z)
            ),
            x_test.reshape(10, -1, x_test.shape[1]),
        ).reshape(-1, SIZES[-1])
        out["moments"] = nll_err(probs, y_test)

        def sample(k, xs):
            return jax.nn.softmax(forward(params, xs, key=k, drop=0.0, dc=dc))

        mean, _ = jaxreg.mc_predict(k_mc, sample, x_test, num_samples=mc, chunk_size=8)
        out["mc"] = nll_err(mean, y_test)
        return out

    dc_models = np.flatnonzero(hp["dc"] > 0)  # inference variants for DropConnect models only
    dc_params = jax.tree.map(lambda a_: a_[dc_models], state.params)
    res_dc = common.to_host(
        jax.jit(lambda a_: jax.lax.map(infer, a_))(
            (dc_params, jnp.asarray(hp["dc"][dc_models]), jnp.asarray(g["seed"][dc_models]))
        )
    )
    scale = jax.jit(
        jax.vmap(
            lambda params: nll_err(
                jax.nn.softmax(forward(params, x_test, key=None, drop=0, dc=0)), y_test
            )
        )
    )
    res = {m: [np.full(len(names), np.nan), np.full(len(names), np.nan)] for m in ("moments", "mc")}
    res["scale"] = common.to_host(scale(state.params))
    for m in ("moments", "mc"):
        for j in range(2):
            res[m][j][dc_models] = res_dc[m][j]
    rows = []
    for i, name in enumerate(names):
        row = {
            "setting": name,
            "dropout_rate": float(hp["drop"][i]),
            "dropconnect_rate": float(hp["dc"][i]),
            "seed": int(g["seed"][i]),
            "train_error": float(curve[-1][2][i]),
        }
        for m in ("scale", "moments", "mc"):
            for j, k in enumerate(("test_nll", "test_error")):
                v = float(res[m][j][i])  # empty: not a DropConnect model
                row[f"{k}_{m}"] = v if np.isfinite(v) else ""
        rows.append(row)
    common.write_csv(os.path.join(a.out, "dropconnect_vs_dropout.csv"), rows)
    curve_rows = [
        {
            "step": s,
            "model": i,
            "setting": names[i],
            "rate": float(hp["drop"][i] + hp["dc"][i]),
            "seed": int(g["seed"][i]),
            "test_error": float(te[i]),
            "train_error": float(tr[i]),
        }
        for s, te, tr in curve
        for i in range(len(names))
    ]
    common.write_csv(os.path.join(a.out, "curves.csv"), curve_rows)
    plot(rows, curve, names, hp, os.path.join(a.out, "dropconnect_vs_dropout.png"))
    report(rows)
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def label_of(row):
    r = row["dropout_rate"] + row["dropconnect_rate"]
    return "none" if row["setting"] == "none" else f"{row['setting']} {r:g}"


def report(rows):
    labels = list(dict.fromkeys(label_of(r) for r in rows))
    table = []
    for lab in labels:
        sel = [r for r in rows if label_of(r) == lab]

        def ms(k, sel=sel):
            v = np.array([r[k] for r in sel]) * 100
            return f"{v.mean():.1f} ± {v.std():.1f}"

        line = [lab, ms("train_error"), ms("test_error_scale")]
        if sel[0]["setting"] == "dropconnect":
            line += [ms("test_error_moments"), ms("test_error_mc")]
            nll = [np.mean([r[f"test_nll_{m}"] for r in sel]) for m in ("scale", "moments", "mc")]
            line += ["{:.3f} / {:.3f} / {:.3f}".format(*nll)]
        else:
            line += ["", "", ""]
        table.append(line)
    heads = [
        "setting",
        "train err %",
        "test err % (scale)",
        "test err % (moments)",
        "test err % (MC)",
        "test NLL scale / moments / MC",
    ]
    print(common.markdown_table(heads, table))


def plot(rows, curve, names, hp, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    labels = list(dict.fromkeys(label_of(r) for r in rows))
    model_label = [label_of(r) for r in rows]
    steps = np.array([c[0] for c in curve])
    err = np.stack([c[1] for c in curve]) * 100  # (chunks, models)
    ax = axes[0]
    for j, lab in enumerate(labels):
        cols = [i for i, m in enumerate(model_label) if m == lab]
        e = err[:, cols]
        ax.plot(steps, e.mean(1), color=f"C{j}", label=lab)
        ax.fill_between(steps, e.min(1), e.max(1), color=f"C{j}", alpha=0.2)
    ax.set_xlabel("training step (batch 128)")
    ax.set_ylabel("test error (%), weight-scaling inference")
    ax.set_title("test error during training (band: min-max over seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for j, lab in enumerate(labels):
        v = [r["test_error_scale"] * 100 for r in rows if label_of(r) == lab]
        ax.bar(j, np.mean(v), color=f"C{j}", alpha=0.6)
        ax.plot(np.full(len(v), j), v, "k.")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_ylabel("final test error (%) (dots: seeds)")
    ax.set_title("DropConnect vs dropout vs none")
    lo = min(r["test_error_scale"] for r in rows) * 100
    ax.set_ylim(max(0.0, lo - 5), None)
    ax = axes[2]
    dc_labels = [lab for lab in labels if lab.startswith("dropconnect")]
    methods = (("scale", "weight scaling"), ("moments", "moment matching"), ("mc", "MC masks"))
    for j, lab in enumerate(dc_labels):
        for m, (key, name) in enumerate(methods):
            v = [r[f"test_error_{key}"] * 100 for r in rows if label_of(r) == lab]
            x = j * 4 + m
            ax.bar(x, np.mean(v), color=f"C{m + 5}", alpha=0.6, label=name if j == 0 else None)
            ax.plot(np.full(len(v), x), v, "k.")
    ax.set_xticks([j * 4 + 1 for j in range(len(dc_labels))], dc_labels, fontsize=8)
    ax.set_ylabel("final test error (%) (dots: seeds)")
    ax.set_title("DropConnect inference: scale vs moments vs MC")
    if dc_labels:
        lo = min(r["test_error_scale"] for r in rows if r["setting"] == "dropconnect") * 100
        ax.set_ylim(max(0.0, lo - 5), None)
    ax.legend(fontsize=8)
    fig.suptitle("MNIST-1D MLP 40-256-256-10: DropConnect vs dropout (Wan et al. 2013)")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
