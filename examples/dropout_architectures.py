"""Dropout in recurrent and convolutional nets: which way of dropping works?

The seed text says dropout is "incompatible with certain architectures like RNNs,
LSTMs, CNNs". The literature's answer is that it depends on *how* the mask is drawn:

(a) Recurrent nets. Gal & Ghahramani (2016) argue that a new mask at every time step on
    the recurrent connection injects noise that compounds along the sequence, and that
    one mask per sequence, reused at every step ("variational" dropout), is the right
    form. Here a flax ``OptimizedLSTMCell`` reads MNIST-1D as a sequence and is trained
    with no dropout, with a new mask at every step, and with one mask per sequence, on
    its recurrent connection: the state ``h`` that enters the gates (the cell state
    ``c`` is never masked, as in Gal & Ghahramani's LSTM). The inputs are raw signal
    values, not embeddings, and are not dropped.
(b) Convolutional nets. Tompson et al. (2015) argue that neighbouring conv activations
    are strongly correlated, so dropping single activations barely removes information,
    and drop whole feature maps instead (spatial dropout). A small 1-D CNN is trained
    with no dropout, elementwise dropout (``jaxreg.dropout``) and channel dropout
    (``jaxreg.spatial_dropout``) after each hidden conv layer.

Each method's rate is chosen on a validation split (mean over seeds), the checkpoint on
validation too (the best of the per-chunk evaluations); the test error at those choices
is compared with no dropout as a paired difference over seeds (shared initialisation,
data order and dropout keys). Everything trains through ``jaxreg.grid``: one grid per
architecture, methods x rates x seeds, one compiled program.

Writes ``dropout_architectures.csv`` (one row per model) and ``dropout_architectures.png``
to ``--out``.

Run: python examples/dropout_architectures.py [--smoke] [--out DIR]
"""

from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import (
    cross_entropy,
    example_parser,
    float_list,
    load_data,
    markdown_table,
    matplotlib_pyplot,
    positive_int,
    read_csv,
    save_figure,
    write_csv,
)
from _stats import holm, mean_sd, paired

import jaxreg
import jaxreg.grid as jg

NAME = "dropout_architectures"
ARCHS = {
    "lstm": ("none", "per-step", "variational"),
    "cnn": ("none", "elementwise", "spatial"),
}


def parse_args():
    parser = example_parser(__doc__, NAME)
    parser.add_argument("--rates", type=float_list(low=0, high=1, high_open=True), default=None)
    parser.add_argument("--seeds", type=positive_int, default=None)
    parser.add_argument("--steps", type=positive_int, default=None, help="steps per model")
    parser.add_argument("--replot", action="store_true", help="redo table and plot from CSV")
    args = parser.parse_args()
    defaults = (
        {"rates": [0.25], "seeds": 2, "steps": 40}
        if args.smoke
        else {"rates": [0.05, 0.1, 0.2, 0.4], "seeds": 5, "steps": 2000}
    )
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.rates = sorted(r for r in set(args.rates) if r > 0)
    return args


# ---------------------------------------------------------------------------------------
# Models: one model's parameters and logits (dropout when a key is given)
# ---------------------------------------------------------------------------------------


class LSTM:
    """An LSTM reading the 40 MNIST-1D values as ``steps`` steps of ``40 // steps``."""

    def __init__(self, *, hidden: int, steps: int, classes: int = 10):
        self.cell = nn.OptimizedLSTMCell(features=hidden)
        self.hidden, self.steps, self.classes = hidden, steps, classes

    def init(self, key, hp):
        k1, k2 = jax.random.split(key)
        carry = (jnp.zeros((1, self.hidden)),) * 2
        cell = self.cell.init(k1, carry, jnp.zeros((1, 40 // self.steps)))["params"]
        kernel = jax.random.normal(k2, (self.hidden, self.classes)) / np.sqrt(self.hidden)
        return {"cell": cell, "out": {"kernel": kernel, "bias": jnp.zeros(self.classes)}}

    def logits(self, params, hp, x, key=None):
        b = x.shape[0]
        xs = x.reshape(b, self.steps, -1)  # (batch, time, features)
        rate = hp["rate"]
        if key is None:
            mask_h = jnp.ones((self.steps, b, self.hidden), bool)
        else:
            variational = hp["method"] == 2
            fresh = jaxreg.bernoulli_mask(key, (self.steps, b, self.hidden), rate=rate)
            mask_h = jnp.where(variational, fresh[:1], fresh)  # step 0's mask, reused
        rate = rate if key is not None else 0.0

        def step(carry, inputs):
            c, h = carry
            x_t, m_t = inputs
            h = jaxreg.apply_mask(h, m_t, rate=rate)  # the recurrent connection only
            carry, _ = self.cell.apply({"params": params["cell"]}, (c, h), x_t)
            return carry, None

        carry = (jnp.zeros((b, self.hidden)),) * 2
        (_, h), _ = jax.lax.scan(step, carry, (xs.swapaxes(0, 1), mask_h))
        return h @ params["out"]["kernel"] + params["out"]["bias"]


def conv1d(x, kernel, stride):
    """1-D convolution, SAME padding, channels last, as one matmul over patches.

    ``(batch, width, cin) x (k, cin, cout) -> (batch, ceil(width / stride), cout)``;
    equals ``lax.conv_general_dilated`` but stays a plain (batched) matmul under
    ``jax.vmap``, which is much faster on a CPU than a vmapped convolution.
    """
    k, width = kernel.shape[0], x.shape[1]
    out = -(-width // stride)
    pad = max((out - 1) * stride + k - width, 0)
    x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
    patches = jnp.stack([x[:, j : j + (out - 1) * stride + 1 : stride] for j in range(k)], 2)
    return patches.reshape(*patches.shape[:2], -1) @ kernel.reshape(-1, kernel.shape[-1])


class CNN:
    """Conv1d(k5, c) -> Conv1d(k5, c, /2) -> Conv1d(k3, c, /2) -> dense; ReLU, SAME.

    Dropout (elementwise or spatial) after each of the three conv layers.
    """

    def __init__(self, *, channels: int, classes: int = 10):
        self.channels, self.classes = channels, classes
        self.layers = ((5, 1, channels, 1), (5, channels, channels, 2), (3, channels, channels, 2))

    def init(self, key, hp):
        keys = jax.random.split(key, len(self.layers) + 1)
        params = []
        for k, (width, cin, cout, _) in zip(keys, self.layers, strict=False):
            w = jax.random.normal(k, (width, cin, cout)) * np.sqrt(2.0 / (width * cin))
            params.append({"kernel": w, "bias": jnp.zeros(cout)})
        n = 10 * self.channels  # 40 -> 40 -> 20 -> 10 positions
        w = jax.random.normal(keys[-1], (n, self.classes)) / np.sqrt(n)
        return {"conv": params, "out": {"kernel": w, "bias": jnp.zeros(self.classes)}}

    def logits(self, params, hp, x, key=None):
        h = x[:, :, None]  # (batch, 40, 1): channels last
        keys = jax.random.split(key, len(self.layers)) if key is not None else None
        for i, (layer, (_, _, _, stride)) in enumerate(
            zip(params["conv"], self.layers, strict=True)
        ):
            h = conv1d(h, layer["kernel"], stride)
            h = jax.nn.relu(h + layer["bias"])
            if keys is not None:
                h = jnp.where(
                    hp["method"] == 2,
                    jaxreg.spatial_dropout(keys[i], h, rate=hp["rate"]),  # whole channels
                    jaxreg.dropout(keys[i], h, rate=hp["rate"]),  # single activations
                )
        h = h.reshape(h.shape[0], -1)
        return h @ params["out"]["kernel"] + params["out"]["bias"]


# ---------------------------------------------------------------------------------------
# One architecture's grid
# ---------------------------------------------------------------------------------------


def run_arch(arch, model, data, args, *, learning_rate, chunk, strategy):
    settings = [{"method": 0, "rate": 0.0}] + [
        {"method": m, "rate": r} for m in (1, 2) for r in args.rates
    ]
    grid = jg.product(jg.rows(settings, name="setting"), seed=list(range(args.seeds)))

    def loss(params, hp, batch, key):
        return cross_entropy(model.logits(params, hp, batch["x"], key), batch["y"])

    def error(params, hp, batch):
        wrong = jnp.argmax(model.logits(params, hp, batch["x"]), -1) != batch["y"]
        return wrong.astype(jnp.float32)

    trainer = jg.Trainer(
        init=model.init,
        loss=loss,
        optimizer=lambda hp: optax.adam(optax.cosine_decay_schedule(learning_rate, args.steps)),
        batch_size=64,
        chunk_steps=chunk,
        validation=error,
        strategy=strategy,
    )
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    t0 = time.perf_counter()
    state = trainer.train(
        trainer.init_state(grid, train), train, steps=args.steps, validation_data=val
    )
    m = {"error": error}
    res = {
        "train_err": trainer.evaluate(state, train, m, best=True)["error"],
        "val_err": trainer.evaluate(state, val, m, best=True)["error"],
        "test_err": trainer.evaluate(state, test, m, best=True)["error"],
        "test_err_final": trainer.evaluate(state, test, m)["error"],
        "best_step": state.to_host(state.best_step),
    }
    seconds = time.perf_counter() - t0
    plan = trainer.plan(state, train, validation_data=val)
    names = ARCHS[arch]
    rows = [
        {
            "arch": arch,
            **{k: round(float(v), 5) if isinstance(v, float) else v for k, v in r.items()},
            "method": names[r["method"]],
        }
        for r in grid.rows(**{k: v.tolist() for k, v in res.items()})
    ]
    for r in rows:
        r["rate"] = round(r["rate"], 4)
    return rows, seconds, plan


# ---------------------------------------------------------------------------------------
# Selection on validation, paired comparisons
# ---------------------------------------------------------------------------------------


def per_seed(rows, arch, method, rate, key):
    sel = sorted(
        (r for r in rows if r["arch"] == arch and r["method"] == method and r["rate"] == rate),
        key=lambda r: r["seed"],
    )
    return np.array([r[key] for r in sel])


def summarize(rows, args):
    out = []
    for arch, names in ARCHS.items():
        base = per_seed(rows, arch, "none", 0.0, "test_err")
        chosen = {"none": 0.0}
        for method in names[1:]:
            val = {r: per_seed(rows, arch, method, r, "val_err").mean() for r in args.rates}
            chosen[method] = min(args.rates, key=lambda r: (val[r], r))
        tests = {m: per_seed(rows, arch, m, chosen[m], "test_err") for m in names}
        comps = [(m, "none", paired(tests[m], base)) for m in names[1:]]
        comps.append((names[2], names[1], paired(tests[names[2]], tests[names[1]])))
        adjusted = holm([c[2].p for c in comps])
        for (a, b, d), p_holm in zip(comps, adjusted, strict=True):
            out.append(
                {
                    "arch": arch,
                    "comparison": f"{a} - {b}",
                    "rate_a": chosen[a],
                    "rate_b": chosen[b],
                    "test_err_a": mean_sd(100 * tests[a], ".2f"),
                    "test_err_b": mean_sd(100 * tests[b], ".2f"),
                    "diff_pp": d.format(100),
                    "mean": d.mean,
                    "low": d.low,
                    "high": d.high,
                    "p": d.p,
                    "p_holm": float(p_holm),
                    "verdict": "inconclusive" if p_holm >= 0.05 else d.verdict(),
                }
            )
    return out


def plot(rows, summary, args, path):
    plt = matplotlib_pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    titles = {"lstm": "LSTM (sequence)", "cnn": "1-D CNN"}
    for col, (arch, names) in enumerate(ARCHS.items()):
        ax = axes[0, col]
        base = per_seed(rows, arch, "none", 0.0, "val_err")
        ax.axhline(100 * base.mean(), color="k", ls="--", label="none (mean)")
        ax.axhspan(100 * base.min(), 100 * base.max(), color="k", alpha=0.08)
        for i, method in enumerate(names[1:]):
            v = np.array([per_seed(rows, arch, method, r, "val_err") for r in args.rates])
            ax.errorbar(
                np.array(args.rates) + 0.006 * (2 * i - 1),
                100 * v.mean(1),
                yerr=[100 * (v.mean(1) - v.min(1)), 100 * (v.max(1) - v.mean(1))],
                marker="o",
                capsize=3,
                label=method,
                color=f"C{i}",
            )
        ax.set(
            xlabel="dropout rate",
            ylabel="validation error (%)",
            title=f"{titles[arch]}: validation error",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        comps = [s for s in summary if s["arch"] == arch]
        y = np.arange(len(comps))[::-1]
        for yi, s in zip(y, comps, strict=True):
            color = "C3" if s["verdict"] != "inconclusive" else "0.4"
            ax.errorbar(
                100 * s["mean"],
                yi,
                xerr=[[100 * (s["mean"] - s["low"])], [100 * (s["high"] - s["mean"])]],
                fmt="o",
                capsize=4,
                color=color,
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            y,
            [f"{s['comparison']}\n(rates {s['rate_a']:g} vs {s['rate_b']:g})" for s in comps],
            fontsize=8,
        )
        ax.set(
            xlabel="test-error difference, pp (95% paired t interval)",
            title=f"{titles[arch]}: paired differences over {args.seeds} seeds",
        )
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(
        "MNIST-1D: dropout in an LSTM and a CNN. Top: mean, bars and band min-max over "
        "seeds;\nbottom: a - b < 0 means a makes fewer test errors (red: Holm p < 0.05)"
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    if args.smoke:
        data = load_data(num_samples=600, val_size=100)
        lstm, cnn, chunk = LSTM(hidden=8, steps=10), CNN(channels=4), 20
        strategy = "vmap"  # no probe: smoke runs check the plumbing
    else:
        data = load_data(num_samples=10000, train_size=1000, val_size=1000)
        lstm, cnn, chunk = LSTM(hidden=32, steps=10), CNN(channels=16), 250
        strategy = "auto"
    if args.replot:
        rows = [
            {k: v if k in ("arch", "method") else int(v) if k in ("seed", "best_step") else
             float(v) for k, v in r.items()}
            for r in read_csv(os.path.join(args.out, f"{NAME}.csv"))
        ]  # fmt: skip
        args.seeds = len({r["seed"] for r in rows})
        args.rates = sorted({r["rate"] for r in rows} - {0.0})
        return report(rows, args, data, lstm, cnn, ["replotted from CSV"], start)
    rows, notes = [], []
    for arch, model, lr in (("lstm", lstm, 3e-3), ("cnn", cnn, 3e-3)):
        r, seconds, plan = run_arch(
            arch, model, data, args, learning_rate=lr, chunk=chunk, strategy=strategy
        )
        rows += r
        notes.append(f"{arch}: {len(r)} models, {seconds:.0f} s, strategy {plan.strategy}")
    os.makedirs(args.out, exist_ok=True)
    write_csv(os.path.join(args.out, f"{NAME}.csv"), rows)
    report(rows, args, data, lstm, cnn, notes, start)


def report(rows, args, data, lstm, cnn, notes, start):
    summary = summarize(rows, args)
    plot(rows, summary, args, os.path.join(args.out, f"{NAME}.png"))
    print(
        f"MNIST-1D: {len(data.x_train)} training, {len(data.x_val)} validation, "
        f"{len(data.x_test)} test examples; Adam, cosine decay from 3e-3, batch 64, "
        f"{args.steps} steps; LSTM {lstm.hidden} units over {lstm.steps} steps; CNN "
        f"{cnn.channels} channels; rates {args.rates} chosen on validation per method; "
        f"{args.seeds} seeds\n"
    )
    print(
        markdown_table(
            [
                "net",
                "comparison",
                "rates",
                "test err a (%)",
                "test err b (%)",
                "a - b, pp [95% CI] (p)",
                "Holm p",
                "verdict",
            ],
            [
                [
                    s["arch"],
                    s["comparison"],
                    f"{s['rate_a']:g} / {s['rate_b']:g}",
                    s["test_err_a"],
                    s["test_err_b"],
                    s["diff_pp"],
                    f"{s['p_holm']:.2g}",
                    s["verdict"],
                ]
                for s in summary
            ],
        )
    )
    print("\n" + "; ".join(notes))
    print(f"wrote {args.out}/ in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
