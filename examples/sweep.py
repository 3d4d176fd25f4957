"""Sweep: dropout rate x decoupled weight decay x seed, one compiled program, resumable.

An MLP that overfits MNIST-1D (generated locally) is trained for every combination of
dropout rate, decoupled weight decay (AdamW as Loshchilov & Hutter wrote it) and seed.
Every model lies on one leading axis (``jax.vmap``), steps run in ``lax.scan`` chunks,
and the grid compiles once: jaxreg takes the rate and the decay as traced arrays. The
model axis is sharded over all devices (of all processes with ``--coordinator``). After
every chunk the state is checkpointed (orbax) into ``<out>/checkpoints/``; started again
with the same arguments, the sweep resumes where it stopped.

Answers: are dropout and weight decay additive, diminishing or cancelling?

Run: python examples/sweep.py        (48 models; see README for the time it takes)
     python examples/sweep.py --smoke (a tiny grid in seconds)
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import jax
import matplotlib
import numpy as np
import orbax.checkpoint as ocp

import jaxreg.optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Arguments that decide the results; a results folder holds one run of one of these.
RESULT_ARGS = (
    "rates",
    "decays",
    "seeds",
    "steps",
    "chunk_steps",
    "dataset",
    "num_samples",
    "train_size",
    "hidden",
    "batch",
    "lr",
)
SMOKE = {
    "rates": [0.0, 0.5],
    "decays": [0.0, 1e-3],
    "seeds": 1,
    "steps": 60,
    "chunk_steps": 20,
    "num_samples": 600,
    "train_size": 200,
    "hidden": 32,
    "batch": 32,
}
COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def parse_args(argv: list[str] | None) -> common.argparse.Namespace:
    p = common.Parser(description=__doc__.splitlines()[0], prog="sweep.py")
    rate_list = common.float_list(low=0.0, high=1.0, high_open=True)
    p.add_argument(
        "--rates",
        type=rate_list,
        default=[0.0, 0.1, 0.3, 0.5],
        help="dropout rates, comma-separated, each in [0, 1) (default 0,0.1,0.3,0.5)",
    )
    p.add_argument(
        "--decays",
        type=common.float_list(low=0.0),
        default=[0.0, 1e-4, 1e-3, 3e-3],
        help="decoupled weight decays (lambda per step), comma-separated, >= 0 "
        "(default 0,1e-4,1e-3,3e-3)",
    )
    p.add_argument("--seeds", type=common.positive_int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--steps", type=common.positive_int, default=2000, help="training steps (2000)")
    p.add_argument(
        "--chunk-steps",
        type=common.positive_int,
        default=100,
        help="steps per compiled chunk, checkpoint and curve point (100)",
    )
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--dataset", choices=common.DATASETS, default="mnist1d")
    p.add_argument(
        "--num-samples",
        type=common.positive_int,
        default=5000,
        help="examples generated (80%% train, 20%% test; default 5000)",
    )
    p.add_argument(
        "--train-size",
        type=common.positive_int,
        default=1000,
        help="training examples used (default 1000: small, so the MLP overfits)",
    )
    p.add_argument("--hidden", type=common.positive_int, default=128, help="hidden width (128)")
    p.add_argument("--batch", type=common.positive_int, default=128, help="batch size (128)")
    p.add_argument("--lr", type=common.positive_float, default=1e-3, help="Adam step size (1e-3)")
    p.add_argument("--smoke", action="store_true", help="a tiny grid in seconds (tests)")
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="multi-process run: the coordinator's address (jax.distributed), or 'auto' "
        "where JAX detects the cluster (SLURM, Cloud TPU)",
    )
    p.add_argument("--num-processes", type=common.positive_int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--chunk-delay", type=float, default=0.0, help=common.argparse.SUPPRESS)
    smoke = "--smoke" in (sys.argv[1:] if argv is None else argv)
    if smoke:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if args.steps % args.chunk_steps:
        p.error(
            f"argument --steps: {args.steps} is not a multiple of --chunk-steps {args.chunk_steps}"
        )
    if args.train_size > int(0.8 * args.num_samples):
        p.error(
            f"argument --train-size: {args.train_size} exceeds the "
            f"{int(0.8 * args.num_samples)} training examples of --num-samples "
            f"{args.num_samples}"
        )
    if not 0 <= args.process_id < args.num_processes:
        p.error(
            f"argument --process-id: must be in [0, {args.num_processes}), got {args.process_id}"
        )
    return args


def check_out_folder(out: str, config: dict) -> None:
    """Refuses to mix runs: ``out`` must be new, or hold a run of the same arguments."""
    path = os.path.join(out, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != config:
            diff = ", ".join(
                f"{k}: {old.get(k)} -> {config.get(k)}"
                for k in sorted(set(old) | set(config))
                if old.get(k) != config.get(k)
            )
            common.fail(
                f"sweep.py: error: --out {out} holds a run with other arguments ({diff}); "
                "pass another --out, or delete the folder to start over."
            )
    elif os.path.isdir(os.path.join(out, "checkpoints")):
        common.fail(
            f"sweep.py: error: --out {out} holds checkpoints but no config.json; "
            "pass another --out, or delete the folder."
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {k: getattr(args, k) for k in RESULT_ARGS}
    if args.coordinator is not None:  # several processes: before any JAX computation
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only
        if args.coordinator == "auto":  # SLURM, Cloud TPU, ...: JAX finds the cluster
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    check_out_folder(args.out, config)  # before any JAX work: a refusal costs nothing
    return run(args, config)


def build(args, mesh):
    g = common.grid(rate=args.rates, decay=args.decays, seed=list(range(args.seeds)))
    num_models = len(g["rate"])
    size = common.padded_size(num_models, mesh)
    hp = common.pad_models(
        {"rate": g["rate"].astype(np.float32), "decay": g["decay"].astype(np.float32)}, size
    )
    seeds = common.pad_models(g["seed"].astype(np.int32), size)
    sizes = (40, args.hidden, args.hidden, 10)
    trainer = common.Trainer(
        init=lambda key: common.init_mlp(key, sizes),
        apply=lambda params, hp, x, key: common.mlp(params, x, key=key, rates=hp["rate"]),
        optimizer=lambda hp: jaxreg.optax.decoupled_adamw(args.lr, weight_decay=hp["decay"]),
        batch_size=args.batch,
        chunk_steps=args.chunk_steps,
        mesh=mesh,
    )
    return g, num_models, hp, seeds, trainer


def run(args, config: dict) -> int:
    lead = jax.process_index() == 0
    out = os.path.abspath(args.out)
    if lead:
        common.write_text(os.path.join(out, "config.json"), json.dumps(config, indent=1) + "\n")

    data = common.load_data(
        args.dataset, num_samples=args.num_samples, train_size=args.train_size, seed=42
    )
    mesh = common.model_mesh()
    g, num_models, hp_host, seeds, trainer = build(args, mesh)
    size = len(seeds)
    hp = trainer.put_models(hp_host)
    x, y, xt, yt = trainer.put_data(data.x_train, data.y_train, data.x_test, data.y_test)
    chunks = args.steps // args.chunk_steps

    state = trainer.init_state(hp_host, seeds)
    curve = np.full((size, chunks, 2), np.nan, np.float32)  # (train loss, test error)
    manager = ocp.CheckpointManager(
        os.path.join(out, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False),
    )
    done = manager.latest_step() or 0
    if done:
        target = {"state": state, "curve": curve}
        restored = manager.restore(done, args=ocp.args.StandardRestore(target))
        state, curve = restored["state"], np.asarray(restored["curve"])
        if lead:
            print(f"resuming from the checkpoint after step {done * args.chunk_steps}", flush=True)

    compile_start = time.perf_counter()
    lowered = trainer.lower_chunk(state, hp, x, y)
    hlo = lowered.compile().as_text()
    found = sorted({c for c in COLLECTIVES if c in hlo})
    if lead:
        print(
            f"{num_models} models on {mesh.size} device(s) in {jax.process_count()} "
            f"process(es); one training program compiled in "
            f"{time.perf_counter() - compile_start:.1f} s; collectives in the training "
            f"step: {', '.join(found) if found else 'none'}",
            flush=True,
        )
    bar = common.progress(
        chunks,
        models=num_models,
        chunk_steps=args.chunk_steps,
        initial=done,
        disable=None if lead else True,
    )
    start = time.perf_counter()
    for c in range(done, chunks):
        state, train_loss = trainer.chunk(state, hp, x, y)
        _, test_acc = trainer.evaluate(state.params, hp, xt, yt)
        curve[:, c, 0] = common.to_host(train_loss)
        curve[:, c, 1] = 1.0 - common.to_host(test_acc)
        manager.save(c + 1, args=ocp.args.StandardSave({"state": state, "curve": curve}))
        manager.wait_until_finished()
        bar.update(1)
        if args.chunk_delay:
            time.sleep(args.chunk_delay)
    bar.close()
    elapsed = time.perf_counter() - start

    train_loss, train_acc = common.to_host(trainer.evaluate(state.params, hp, x, y))
    _, test_acc = common.to_host(trainer.evaluate(state.params, hp, xt, yt))
    steps = common.to_host(state.step)
    if lead:
        rows = [
            {
                "rate": float(g["rate"][i]),
                "decay": float(g["decay"][i]),
                "seed": int(g["seed"][i]),
                "final_train_loss": f"{train_loss[i]:.6g}",
                "train_accuracy": f"{train_acc[i]:.6g}",
                "test_accuracy": f"{test_acc[i]:.6g}",
                "steps": int(steps[i]),
            }
            for i in range(num_models)
        ]
        write_outputs(args, out, g, rows, curve[:num_models], elapsed, chunks - done)
    manager.close()
    return 0


def summarize(args, g, test_error):
    """Mean and std (over seeds) of test error per (rate, decay), and interactions."""

    e = test_error.reshape(len(args.rates), len(args.decays), args.seeds) * 100
    mean, std = e.mean(-1), e.std(-1, ddof=1) if args.seeds > 1 else np.zeros(e.shape[:2])
    # Interaction per seed (models with one seed share init and data order):
    # I = E(r, d) - E(r, 0) - E(0, d) + E(0, 0). 0: additive; > 0: less than the sum.
    inter = e - e[:, :1] - e[:1, :] + e[:1, :1]
    return e, mean, std, inter


def write_outputs(args, out, g, rows, curve, elapsed, chunks_run) -> None:

    common.write_csv(os.path.join(out, "models.csv"), rows)
    curve_rows = [
        {
            "rate": r["rate"],
            "decay": r["decay"],
            "seed": r["seed"],
            "step": (c + 1) * args.chunk_steps,
            "train_loss": f"{curve[i, c, 0]:.6g}",
            "test_error": f"{curve[i, c, 1]:.6g}",
        }
        for i, r in enumerate(rows)
        for c in range(curve.shape[1])
    ]
    common.write_csv(os.path.join(out, "curves.csv"), curve_rows)
    test_error = 1.0 - np.array([float(r["test_accuracy"]) for r in rows])
    train_acc = np.array([float(r["train_accuracy"]) for r in rows])
    e, mean, std, inter = summarize(args, g, test_error)
    tr = train_acc.reshape(e.shape).mean(-1) * 100

    num = len(rows)
    print(
        f"\nMNIST-1D ({args.train_size} training examples), MLP 40-{args.hidden}-"
        f"{args.hidden}-10, AdamW {args.lr:g}, batch {args.batch}, {args.steps} steps; "
        f"{num} models; {chunks_run * args.chunk_steps * num / max(elapsed, 1e-9):.0f} "
        f"model-steps/s this run\n"
    )
    table = []
    best = np.unravel_index(np.argmin(mean), mean.shape)
    for i, rate in enumerate(args.rates):
        for j, decay in enumerate(args.decays):
            mark = " **best**" if (i, j) == best else ""
            table.append(
                [
                    f"{rate:g}",
                    f"{decay:g}",
                    f"{tr[i, j]:.1f}",
                    f"{mean[i, j]:.1f} ± {std[i, j]:.1f}{mark}",
                ]
            )
    print(
        common.markdown_table(
            [
                "dropout rate",
                "weight decay",
                "train acc %",
                f"test error % (mean ± std, {plural(args.seeds, 'seed')})",
            ],
            table,
        )
    )
    print(
        f"\nbest: dropout {args.rates[best[0]]:g}, weight decay {args.decays[best[1]]:g}: "
        f"{mean[best]:.1f} ± {std[best]:.1f}% test error; no regularization: "
        f"{mean[0, 0]:.1f} ± {std[0, 0]:.1f}%"
    )
    if len(args.rates) > 1 and len(args.decays) > 1 and args.rates[0] == args.decays[0] == 0:
        print(interaction_report(args, mean, inter))
    heatmap(args, out, mean, std)
    print(f"\nwrote {out}/models.csv, curves.csv, heatmap.png (checkpoints in {out}/checkpoints)")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def interaction_report(args, mean, inter) -> str:

    n = args.seeds
    lines = [
        "\ninteraction I = E(r,d) - E(r,0) - E(0,d) + E(0,0), test error points, "
        f"mean ± standard error over {plural(n, 'seed')} (0: additive; > 0: diminishing; "
        "cancelling when the pair is no better than the better one alone):"
    ]
    rows = []
    for i in range(1, len(args.rates)):
        for j in range(1, len(args.decays)):
            m = inter[i, j].mean()
            se = inter[i, j].std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
            alone = min(mean[i, 0], mean[0, j])
            rows.append(
                [
                    f"{args.rates[i]:g}",
                    f"{args.decays[j]:g}",
                    f"{mean[0, 0] - mean[i, 0]:+.1f}",
                    f"{mean[0, 0] - mean[0, j]:+.1f}",
                    f"{mean[0, 0] - mean[i, j]:+.1f}",
                    f"{m:+.1f} ± {se:.1f}",
                    "yes" if mean[i, j] < alone else "no",
                ]
            )
    return (
        "\n".join(lines)
        + "\n"
        + common.markdown_table(
            [
                "rate",
                "decay",
                "gain dropout",
                "gain decay",
                "gain both",
                "interaction I",
                "both beat either alone",
            ],
            rows,
        )
    )


def heatmap(args, out, mean, std) -> None:

    fig, ax = plt.subplots(figsize=(1.6 * len(args.decays) + 2.4, 0.8 * len(args.rates) + 2.2))
    im = ax.imshow(mean, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(args.decays)), [f"{d:g}" for d in args.decays])
    ax.set_yticks(range(len(args.rates)), [f"{r:g}" for r in args.rates])
    ax.set_xlabel("decoupled weight decay λ (per step, AdamW)")
    ax.set_ylabel("dropout rate (both hidden layers)")
    lo, hi = float(mean.min()), float(mean.max())
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            dark = (mean[i, j] - lo) > 0.5 * (hi - lo)
            ax.text(
                j,
                i,
                f"{mean[i, j]:.1f}\n± {std[i, j]:.1f}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    bi, bj = np.unravel_index(np.argmin(mean), mean.shape)
    ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, lw=2.5, ec="red"))
    fig.colorbar(im, ax=ax, label="test error (%)")
    ax.set_title(
        f"MNIST-1D, MLP 40-{args.hidden}-{args.hidden}-10, {args.train_size} train "
        f"examples, {args.steps} steps\nmean test error (%) ± std over "
        f"{plural(args.seeds, 'seed')} (red: lowest)",
        fontsize=9,
    )
    fig.tight_layout()
    common.save_figure(fig, os.path.join(out, "heatmap.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
