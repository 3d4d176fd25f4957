"""Stochastic depth and DropBlock on a residual 1-D CNN with batch norm (MNIST-1D).

Questions: (1) stochastic depth (Huang et al. 2016, ``jaxreg.drop_path``): does the
paper's linear schedule (block ``l`` of ``L`` drops its residual branch with probability
``l / L * 0.5``, ``jaxreg.drop_path_rates``) beat one constant rate with the same expected
depth, and no drop? (2) DropBlock (Ghiasi et al. 2018, ``jaxreg.drop_block``): on
convolutional features, where neighbouring positions are correlated, does dropping
contiguous blocks regularise better than dropping single positions (dropout)?

Model: input (batch, 40, 1); a conv stem (kernel 5, C channels); L residual blocks
``h = relu(fd(h) + drop_path(bn(conv(fd(relu(bn(conv(h))))))))`` with kernel-3 convs,
where ``fd`` (feature drop) is dropout or DropBlock, applied to the residual branch and to
the skip path as Ghiasi et al. do; flatten; dense 10. As in the paper, the feature-drop
rate follows a linear schedule from 0 (keep probability 1) at step 0 to its target at the
last step; the loss reads the step from ``hparams["step"]``. DropBlock is a grid over rate
x block size. The blocks run in one ``lax.scan`` (parameters stacked over depth). Batch
norm uses batch statistics in training and population statistics recomputed on 512
training examples at evaluation. Each family (stochastic depth; dropout; DropBlock of one
block size, a static shape) is one ``jaxreg.grid`` program over its settings x seeds, so
a model computes only its own noise; keys follow the seed alone, so models that share a
seed share initialisation, minibatches and keys across programs and every comparison is
paired. Settings and steps are chosen on a validation split.

Run: python examples/stochastic_depth_dropblock.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import math
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
from scipy import stats as sps

import jaxreg
import jaxreg.grid as jg

LENGTH, BN_EXAMPLES = 40, 512


def conv_init(key, k, c_in, c_out):
    w = jax.random.normal(key, (k, c_in, c_out)) * np.float32(math.sqrt(2.0 / (k * c_in)))
    return {"kernel": w, "bias": jnp.zeros(c_out)}


def conv(p, x):
    """'Same' 1-D convolution as one matmul over shifted copies (im2col): under vmap a
    ``lax.conv`` becomes a grouped convolution, slow on CPU; this is a batched matmul."""
    k = p["kernel"].shape[0]
    pad = jnp.pad(x, ((0, 0), ((k - 1) // 2, k // 2), (0, 0)))
    cols = jnp.concatenate([pad[:, i : i + x.shape[1]] for i in range(k)], axis=-1)
    return cols @ p["kernel"].reshape(-1, p["kernel"].shape[-1]) + p["bias"]


def make_init(channels, depth):
    def block(key):
        ka, kb = jax.random.split(key)
        return {
            "a": conv_init(ka, 3, channels, channels),
            "bn_a": common.init_batch_norm(channels),
            "b": conv_init(kb, 3, channels, channels),
            # bn_b starts small, so each block starts near the identity
            "bn_b": {"scale": jnp.full(channels, 0.2), "bias": jnp.zeros(channels)},
        }

    def init(key, hp):
        k_blocks, k_stem, k_head = jax.random.split(key, 3)
        head = common.init_mlp(k_head, (LENGTH * channels, 10))[0]
        blocks = jax.vmap(block)(jax.random.split(k_blocks, depth))  # stacked over depth
        return {"stem": conv_init(k_stem, 5, 1, channels), "blocks": blocks, "head": head}

    return init


def make_resnet(feature, total_steps):
    """The network of one family of settings. ``feature`` (static) is the feature drop:
    ``None``, ``"dropout"`` or a DropBlock block size; only the depth family
    (``feature=None``) applies ``drop_path``. A program computes only its own noise."""

    def feature_drop(key, x, hp):
        rate = hp["rate"] * jnp.minimum(hp["step"].astype(jnp.float32) / total_steps, 1.0)
        if feature == "dropout":  # the rate ramps linearly from 0 (Ghiasi et al.)
            return jaxreg.dropout(key, x, rate=rate)
        return jaxreg.drop_block(key, x, rate=rate, block_size=feature)

    def resnet(params, hp, x, key=None, stats=None):
        """Logits and the BN statistics used (stacked over blocks); ``key=None``: no
        noise; ``stats=None``: batch statistics (training), else population statistics."""
        depth = params["blocks"]["a"]["kernel"].shape[0]
        keys = None if key is None else jax.random.split(key, depth)

        def block(h, xs):
            blk, path_rate, k, st = xs
            st_a, st_b = (None, None) if st is None else st
            u, s1 = common.batch_norm(blk["bn_a"], conv(blk["a"], h), stats=st_a)
            u, skip = jax.nn.relu(u), h
            if k is not None:
                k_u, k_skip, k_path = jax.random.split(k, 3)
                if feature is not None:  # on the branch and on the skip path (Ghiasi)
                    u, skip = feature_drop(k_u, u, hp), feature_drop(k_skip, skip, hp)
            branch, s2 = common.batch_norm(blk["bn_b"], conv(blk["b"], u), stats=st_b)
            if k is not None and feature is None:
                branch = jaxreg.drop_path(k_path, branch, rate=path_rate)
            return jax.nn.relu(skip + branch), (s1, s2)

        h = jax.nn.relu(conv(params["stem"], x[:, :, None]))
        h, used = jax.lax.scan(block, h, (params["blocks"], hp["path"], keys, stats))
        logits = h.reshape(h.shape[0], -1) @ params["head"]["kernel"] + params["head"]["bias"]
        return logits, used

    return resnet


def families(depth, rates, blocks):
    """``(feature, [(name, path rates, feature-drop rate)])``: one program per family."""
    linear = [float(r) for r in jaxreg.drop_path_rates(0.5, depth)]
    zero, mean = [0.0] * depth, float(np.mean(linear))
    return [
        (None, [("none", zero, 0.0), ("depth linear (max 0.5)", linear, 0.0),
                (f"depth constant {mean:.3g}", [mean] * depth, 0.0)]),
        ("dropout", [(f"dropout {r:g}", zero, r) for r in rates]),
        *[(b, [(f"DropBlock {r:g} block {b}", zero, r) for r in rates]) for b in blocks],
    ]  # fmt: skip


def train_family(feature, sets, a, chunk, data, x_bn):
    """Train one family's settings x seeds as one ``jaxreg.grid`` program; its CSV rows
    and validation curve ``[(step, error per model)]``."""
    train, val, test = data
    grid = jg.product(
        jg.rows([{"index": i, "rate": r} for i, (_, _, r) in enumerate(sets)], name="setting"),
        seed=list(range(a.seeds)),
    )
    path_table = jnp.asarray([p for _, p, _ in sets], jnp.float32)
    resnet = make_resnet(feature, a.steps)

    def with_path(hp):
        return {**hp, "path": path_table[hp["index"]]}

    def loss(params, hp, batch, key):
        logits, _ = resnet(params, with_path(hp), batch["x"], key)
        return common.cross_entropy(logits, batch["y"])

    def error(params, hp, batch):  # population BN statistics, no noise
        _, pop = resnet(params, with_path(hp), x_bn)
        logits, _ = resnet(params, with_path(hp), batch["x"], stats=pop)
        return (jnp.argmax(logits, -1) != batch["y"]).astype(jnp.float32)

    trainer = jg.Trainer(
        init=make_init(a.channels, a.depth), loss=loss, optimizer=lambda hp: optax.adam(1e-3),
        batch_size=32, chunk_steps=chunk, strategy="map", validation=error,
    )  # fmt: skip
    # strategy "map": 26 ms per model-step on 2 cores; vmap over 15 models: 38 ms.
    curve, bar = [], common.progress(a.steps // chunk, models=grid.size, chunk_steps=chunk)

    def after(state, c):
        curve.append(((c + 1) * chunk, state.to_host(state.metric)))
        bar.update(1)

    state = trainer.train(
        trainer.init_state(grid, train), train, steps=a.steps, validation_data=val, callback=after
    )
    bar.close()
    ev = {k: trainer.evaluate(state, v, {"e": error}, best=True)["e"] for k, v in
          (("train", train), ("val", val), ("test", test))}  # fmt: skip
    best_step = state.to_host(state.best_step)
    rows = []
    for i, hp in enumerate(grid.rows()):
        name, path, rate = sets[int(hp["index"])]
        rows.append({
            "setting": name, "path_rates": " ".join(f"{r:.3g}" for r in path),
            "dropout_rate": rate if feature == "dropout" else 0.0,
            "drop_block_rate": rate if isinstance(feature, int) else 0.0,
            "block_size": feature if isinstance(feature, int) else "", "seed": int(hp["seed"]),
            "best_step": int(best_step[i]), "train_error": float(ev["train"][i]),
            "val_error": float(ev["val"][i]), "test_error": float(ev["test"][i]),
        })  # fmt: skip
    return rows, curve


def main(argv=None):
    p = common.example_parser(__doc__, "stochastic_depth_dropblock")
    p.add_argument("--seeds", type=common.positive_int, default=5)
    p.add_argument("--steps", type=common.positive_int, default=2000)
    p.add_argument("--channels", type=common.positive_int, default=16)
    p.add_argument("--depth", type=common.positive_int, default=12)
    p.add_argument("--train-size", type=common.positive_int, default=2000)
    p.add_argument("--val-size", type=common.positive_int, default=1000)
    rates = common.float_list(low=0.0, high=1.0, high_open=True)
    p.add_argument("--rates", type=rates, default=[0.1, 0.2], help="dropout/DropBlock rates")
    p.add_argument("--blocks", type=common.float_list(low=1.0), default=[3, 5, 7])
    a = p.parse_args(argv)
    chunk, num_samples = 200, 5000
    if a.smoke:
        a.seeds, a.steps, a.channels, a.depth, chunk = 1, 20, 8, 2, 10
        a.train_size, a.val_size, num_samples, a.rates, a.blocks = 300, 100, 1000, [0.1], [3]
    t0 = time.time()
    d = common.load_data(num_samples=num_samples, train_size=a.train_size, val_size=a.val_size)
    data = ({"x": d.x_train, "y": d.y_train}, {"x": d.x_val, "y": d.y_val},
            {"x": d.x_test, "y": d.y_test})  # fmt: skip
    x_bn = jnp.asarray(d.x_train[:BN_EXAMPLES])
    rows, curves, names = [], [], []
    for feature, sets in families(a.depth, a.rates, [int(b) for b in a.blocks]):
        t1 = time.time()
        fam_rows, fam_curve = train_family(feature, sets, a, chunk, data, x_bn)
        print(f"trained {len(fam_rows)} models ({sets[0][0]}, ...) in {time.time() - t1:.0f} s")
        rows += fam_rows
        curves.append(fam_curve)
        names += [n for n, _, _ in sets]
    curve = [(s, np.concatenate([c[j][1] for c in curves])) for j, (s, _) in
             enumerate(curves[0])]  # fmt: skip
    common.write_csv(os.path.join(a.out, "stochastic_depth_dropblock.csv"), rows)
    common.write_csv(
        os.path.join(a.out, "curves.csv"),
        [{"step": s_, "setting": rows[i]["setting"], "seed": rows[i]["seed"],
          "val_error": float(v[i])} for s_, v in curve for i in range(len(rows))],
    )  # fmt: skip
    summary = report(rows, names, a)
    plot(rows, curve, names, summary, a, os.path.join(a.out, "stochastic_depth_dropblock.png"))
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def col(rows, name, key):
    return np.array([r[key] for r in rows if r["setting"] == name], np.float64)  # seed order


def report(rows, names, a):
    table = [[n] + [st.mean_sd(col(rows, n, k) * 100, ".1f") for k in
             ("train_error", "val_error", "test_error")] for n in names]  # fmt: skip
    print(common.markdown_table(["setting", "train err %", "val err %", "test err %"], table))

    def chosen(prefix):  # lowest mean validation error over seeds
        return min(
            (n for n in names if n.startswith(prefix)),
            key=lambda n: col(rows, n, "val_error").mean(),
        )

    db, do = chosen("DropBlock"), chosen("dropout")
    lin, const = names[1], names[2]
    comps = [(lin, const), (lin, "none"), (const, "none"), (db, do), (db, "none"), (do, "none")]
    tests = st.paired_holm(
        [(col(rows, x, "test_error"), col(rows, y, "test_error")) for x, y in comps]
    )
    out = []
    for (x, y), t in zip(comps, tests, strict=True):
        n = t.n
        mde = (
            (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * t.se * 100
            if n > 1
            else float("nan")
        )
        verdict = t.verdict() if t.verdict() != "inconclusive" else "inconclusive at this scale"
        out.append([f"{x} - {y}", t.format(100.0), verdict, f"{mde:.2f}"])
    print(f"\nTest-error differences (points), paired over {a.seeds} seeds, Holm-adjusted over "
          f"{len(comps)}; validation chose {db!r} and {do!r}. Detectable: the paired effect "
          "with 80% power at an unadjusted 5% level given the observed spread.")  # fmt: skip
    print(
        common.markdown_table(["difference", "mean [interval] (p)", "verdict", "detectable"], out)
    )
    return [(f"{x} - {y}", t) for (x, y), t in zip(comps, tests, strict=True)]


def plot(rows, curve, names, summary, a, path):
    plt = common.matplotlib_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    steps = np.array([c[0] for c in curve])
    val = np.stack([c[1] for c in curve]) * 100
    ax = axes[0]
    keep = names[:3] + [n for n in names[3:] if n.startswith(("dropout", "DropBlock"))][:2]
    for j, n in enumerate(names):
        cols = [i for i, r in enumerate(rows) if r["setting"] == n]
        if n in keep or n in {s.split(" - ")[0] for s, _ in summary}:
            common.plot_band(ax, steps, val[:, cols].T, label=n, color=f"C{j % 10}")
    ax.set_ylim(0, min(100.0, 1.5 * float(np.nanmax(val[len(val) // 2 :]))))
    ax.set(
        xlabel="training step (batch 32)",
        ylabel="validation error (%)",
        title="validation error (band: min-max over seeds)",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for j, n in enumerate(names):
        v = col(rows, n, "test_error") * 100
        ax.bar(j, v.mean(), color=f"C{j % 10}", alpha=0.6)
        ax.plot(np.full(len(v), j), v, "k.")
    ax.set_xticks(range(len(names)), names, rotation=35, fontsize=7, ha="right")
    ax.set_ylabel("test error (%) at the validation-chosen step")
    ax.set_ylim(max(0.0, min(r["test_error"] for r in rows) * 100 - 3), None)
    ax.set_title("every setting (dots: seeds)")
    ax = axes[2]
    for y, (_n, t) in enumerate(summary):
        ok = np.isfinite(t.low)
        xerr = [[100 * (t.mean - t.low)], [100 * (t.high - t.mean)]] if ok else None
        ax.errorbar(100 * t.mean, y, xerr=xerr, fmt="o", color="C3")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(
        range(len(summary)), [n.replace(" (max 0.5)", "") for n, _ in summary], fontsize=7
    )
    ax.set(xlabel="paired test-error difference (points), Holm-adjusted 95%",
           title="comparisons (validation-chosen settings)")  # fmt: skip
    fig.suptitle(
        f"MNIST-1D residual 1-D CNN with BN ({a.depth} blocks, {a.channels} channels, "
        f"{a.train_size} training examples, {a.steps} steps): stochastic depth and DropBlock"
    )
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
