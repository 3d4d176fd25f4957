"""Dropout before batch normalisation: the variance shift (Li et al. 2019), measured.

Question (seeds: dropout "can conflict with batch normalization"): when dropout feeds a
batch-norm layer, BN's population statistics are collected with dropout on, but at
inference dropout is off, so the variance BN divides by no longer matches its input
(Li et al.'s "variance shift"). How large is that mismatch, does it cost test error,
and does placing dropout only after the last BN layer, or re-estimating the BN
statistics with dropout off, remove the cost?

Model: MLP on MNIST-1D, 3 blocks Dense(128) -> BN -> ReLU, then Dense(10). Placements:
"before BN": dropout after every block (blocks 1 and 2 feed the next block's BN);
"after BN": dropout only after the last block (no BN follows it); "none". BN statistics
for inference: the mean and variance of each BN input over the training set in training
mode (dropout on: what running averages estimate), or re-estimated with dropout off.
All placements, rates and seeds train as one vmapped program (rates are traced).

Run: python examples/dropout_batchnorm.py [--smoke] [--out DIR]
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

WIDTH, BLOCKS = 128, 3


def init(key):
    keys = jax.random.split(key, 2)
    dense = common.init_mlp(keys[0], (40,) + (WIDTH,) * BLOCKS + (10,))
    return {"dense": dense, "bn": [common.init_batch_norm(WIDTH) for _ in range(BLOCKS)]}


def net(params, x, *, key, rates, stats=None):
    """Logits, the BN statistics used, and the BN inputs' per-unit variance.

    ``rates``: (BLOCKS,) dropout rates after each block's ReLU. ``key=None``: no dropout.
    ``stats=None``: batch statistics (training mode).
    """
    keys = [None] * BLOCKS if key is None else list(jax.random.split(key, BLOCKS))
    used, in_var = [], []
    for b in range(BLOCKS):
        layer = params["dense"][b]
        u = x @ layer["kernel"] + layer["bias"]
        in_var.append(jnp.var(u, axis=0))
        h, st = common.batch_norm(params["bn"][b], u, stats=None if stats is None else stats[b])
        used.append(st)
        x = jax.nn.relu(h)
        if keys[b] is not None:
            x = jaxreg.dropout(keys[b], x, rate=rates[b])
    out = params["dense"][-1]
    return x @ out["kernel"] + out["bias"], used, in_var


def settings(rates):
    out = [("none", 0.0, (0.0,) * BLOCKS)]
    out += [("before BN", r, (r,) * BLOCKS) for r in rates]
    out += [("after BN", r, (0.0,) * (BLOCKS - 1) + (r,)) for r in rates]
    return out


def main(argv=None):
    p = common.example_parser(__doc__, "dropout_batchnorm")
    p.add_argument("--seeds", type=common.positive_int, default=3)
    p.add_argument("--steps", type=common.positive_int, default=2000)
    p.add_argument(
        "--rates",
        type=common.float_list(low=0.0, high=1.0, high_open=True),
        default=[0.1, 0.3, 0.5],
    )
    a = p.parse_args(argv)
    chunk, num_samples = 250, 5000
    if a.smoke:  # a small MNIST-1D (generating it is a good part of a smoke run)
        a.seeds, a.steps, a.rates, chunk, num_samples = 1, 40, [0.5], 40, 1000
    t0 = time.time()
    data = common.load_data(num_samples=num_samples)
    sets = settings(a.rates)
    g = common.grid(setting=np.arange(len(sets)), seed=np.arange(a.seeds))
    hp = {"rates": np.array([sets[i][2] for i in g["setting"]], np.float32)}
    trainer = common.Trainer(
        init=init,
        apply=lambda params, hp, x, key: net(params, x, key=key, rates=hp["rates"])[0],
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
    )
    state = trainer.init_state(hp, seeds=g["seed"])
    xtr, ytr = trainer.put_data(data.x_train, data.y_train)
    bar = common.progress(a.steps // chunk, models=len(g["seed"]), chunk_steps=chunk)
    for _ in range(a.steps // chunk):
        state, _ = trainer.chunk(state, hp, xtr, ytr)
        bar.update(1)
    bar.close()

    x_train, x_test, y_test = (jnp.asarray(v) for v in (data.x_train, data.x_test, data.y_test))

    @jax.jit
    @jax.vmap
    def measure(params, rates, seed):
        key = jax.random.fold_in(jax.random.key(seed), 4)
        # Population statistics over the training set, dropout on (training mode) ...
        _, train_stats, _ = net(params, x_train, key=key, rates=rates)
        # ... and re-estimated with dropout off.
        _, test_stats, _ = net(params, x_train, key=None, rates=rates)
        out = {}
        for name, st in (("train_stats", train_stats), ("recomputed", test_stats)):
            logits, _, _ = net(params, x_test, key=None, rates=rates, stats=st)
            out[f"test_error_{name}"] = 1.0 - (jnp.argmax(logits, -1) == y_test).mean()
        # Li et al.'s shift: the inference-time variance of each BN input over the variance
        # BN divides by (its training-mode population variance), both on the training set
        # so that only dropout differs.
        _, _, in_var = net(params, x_train, key=None, rates=rates, stats=train_stats)
        ratios = [jnp.median(v / (s[1] + 1e-5)) for v, s in zip(in_var, train_stats, strict=True)]
        out["shift"] = jnp.stack(ratios)
        return out

    res = common.to_host(measure(state.params, jnp.asarray(hp["rates"]), jnp.asarray(g["seed"])))
    rows = []
    for i in range(len(g["seed"])):
        name, rate, _ = sets[g["setting"][i]]
        row = {"placement": name, "rate": rate, "seed": int(g["seed"][i])}
        row["test_error_train_stats"] = float(res["test_error_train_stats"][i])
        row["test_error_recomputed"] = float(res["test_error_recomputed"][i])
        for b in range(BLOCKS):
            row[f"var_ratio_bn{b + 1}"] = float(res["shift"][i, b])
        rows.append(row)
    common.write_csv(os.path.join(a.out, "dropout_batchnorm.csv"), rows)
    plot(rows, os.path.join(a.out, "dropout_batchnorm.png"))
    report(rows)
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def groups(rows):
    keys = list(dict.fromkeys((r["placement"], r["rate"]) for r in rows))
    return {k: [r for r in rows if (r["placement"], r["rate"]) == k] for k in keys}


def ms(sel, k, scale=1.0, fmt="{:.1f} ± {:.1f}"):
    v = np.array([r[k] for r in sel]) * scale
    return fmt.format(v.mean(), v.std())


def report(rows):
    table = []
    for (name, rate), sel in groups(rows).items():
        table.append(
            [name, f"{rate:g}"]
            + [ms(sel, f"var_ratio_bn{b + 1}", fmt="{:.3f} ± {:.3f}") for b in range(BLOCKS)]
            + [ms(sel, "test_error_train_stats", 100), ms(sel, "test_error_recomputed", 100)]
        )
    heads = ["placement", "rate"] + [f"var ratio BN{b + 1}" for b in range(BLOCKS)]
    heads += ["test err % (train-mode stats)", "test err % (stats re-estimated)"]
    print(common.markdown_table(heads, table))


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    gr = groups(rows)
    ax = axes[0]
    labels = [f"{n} {r:g}" if n != "none" else "none" for n, r in gr]
    width = 0.8 / BLOCKS
    for b in range(BLOCKS):
        for j, sel in enumerate(gr.values()):
            v = [r[f"var_ratio_bn{b + 1}"] for r in sel]
            x = j + (b - (BLOCKS - 1) / 2) * width
            ax.bar(
                x,
                np.mean(v),
                width,
                color=f"C{b}",
                alpha=0.6,
                label=f"BN{b + 1} input" if j == 0 else None,
            )
            ax.plot(np.full(len(v), x), v, "k.", ms=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=25, fontsize=8)
    ax.set_ylabel("inference variance / BN's stored variance\n(median over units; 1 = no shift)")
    ax.set_title("variance shift at each BN input (dots: seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    none = [r["test_error_train_stats"] * 100 for r in rows if r["placement"] == "none"]
    ax.axhspan(min(none), max(none), color="grey", alpha=0.3, label="no dropout (seed range)")
    for j, placement in enumerate(("before BN", "after BN")):
        for k, (col, style, lab) in enumerate(
            (
                ("test_error_train_stats", "-", "train-mode BN stats"),
                ("test_error_recomputed", "--", "BN stats re-estimated, dropout off"),
            )
        ):
            keys = [k_ for k_ in gr if k_[0] == placement]
            rates = np.array([k_[1] for k_ in keys])
            vals = [[r[col] * 100 for r in gr[k_]] for k_ in keys]
            off = (j * 2 + k - 1.5) * 0.006
            ax.errorbar(
                rates + off,
                [np.mean(v) for v in vals],
                yerr=[np.std(v) for v in vals],
                color=f"C{j + 3}",
                ls=style,
                marker="o",
                capsize=3,
                label=f"dropout {placement}, {lab}",
            )
            for rr, v in zip(rates, vals, strict=True):
                ax.plot(np.full(len(v), rr + off), v, ".", color=f"C{j + 3}", alpha=0.4)
    ax.set_xlabel("dropout rate")
    ax.set_ylabel("test error (%) (mean ± std over seeds, dots: seeds)")
    ax.set_title("test error: dropout before vs after BN")
    ax.legend(fontsize=7)
    fig.suptitle("MNIST-1D MLP with batch norm: dropout before vs after BN (Li et al. 2019)")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
