"""DropConnect vs dropout vs none on MNIST-1D (Wan et al. 2013), and DropConnect inference.

Questions: (1) does dropping individual weights (DropConnect) regularise an MLP better
than dropping whole units (dropout)? (2) at test time, does the paper's Gaussian
moment-matching inference (Algorithm 2, ``jaxreg.drop_connect_inference``) beat plain
weight scaling (``method="scale"``)? A Monte Carlo average over DropConnect masks
(``jaxreg.mc_predict``) is the reference both approximate.

Model: MLP 40-256-256-10 on 1000 MNIST-1D training examples (it overfits). Dropout drops
the outputs of both hidden layers; DropConnect drops entries of the two matrices those
outputs feed (layers 2 and 3), with one mask per example as in the paper
(``drop_connect_dense(per_example=True)``). Moment-matching inference runs at both
DropConnect layers: at layer 2 through the ReLU, at layer 3 (the logits) through the
softmax, averaging the softmax over Gaussian samples of the pre-activation (Algorithm 2).
Every setting and seed is one model of one ``jaxreg.grid`` program (traced rates); models
sharing a seed share initialisation, data order and keys, so comparisons are paired. The
rate of each method and each model's step are chosen on a validation split.

Run: python examples/dropconnect_vs_dropout.py [--smoke] [--out DIR]
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

SIZES = (40, 256, 256, 10)
METHODS = ("scale", "moments", "mc")


def forward(params, hp, x, key=None, *, per_example=True, dropconnect=True):
    """Logits; ``key=None``: no noise (weight-scaling inference: masks are inverted).
    ``dropconnect=False`` (static) leaves layers 2 and 3 plain: the none and dropout
    models train in a program of their own and never draw DropConnect masks."""
    l1, l2, l3 = params
    h = jax.nn.relu(x @ l1["kernel"] + l1["bias"])
    if key is None:
        h = jax.nn.relu(h @ l2["kernel"] + l2["bias"])
        return h @ l3["kernel"] + l3["bias"]
    k = jax.random.split(key, 4)
    dc = dict(rate=hp["dc"], per_example=per_example)

    def dense(k, h, layer):
        if dropconnect:
            return jaxreg.drop_connect_dense(k, h, layer["kernel"], layer["bias"], **dc)
        return h @ layer["kernel"] + layer["bias"]

    h = jaxreg.dropout(k[0], h, rate=hp["drop"])
    h = jax.nn.relu(dense(k[1], h, l2))
    h = jaxreg.dropout(k[2], h, rate=hp["drop"])
    return dense(k[3], h, l3)


def nll_err(probs, y):
    """Per-example (NLL, 0/1 error) as a (batch, 2) array."""
    nll = -jnp.log(jnp.take_along_axis(probs, y[:, None], 1)[:, 0] + 1e-12)
    return jnp.stack([nll, (jnp.argmax(probs, -1) != y).astype(jnp.float32)], -1)


def eval_key(hp, i):
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(hp["seed"]), 3), i)


def scale(params, hp, batch):
    return nll_err(jax.nn.softmax(forward(params, hp, batch["x"])), batch["y"])


def make_metrics(z, mc):
    def moments(params, hp, batch):  # Algorithm 2 at both DropConnect layers
        l1, l2, l3 = params
        k2, k3 = jax.random.split(eval_key(hp, 0))
        h = jax.nn.relu(batch["x"] @ l1["kernel"] + l1["bias"])
        kw = dict(rate=hp["dc"], num_samples=z, method="moments")
        h = jaxreg.drop_connect_inference(
            k2, h, l2["kernel"], l2["bias"], activation=jax.nn.relu, **kw
        )
        probs = jaxreg.drop_connect_inference(
            k3, h, l3["kernel"], l3["bias"], activation=jax.nn.softmax, **kw
        )
        return nll_err(probs, batch["y"])

    def monte_carlo(params, hp, batch):  # one mask per sample, shared by the batch
        def sample(k, x):
            return jax.nn.softmax(forward(params, {**hp, "drop": 0.0}, x, k, per_example=False))

        mean, _ = jaxreg.mc_predict(
            eval_key(hp, 1), sample, batch["x"], num_samples=mc, chunk_size=8
        )
        return nll_err(mean, batch["y"])

    return {"scale": scale, "moments": moments, "mc": monte_carlo}


def validation(params, hp, batch):
    return scale(params, hp, batch)[:, 0]  # NLL, weight-scaling inference


def main(argv=None):
    p = common.example_parser(__doc__, "dropconnect_vs_dropout")
    p.add_argument("--seeds", type=common.positive_int, default=5)
    p.add_argument("--steps", type=common.positive_int, default=3000)
    p.add_argument("--train-size", type=common.positive_int, default=1000)
    p.add_argument("--val-size", type=common.positive_int, default=1000)
    rates = common.float_list(low=0.0, high=1.0, high_open=True)
    p.add_argument("--rates", type=rates, default=[0.25, 0.5])
    a = p.parse_args(argv)
    chunk, mc, z, num_samples, batch = 250, 200, 1000, 5000, 128
    if a.smoke:  # a small MNIST-1D (generating it is a good part of a smoke run)
        a.seeds, a.steps, a.rates, a.train_size, a.val_size = 1, 40, [0.5], 300, 100
        chunk, mc, z, num_samples, batch = 20, 8, 16, 1000, 32
    t0 = time.time()
    d = common.load_data(num_samples=num_samples, train_size=a.train_size, val_size=a.val_size)
    train, val = {"x": d.x_train, "y": d.y_train}, {"x": d.x_val, "y": d.y_val}
    test = {"x": d.x_test, "y": d.y_test}
    sets = [{"kind": 0, "drop": 0.0, "dc": 0.0}]
    sets += [{"kind": 1, "drop": r, "dc": 0.0} for r in a.rates]
    dc_sets = [{"kind": 2, "drop": 0.0, "dc": r} for r in a.rates]
    rows, curves = [], []
    for program, dropconnect in ((sets, False), (dc_sets, True)):
        t1 = time.time()
        out, curve = train_program(program, dropconnect, a, (train, val, test), chunk, batch, z, mc)
        print(f"trained {len(out)} models (DropConnect: {dropconnect}) in {time.time() - t1:.0f} s")
        rows += out
        curves.append(curve)
    curve = [(s_, *(np.concatenate([c[j][q] for c in curves]) for q in (1, 2)))
             for j, (s_, _, _) in enumerate(curves[0])]  # fmt: skip
    common.write_csv(os.path.join(a.out, "dropconnect_vs_dropout.csv"), rows)
    common.write_csv(
        os.path.join(a.out, "curves.csv"),
        [
            {"step": s, "model": i, "val_nll": float(v[i]), "train_loss": float(lo[i])}
            for s, v, lo in curve
            for i in range(len(rows))
        ],
    )
    summary = report(rows, a.seeds)
    plot(rows, curve, summary, os.path.join(a.out, "dropconnect_vs_dropout.png"))
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def train_program(sets, dropconnect, a, data, chunk, batch, z, mc):
    """Train ``sets`` x seeds as one ``jaxreg.grid`` program. Keys follow the seed alone,
    so models of the two programs that share a seed share initialisation, data order and
    keys: comparisons across programs stay paired. Returns CSV rows and the curve."""
    train, val, test = data
    grid = jg.product(jg.rows(sets, name="setting"), seed=list(range(a.seeds)))
    trainer = jg.Trainer(
        init=lambda key, hp: common.init_mlp(key, SIZES),
        loss=lambda params, hp, b, key: common.cross_entropy(
            forward(params, hp, b["x"], key, dropconnect=dropconnect), b["y"]
        ),
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=batch,
        chunk_steps=chunk,
        strategy="vmap",
        validation=validation,
    )
    curve = []  # (step, validation NLL per model, train loss per model)
    bar = common.progress(a.steps // chunk, models=grid.size, chunk_steps=chunk)

    def after(state, c):
        curve.append(((c + 1) * chunk, state.to_host(state.metric), state.to_host(state.loss)))
        bar.update(1)

    state = trainer.train(
        trainer.init_state(grid, train), train, steps=a.steps, validation_data=val, callback=after
    )
    bar.close()
    best_step = state.to_host(state.best_step)
    metrics = make_metrics(z, mc) if dropconnect else {"scale": scale}
    res = trainer.evaluate(state, test, metrics, best=True, batch_size=50)
    on_val = trainer.evaluate(state, val, {"scale": scale}, best=True)["scale"]
    on_train = trainer.evaluate(state, train, {"scale": scale}, best=True)["scale"]
    kind, drop, dc = (grid.hparams[k] for k in ("kind", "drop", "dc"))
    rows = []
    for i, hp in enumerate(grid.rows()):
        row = {
            "setting": ("none", "dropout", "dropconnect")[int(kind[i])],
            "dropout_rate": float(drop[i]),
            "dropconnect_rate": float(dc[i]),
            "seed": int(hp["seed"]),
            "best_step": int(best_step[i]),
            "train_error": float(on_train[i, 1]),
            "val_nll_scale": float(on_val[i, 0]),
        }
        for m in METHODS:  # moments and MC: DropConnect models only
            row[f"test_nll_{m}"] = float(res[m][i, 0]) if m in res else ""
            row[f"test_error_{m}"] = float(res[m][i, 1]) if m in res else ""
        rows.append(row)
    return rows, curve


def label(row):
    r = row["dropout_rate"] + row["dropconnect_rate"]
    return "none" if row["setting"] == "none" else f"{row['setting']} {r:g}"


def column(rows, lab, key):
    return np.array([r[key] for r in rows if label(r) == lab], np.float64)  # seed order


def report(rows, seeds):
    labels = list(dict.fromkeys(label(r) for r in rows))
    table = []
    for lab in labels:
        line = [lab, st.mean_sd(column(rows, lab, "train_error") * 100, ".1f")]
        line.append(st.mean_sd(column(rows, lab, "val_nll_scale")))
        for m in METHODS:
            if lab.startswith("dropconnect") or m == "scale":
                e, n = column(rows, lab, f"test_error_{m}"), column(rows, lab, f"test_nll_{m}")
                line += [st.mean_sd(e * 100, ".1f"), st.mean_sd(n)]
            else:
                line += ["", ""]
        table.append(line)
    heads = ["setting", "train err %", "val NLL"]
    heads += [f"test {q} ({m})" for m in ("scale", "moments", "MC") for q in ("err %", "NLL")]
    print(common.markdown_table(heads, table))

    # (1) methods at their validation-chosen rate (lowest mean validation NLL over seeds).
    def chosen(prefix):
        cands = [lab for lab in labels if lab.startswith(prefix)]
        return min(cands, key=lambda lab: column(rows, lab, "val_nll_scale").mean())

    dcl, dol = chosen("dropconnect"), chosen("dropout")
    own = {dcl: "moments", dol: "scale", "none": "scale"}  # each method's own inference
    pairs, names = [], []
    for a_, b_ in ((dcl, dol), (dcl, "none"), (dol, "none")):
        for q in ("error", "nll"):
            pairs.append(
                (column(rows, a_, f"test_{q}_{own[a_]}"), column(rows, b_, f"test_{q}_{own[b_]}"))
            )
            names.append(f"{a_} - {b_}: test {q}")
    # (2) inference methods per DropConnect rate.
    for lab in (x for x in labels if x.startswith("dropconnect")):
        for m1, m2 in (("moments", "scale"), ("moments", "mc"), ("scale", "mc")):
            for q in ("error", "nll"):
                pairs.append(
                    (column(rows, lab, f"test_{q}_{m1}"), column(rows, lab, f"test_{q}_{m2}"))
                )
                names.append(f"{lab}: {m1} - {m2} test {q}")
    tests = st.paired_holm(pairs)
    out = []
    for name, t in zip(names, tests, strict=True):
        s = 100.0 if "error" in name else 1.0
        unit = "points" if "error" in name else "nats"
        out.append([name, t.format(s, "+.3f") + f" {unit}", t.verdict()])
    print(f"\nPaired differences over {seeds} seeds, 95% intervals and p Holm-adjusted")
    print(f"over the {len(tests)} comparisons (validation chose {dcl!r} and {dol!r}):")
    print(common.markdown_table(["difference", "mean [interval] (p)", "verdict"], out))
    return list(zip(names, tests, strict=True))


def plot(rows, curve, summary, path):
    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    labels = list(dict.fromkeys(label(r) for r in rows))
    steps = np.array([c[0] for c in curve])
    val = np.stack([c[1] for c in curve])  # (chunks, models)
    ax = axes[0]
    for j, lab in enumerate(labels):
        cols = [i for i, r in enumerate(rows) if label(r) == lab]
        common.plot_band(ax, steps, val[:, cols].T, label=lab, color=f"C{j}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation NLL (weight scaling)")
    ax.set_title("validation NLL (band: min-max over seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for j, lab in enumerate(labels):
        m = "moments" if lab.startswith("dropconnect") else "scale"
        v = column(rows, lab, f"test_error_{m}") * 100
        ax.bar(j, v.mean(), color=f"C{j}", alpha=0.6)
        ax.plot(np.full(len(v), j), v, "k.")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_ylabel("test error (%) at the validation-chosen step")
    ax.set_title("each method with its own inference (dots: seeds)")
    lo = min(column(rows, lab, "test_error_scale").min() for lab in labels) * 100
    ax.set_ylim(max(0.0, lo - 5), None)
    ax = axes[2]
    inf = [(n, t) for n, t in summary if "nll" in n and ": " in n and " - " in n.split(": ")[1]]
    for y, (_n, t) in enumerate(inf):
        ok = np.isfinite(t.low)
        ax.errorbar(
            t.mean,
            y,
            xerr=[[t.mean - t.low], [t.high - t.mean]] if ok else None,
            fmt="o",
            color="C3",
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(inf)), [n.replace(" test nll", "") for n, _ in inf], fontsize=8)
    ax.set_xlabel("test NLL difference (nats), Holm-adjusted 95%")
    ax.set_title("DropConnect inference, paired")
    fig.suptitle("MNIST-1D MLP 40-256-256-10: DropConnect vs dropout (Wan et al. 2013)")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
