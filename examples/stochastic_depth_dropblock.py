"""Stochastic depth and DropBlock on a small residual 1-D CNN (MNIST-1D as a signal).

Questions: (1) stochastic depth (Huang et al. 2016, ``jaxreg.drop_path``): does the
paper's linear schedule (block ``l`` of ``L`` drops its residual branch with probability
``l / L * 0.5``, ``jaxreg.drop_path_rates``) beat one constant rate with the same expected
depth? (2) DropBlock (Ghiasi et al. 2018, ``jaxreg.drop_block``): on convolutional
features, where neighbouring positions are correlated, does dropping contiguous blocks
regularise better than dropping single positions (dropout)?

Model: input (batch, 40, 1); a conv stem (kernel 5, C channels); L residual blocks
``x = relu(x + drop_path(conv(feature_drop(relu(conv(x))))))`` with kernel-3 convs;
flatten; dense 10. ``feature_drop`` is dropout or DropBlock (block 5 of 40 positions, an
independent mask per channel). Every setting and seed is one model of one vmapped
program (the rates are traced; the block size is fixed).

Run: python examples/stochastic_depth_dropblock.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import math
import os
import time

import _common as common
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg

LENGTH, BLOCK = 40, 5


def conv_init(key, k, c_in, c_out, gain=1.0):
    w = jax.random.normal(key, (k, c_in, c_out)) * np.float32(gain * math.sqrt(2.0 / (k * c_in)))
    return {"kernel": w, "bias": jnp.zeros(c_out)}


def conv(p, x):
    """'Same' 1-D convolution as one matmul over shifted copies (im2col).

    Under ``jax.vmap`` over models a ``lax.conv`` becomes a grouped convolution, slow on
    CPU; this form becomes a batched matmul.
    """
    k = p["kernel"].shape[0]
    pad = jnp.pad(x, ((0, 0), ((k - 1) // 2, k // 2), (0, 0)))
    cols = jnp.concatenate([pad[:, i : i + x.shape[1]] for i in range(k)], axis=-1)
    return cols @ p["kernel"].reshape(-1, p["kernel"].shape[-1]) + p["bias"]


def make_init(channels, depth):
    def init(key):
        ks = jax.random.split(key, 2 * depth + 2)
        blocks = [
            # The second conv of each branch starts small, so the net starts near identity.
            {
                "a": conv_init(ks[2 * i], 3, channels, channels),
                "b": conv_init(ks[2 * i + 1], 3, channels, channels, gain=0.2),
            }
            for i in range(depth)
        ]
        head = common.init_mlp(ks[-1], (LENGTH * channels, 10))[0]
        return {"stem": conv_init(ks[-2], 5, 1, channels), "blocks": blocks, "head": head}

    return init


def resnet(params, x, *, key, path_rates, drop, block_drop):
    """Logits for x of shape (batch, 40). ``key=None``: no noise (inverted masks)."""
    depth = len(params["blocks"])
    keys = [None] * depth if key is None else list(jax.random.split(key, depth))
    h = jax.nn.relu(conv(params["stem"], x[:, :, None]))
    for i, blk in enumerate(params["blocks"]):
        u = jax.nn.relu(conv(blk["a"], h))
        if keys[i] is not None:
            k_drop, k_block, k_path = jax.random.split(keys[i], 3)
            u = jaxreg.dropout(k_drop, u, rate=drop)
            u = jaxreg.drop_block(k_block, u, rate=block_drop, block_size=BLOCK)
        branch = conv(blk["b"], u)
        if keys[i] is not None:
            branch = jaxreg.drop_path(k_path, branch, rate=path_rates[i])
        h = jax.nn.relu(h + branch)
    return h.reshape(h.shape[0], -1) @ params["head"]["kernel"] + params["head"]["bias"]


def settings(depth, max_rate, feature_rate):
    linear = np.asarray(jaxreg.drop_path_rates(max_rate, depth), np.float32)
    const = np.full(depth, linear.mean(), np.float32)
    zero = np.zeros(depth, np.float32)
    return [
        ("none", zero, 0.0, 0.0),
        (f"depth linear (max {max_rate:g})", linear, 0.0, 0.0),
        (f"depth constant {linear.mean():.3g}", const, 0.0, 0.0),
        (f"dropout {feature_rate:g}", zero, feature_rate, 0.0),
        (f"DropBlock {feature_rate:g} (block {BLOCK})", zero, 0.0, feature_rate),
    ]


def main(argv=None):
    p = common.example_parser(__doc__, "stochastic_depth_dropblock")
    p.add_argument("--seeds", type=common.positive_int, default=3)
    p.add_argument("--steps", type=common.positive_int, default=2000)
    p.add_argument("--channels", type=common.positive_int, default=16)
    p.add_argument("--depth", type=common.positive_int, default=4)
    p.add_argument("--train-size", type=common.positive_int, default=2000)
    a = p.parse_args(argv)
    chunk, num_samples = 250, 5000
    if a.smoke:  # a small MNIST-1D (generating it is a good part of a smoke run)
        a.seeds, a.steps, a.channels, a.depth, chunk = 1, 30, 8, 2, 30
        a.train_size, num_samples = 500, 1000
    t0 = time.time()
    data = common.load_data(num_samples=num_samples, train_size=a.train_size)
    sets = settings(a.depth, 0.5, 0.1)
    g = common.grid(setting=np.arange(len(sets)), seed=np.arange(a.seeds))
    idx = g["setting"]
    hp = {
        "path": np.stack([sets[i][1] for i in idx]),
        "drop": np.array([sets[i][2] for i in idx], np.float32),
        "block": np.array([sets[i][3] for i in idx], np.float32),
    }

    def apply(params, hp, x, key):
        return resnet(
            params, x, key=key, path_rates=hp["path"], drop=hp["drop"], block_drop=hp["block"]
        )

    trainer = common.Trainer(
        init=make_init(a.channels, a.depth),
        apply=apply,
        optimizer=lambda hp: optax.adam(1e-3),
        batch_size=32,
        chunk_steps=chunk,
    )
    state = trainer.init_state(hp, seeds=g["seed"])
    xtr, ytr, xte, yte = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    curve = []
    bar = common.progress(a.steps // chunk, models=len(idx), chunk_steps=chunk)
    for c in range(a.steps // chunk):
        state, loss = trainer.chunk(state, hp, xtr, ytr)
        _, acc = trainer.evaluate(state.params, hp, xte, yte)
        curve.append(((c + 1) * chunk, 1 - common.to_host(acc), common.to_host(loss)))
        bar.update(1)
    bar.close()
    _, acc_tr = trainer.evaluate(state.params, hp, xtr, ytr)
    acc_tr = common.to_host(acc_tr)
    rows = []
    for i, s in enumerate(idx):
        rows.append(
            {
                "setting": sets[s][0],
                "path_rates": " ".join(f"{r:.3g}" for r in sets[s][1]),
                "dropout_rate": sets[s][2],
                "drop_block_rate": sets[s][3],
                "seed": int(g["seed"][i]),
                "train_error": float(1 - acc_tr[i]),
                "test_error": float(curve[-1][1][i]),
                "best_test_error": float(min(c[1][i] for c in curve)),
            }
        )
    common.write_csv(os.path.join(a.out, "stochastic_depth_dropblock.csv"), rows)
    curve_rows = [
        {
            "step": st,
            "setting": sets[s][0],
            "seed": int(g["seed"][i]),
            "test_error": float(te[i]),
            "train_loss": float(lo[i]),
        }
        for st, te, lo in curve
        for i, s in enumerate(idx)
    ]
    common.write_csv(os.path.join(a.out, "curves.csv"), curve_rows)
    names = [s[0] for s in sets]
    png = os.path.join(a.out, "stochastic_depth_dropblock.png")
    plot(rows, curve, [sets[s][0] for s in idx], names, a, png)
    table = []
    for n in names:
        sel = [r for r in rows if r["setting"] == n]
        table.append(
            [n]
            + [
                f"{np.mean([r[k] for r in sel]) * 100:.1f} ± "
                f"{np.std([r[k] for r in sel]) * 100:.1f}"
                for k in ("train_error", "test_error", "best_test_error")
            ]
        )
    print(
        common.markdown_table(
            ["setting", "train err %", "final test err %", "best test err %"], table
        )
    )
    print(f"wrote {a.out} in {time.time() - t0:.0f} s")


def plot(rows, curve, model_names, names, a, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    steps = np.array([c[0] for c in curve])
    err = np.stack([c[1] for c in curve]) * 100
    ax = axes[0]
    for j, n in enumerate(names):
        cols = [i for i, m in enumerate(model_names) if m == n]
        e = err[:, cols]
        ax.plot(steps, e.mean(1), color=f"C{j}", label=n)
        ax.fill_between(steps, e.min(1), e.max(1), color=f"C{j}", alpha=0.15)
    ax.set_ylim(0, min(100.0, 1.5 * float(err[len(err) // 2 :].max())))  # zoom on the end
    ax.set_xlabel("training step (batch 32)")
    ax.set_ylabel("test error (%)")
    ax.set_title("test error during training (band: min-max over seeds)")
    ax.legend(fontsize=8)
    ax = axes[1]
    for j, n in enumerate(names):
        v = [r["test_error"] * 100 for r in rows if r["setting"] == n]
        ax.bar(j, np.mean(v), color=f"C{j}", alpha=0.6)
        ax.plot(np.full(len(v), j), v, "k.")
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8, ha="right")
    ax.set_ylabel("final test error (%) (dots: seeds)")
    lo = min(r["test_error"] for r in rows) * 100
    ax.set_ylim(max(0.0, lo - 3), None)
    ax.set_title("stochastic depth schedules; DropBlock vs dropout")
    fig.suptitle(
        f"MNIST-1D residual 1-D CNN ({a.depth} blocks, {a.channels} channels, "
        f"{a.train_size} training examples): stochastic depth and DropBlock"
    )
    fig.tight_layout()
    common.save_figure(fig, path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
