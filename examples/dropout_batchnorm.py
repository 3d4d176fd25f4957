"""Dropout before batch normalisation: the variance shift (Li et al. 2019), measured.

Question (seeds: dropout "can conflict with batch normalization"): when dropout feeds a
batch-norm layer, BN's population statistics are collected with dropout on, but at
inference dropout is off, so the variance BN divides by no longer matches its input
(Li et al.'s "variance shift"). How large is that mismatch, does it cost test error,
and does placing dropout after the last BN layer, or re-estimating the BN statistics
with dropout off, remove the cost?

Model: MLP on MNIST-1D, 3 blocks Dense(128) -> BN -> ReLU, then Dense(10). Placements,
each with exactly ONE dropout layer at the same rate (so the arms differ only in where
it sits): "before BN": dropout after block 2 (it feeds block 3's BN); "after BN":
dropout after block 3 (no BN follows it); and "none". BN statistics for inference: the
mean and variance of each BN input over the training set in training mode (dropout on:
what running averages estimate), or re-estimated with dropout off. Every placement,
rate and seed trains as one ``jaxreg.grid`` program (rates are traced); seeds are
shared across settings, so comparisons are paired. The rate of each placement is
chosen on a validation split; the test set only reports.

Run: python examples/dropout_batchnorm.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import _stats
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg
import jaxreg.grid as jg

WIDTH, BLOCKS = 128, 3
RATE_KEYS = tuple(f"rate{b + 1}" for b in range(BLOCKS))  # dropout after block b+1


def init_net(key, hp=None):
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
    """(placement, rate, per-block rates): one dropout layer in each dropout arm."""
    zero = (0.0,) * BLOCKS
    out = [("none", 0.0, zero)]
    out += [("before BN", r, (0.0, r, 0.0)) for r in rates]  # feeds BN3
    out += [("after BN", r, (0.0, 0.0, r)) for r in rates]  # feeds the output layer
    return out


def hp_rates(hp):
    return [hp[k] for k in RATE_KEYS]


def loss_fn(params, hp, batch, key):
    logits, _, _ = net(params, batch["x"], key=key, rates=hp_rates(hp))
    return common.cross_entropy(logits, batch["y"])


def make_measure(train, val, test):
    """Metric functions (scalars per model) for ``Trainer.evaluate`` on ``train``."""

    def measure(params, hp):
        rates = hp_rates(hp)
        key = jax.random.fold_in(jax.random.key(hp["seed"]), 4)
        x_train = train["x"]
        # Population statistics over the training set, dropout on (training mode) ...
        _, train_stats, _ = net(params, x_train, key=key, rates=rates)
        # ... and re-estimated with dropout off.
        _, fixed_stats, _ = net(params, x_train, key=None, rates=rates)
        out = {}
        for split, d in (("val", val), ("test", test)):
            for name, st in (("train_stats", train_stats), ("recomputed", fixed_stats)):
                logits, _, _ = net(params, d["x"], key=None, rates=rates, stats=st)
                out[f"{split}_error_{name}"] = jnp.mean(jnp.argmax(logits, -1) != d["y"])
        # Li et al.'s shift: the inference-time variance of each BN input over the
        # variance BN divides by (its training-mode population variance), both on the
        # training set so that only dropout differs. Median over units.
        _, _, in_var = net(params, x_train, key=None, rates=rates, stats=train_stats)
        for b, (v, s) in enumerate(zip(in_var, train_stats, strict=True)):
            out[f"var_ratio_bn{b + 1}"] = jnp.median(v / (s[1] + 1e-5))
        return out

    names = [f"{s}_error_{m}" for s in ("val", "test") for m in ("train_stats", "recomputed")]
    names += [f"var_ratio_bn{b + 1}" for b in range(BLOCKS)]
    return {n: (lambda p, hp, batch, n=n: measure(p, hp)[n]) for n in names}


def main(argv=None):
    p = common.example_parser(__doc__, "dropout_batchnorm")
    p.add_argument("--seeds", type=common.positive_int, default=5)
    p.add_argument("--steps", type=common.positive_int, default=2000)
    p.add_argument(
        "--rates",
        type=common.float_list(low=0.0, high=1.0, high_open=True),
        default=[0.1, 0.3, 0.5],
    )
    a = p.parse_args(argv)
    chunk, num_samples, val_size = 250, 5000, 1000
    if a.smoke:  # a small MNIST-1D (generating it is a good part of a smoke run)
        a.seeds, a.steps, a.rates, chunk, num_samples, val_size = 1, 40, [0.5], 40, 1000, 200
    a.steps = -(-a.steps // chunk) * chunk
    t0 = time.time()
    data = common.load_data(num_samples=num_samples, val_size=val_size)
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    sets = settings(a.rates)
    rows_grid = jg.rows([dict(zip(RATE_KEYS, r, strict=True)) for _, _, r in sets], name="setting")
    grid = jg.product(rows_grid, seed=list(range(a.seeds)))
    trainer = jg.Trainer(
        init=init_net,
        loss=loss_fn,
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=128,
        chunk_steps=chunk,
        strategy="vmap",
    )
    state = trainer.init_state(grid, train)
    bar = common.progress(a.steps // chunk, models=grid.size, chunk_steps=chunk)
    state = trainer.train(state, train, steps=a.steps, callback=lambda st, c: bar.update(1))
    bar.close()
    res = trainer.evaluate(state, train, make_measure(train, val, test))

    rows = []
    for i in range(grid.size):
        name, rate, _ = sets[i // a.seeds]
        row = {"placement": name, "rate": rate, "seed": i % a.seeds}
        for k in ("test_error_train_stats", "test_error_recomputed"):
            row[k] = round(float(res[k][i]), 5)
        for b in range(BLOCKS):
            row[f"var_ratio_bn{b + 1}"] = round(float(res[f"var_ratio_bn{b + 1}"][i]), 5)
        for k in ("val_error_train_stats", "val_error_recomputed"):
            row[k] = round(float(res[k][i]), 5)
        rows.append(row)
    common.write_csv(os.path.join(a.out, "dropout_batchnorm.csv"), rows)
    comparisons = compare(rows, a.rates)
    common.write_csv(os.path.join(a.out, "comparisons.csv"), comparisons)
    plot(rows, os.path.join(a.out, "dropout_batchnorm.png"))
    report(rows, comparisons, a)
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def groups(rows):
    keys = list(dict.fromkeys((r["placement"], r["rate"]) for r in rows))
    return {k: [r for r in rows if (r["placement"], r["rate"]) == k] for k in keys}


def col(rows, placement, rate, key):
    return np.array(
        [r[key] for r in rows if r["placement"] == placement and r["rate"] == rate], np.float64
    )


def chosen_rate(rows, placement, rates):
    """The rate with the lowest mean validation error (train-mode BN statistics)."""
    return min(rates, key=lambda r: (col(rows, placement, r, "val_error_train_stats").mean(), r))


def compare(rows, rates):
    """Paired differences (test error, percentage points), Holm-corrected as one family."""
    te, rec = "test_error_train_stats", "test_error_recomputed"
    pairs, labels = [], []
    for r in rates:
        pairs.append((col(rows, "before BN", r, te), col(rows, "after BN", r, te)))
        labels.append(f"before BN - after BN, rate {r:g} (train-mode stats)")
        pairs.append((col(rows, "before BN", r, te), col(rows, "before BN", r, rec)))
        labels.append(f"before BN, rate {r:g}: train-mode - re-estimated stats")
    rb, ra = chosen_rate(rows, "before BN", rates), chosen_rate(rows, "after BN", rates)
    pairs.append((col(rows, "before BN", rb, te), col(rows, "after BN", ra, te)))
    labels.append(f"val-chosen: before BN ({rb:g}) - after BN ({ra:g})")
    none = col(rows, "none", 0.0, te)
    pairs.append((col(rows, "before BN", rb, te), none))
    labels.append(f"val-chosen: before BN ({rb:g}) - none")
    pairs.append((col(rows, "after BN", ra, te), none))
    labels.append(f"val-chosen: after BN ({ra:g}) - none")
    out = []
    for label, res in zip(labels, _stats.paired_holm(pairs), strict=True):
        out.append(
            {
                "comparison": label,
                "mean_pp": round(100 * res.mean, 3),
                "low_pp": round(100 * res.low, 3),
                "high_pp": round(100 * res.high, 3),
                "p_holm": round(res.p, 5),
                "n": res.n,
                "verdict": res.verdict("lower", "higher"),
            }
        )
    return out


def report(rows, comparisons, a):
    table = []
    for (name, rate), sel in groups(rows).items():
        table.append(
            [name, f"{rate:g}"]
            + [_stats.mean_sd([r[f"var_ratio_bn{b + 1}"] for r in sel]) for b in range(BLOCKS)]
            + [
                _stats.mean_sd([100 * r[k] for r in sel], ".1f")
                for k in (
                    "val_error_train_stats",
                    "test_error_train_stats",
                    "test_error_recomputed",
                )
            ]
        )
    heads = ["placement", "rate"] + [f"var ratio BN{b + 1}" for b in range(BLOCKS)]
    heads += ["val err %", "test err % (train-mode stats)", "test err % (re-estimated)"]
    print(
        f"MNIST-1D, 3 x (Dense {WIDTH} - BN - ReLU) - Dense 10, Adam 1e-3, {a.steps} steps, "
        f"{a.seeds} seeds (mean ± sd, ddof=1); one dropout layer per dropout arm\n"
    )
    print(common.markdown_table(heads, table))
    print(
        "\nPaired test-error differences, percentage points, 95% intervals "
        "(Holm over the family):\n"
    )
    print(
        common.markdown_table(
            ["comparison", "difference [95% CI]", "p (Holm)", "verdict"],
            [
                [
                    c["comparison"],
                    f"{c['mean_pp']:+.2f} [{c['low_pp']:+.2f}, {c['high_pp']:+.2f}]",
                    f"{c['p_holm']:.2g}",
                    c["verdict"],
                ]
                for c in comparisons
            ],
        )
    )


def plot(rows, path):
    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
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
        for k, (c, style, lab) in enumerate(
            (
                ("test_error_train_stats", "-", "train-mode BN stats"),
                ("test_error_recomputed", "--", "BN stats re-estimated, dropout off"),
            )
        ):
            keys = [k_ for k_ in gr if k_[0] == placement]
            rates = np.array([k_[1] for k_ in keys])
            vals = [[r[c] * 100 for r in gr[k_]] for k_ in keys]
            off = (j * 2 + k - 1.5) * 0.006
            sd = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals]
            ax.errorbar(
                rates + off,
                [np.mean(v) for v in vals],
                yerr=sd,
                color=f"C{j + 3}",
                ls=style,
                marker="o",
                capsize=3,
                label=f"dropout {placement}, {lab}",
            )
            for rr, v in zip(rates, vals, strict=True):
                ax.plot(np.full(len(v), rr + off), v, ".", color=f"C{j + 3}", alpha=0.4)
    ax.set_xlabel("dropout rate (one dropout layer)")
    ax.set_ylabel("test error (%) (mean ± sd over seeds, dots: seeds)")
    ax.set_title("test error: one dropout layer before vs after BN")
    ax.legend(fontsize=7)
    fig.suptitle("MNIST-1D MLP with batch norm: dropout before vs after BN (Li et al. 2019)")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
