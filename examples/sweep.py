"""Sweep: dropout rate x decoupled weight decay x seed, one compiled program, resumable.

An MLP that overfits MNIST-1D (generated locally) is trained for every combination of
dropout rate, decoupled weight decay (AdamW as Loshchilov & Hutter wrote it, on the
kernels only: biases are not decayed) and seed, by ``jaxreg.grid``: every model lies on
one leading axis, the rate and the decay are traced per-model values, steps run in
``lax.scan`` chunks, and the grid compiles once. The model axis is sharded over all
devices (of all processes with ``--coordinator``). After every chunk the state is
checkpointed (``jaxreg.grid.Checkpointer``) into ``<out>/checkpoints/``; started again
with the same arguments, the sweep resumes where it stopped.

Answers: are dropout and weight decay additive, diminishing or cancelling? The best
setting is chosen on a validation split and reported with its test error; the
interaction is tested per cell on the error-rate and the log-odds scale, Holm-corrected
over the cells.

Run: python examples/sweep.py        (80 models; see README for the time it takes)
     python examples/sweep.py --smoke (a tiny grid in seconds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import _sweep_report as report
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg
import jaxreg.grid as jg
import jaxreg.optax

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
    "val_size",
    "hidden",
    "batch",
    "lr",
    "decay_biases",
)
SMOKE = {
    "rates": [0.0, 0.5],
    "decays": [0.0, 1e-3],
    "seeds": 2,
    "steps": 60,
    "chunk_steps": 20,
    "num_samples": 600,
    "train_size": 200,
    "val_size": 100,
    "hidden": 32,
    "batch": 32,
}
COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    p.add_argument("--seeds", type=common.positive_int, default=5, help="seeds 0..N-1 (default 5)")
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
        help="examples generated (80%% train pool, 20%% test; default 5000)",
    )
    p.add_argument(
        "--train-size",
        type=common.positive_int,
        default=1000,
        help="training examples used (default 1000: small, so the MLP overfits)",
    )
    p.add_argument(
        "--val-size",
        type=common.positive_int,
        default=1000,
        help="validation examples, held out of the training pool; they choose the "
        "best setting (default 1000)",
    )
    p.add_argument("--hidden", type=common.positive_int, default=128, help="hidden width (128)")
    p.add_argument("--batch", type=common.positive_int, default=128, help="batch size (128)")
    p.add_argument("--lr", type=common.positive_float, default=1e-3, help="Adam step size (1e-3)")
    p.add_argument(
        "--decay-biases",
        action="store_true",
        help="decay the biases too (default: kernels only, jaxreg.kernels_only)",
    )
    p.add_argument("--smoke", action="store_true", help="a tiny grid in seconds (tests)")
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="multi-process run: the coordinator's address (jax.distributed), or 'auto' "
        "where JAX detects the cluster (SLURM, Cloud TPU)",
    )
    p.add_argument("--num-processes", type=common.positive_int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--chunk-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    smoke = "--smoke" in (sys.argv[1:] if argv is None else argv)
    if smoke:
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    if args.steps % args.chunk_steps:
        p.error(
            f"argument --steps: {args.steps} is not a multiple of --chunk-steps {args.chunk_steps}"
        )
    pool = int(0.8 * args.num_samples)
    if args.train_size + args.val_size > pool:
        p.error(
            f"argument --val-size: {args.val_size} validation plus --train-size "
            f"{args.train_size} training examples exceed the {pool} examples of the "
            f"training pool of --num-samples {args.num_samples}"
        )
    if args.batch > args.train_size:
        p.error(f"argument --batch: {args.batch} exceeds --train-size {args.train_size}")
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


def error(params, hp, batch):
    """Per-example 0/1 error without dropout."""
    logits = common.mlp(params, batch["x"])
    return (jnp.argmax(logits, -1) != batch["y"]).astype(jnp.float32)


def nll(params, hp, batch):
    """Per-example cross-entropy without dropout."""
    logits = common.mlp(params, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])


def build(args) -> tuple[jg.Grid, jg.Trainer]:
    """The grid (rate x decay x seed, seed fastest) and its trainer."""
    grid = jg.product(rate=args.rates, decay=args.decays, seed=list(range(args.seeds)))
    sizes = (40, args.hidden, args.hidden, 10)
    decayed = None if args.decay_biases else jaxreg.kernels_only  # None: every leaf

    def init(key, hp):
        return common.init_mlp(key, sizes)

    def loss(params, hp, batch, key):
        logits = common.mlp(params, batch["x"], key=key, rates=hp["rate"])
        return common.cross_entropy(logits, batch["y"])

    def optimizer(hp):
        return jaxreg.optax.decoupled_adamw(args.lr, weight_decay=hp["decay"], where=decayed)

    trainer = jg.Trainer(
        init=init,
        loss=loss,
        optimizer=optimizer,
        batch_size=args.batch,
        chunk_steps=args.chunk_steps,
        strategy="vmap",  # the fastest for this small MLP on CPU; no probe at start
        validation=error,  # recorded after every chunk (curves); no early stopping
    )
    return grid, trainer


def run(args, config: dict) -> int:
    lead = jax.process_index() == 0
    out = os.path.abspath(args.out)
    if lead:
        common.write_text(os.path.join(out, "config.json"), json.dumps(config, indent=1) + "\n")
    data = common.load_data(
        args.dataset,
        num_samples=args.num_samples,
        train_size=args.train_size,
        val_size=args.val_size,
        seed=42,
    )
    train = {"x": data.x_train, "y": data.y_train}
    val = {"x": data.x_val, "y": data.y_val}
    test = {"x": data.x_test, "y": data.y_test}
    grid, trainer = build(args)
    chunks = args.steps // args.chunk_steps

    state = trainer.init_state(grid, train)
    curve = np.full((grid.size, chunks, 3), np.nan, np.float32)  # train loss, val, test error
    try:
        ckpt = jg.Checkpointer(
            os.path.join(out, "checkpoints"),
            fingerprint=trainer.fingerprint(grid, train, extra=config),
        )
        restored = ckpt.restore({"state": state, "curve": curve})
    except ValueError as err:  # another grid's checkpoints (e.g. after a code change)
        common.fail(f"sweep.py: error: {err}")
    done = 0
    if restored is not None:
        (tree, step) = restored
        state, curve, done = tree["state"], np.array(tree["curve"]), step // args.chunk_steps
        if lead:
            print(f"resuming from the checkpoint after step {step}", flush=True)

    compile_start = time.perf_counter()
    hlo = trainer.lower(state, train, validation_data=val).compile().as_text()
    found = sorted({c for c in COLLECTIVES if c in hlo})
    if lead:
        print(
            f"{grid.size} models on {trainer.mesh.size} device(s) in {jax.process_count()} "
            f"process(es); one training program compiled in "
            f"{time.perf_counter() - compile_start:.1f} s; collectives in the training "
            f"step: {', '.join(found) if found else 'none'}",
            flush=True,
        )
    bar = common.progress(
        chunks,
        models=grid.size,
        chunk_steps=args.chunk_steps,
        initial=done,
        disable=None if lead else True,
    )

    def after_chunk(st: jg.GridState, c: int) -> None:
        curve[:, c, 0] = st.to_host(st.loss)
        curve[:, c, 1] = st.to_host(st.metric)
        curve[:, c, 2] = trainer.evaluate(st, test, {"error": error})["error"]
        ckpt.save({"state": st, "curve": curve}, (c + 1) * args.chunk_steps)
        bar.update(1)
        if args.chunk_delay:
            time.sleep(args.chunk_delay)

    start = time.perf_counter()
    state = trainer.train(state, train, steps=args.steps, validation_data=val, callback=after_chunk)
    bar.close()
    elapsed = time.perf_counter() - start

    on_train = trainer.evaluate(state, train, {"loss": nll, "error": error})
    val_error = trainer.evaluate(state, val, {"error": error})["error"]
    test_error = trainer.evaluate(state, test, {"error": error})["error"]
    steps = state.to_host(state.step)
    if lead:
        settings = itertools.product(args.rates, args.decays, range(args.seeds))
        rows = [
            {
                "rate": rate,
                "decay": decay,
                "seed": seed,
                "final_train_loss": f"{on_train['loss'][i]:.6g}",
                "train_accuracy": f"{1 - on_train['error'][i]:.6g}",
                "val_accuracy": f"{1 - val_error[i]:.6g}",
                "test_accuracy": f"{1 - test_error[i]:.6g}",
                "steps": int(steps[i]),
            }
            for i, (rate, decay, seed) in enumerate(settings)
        ]
        common.write_csv(os.path.join(out, "models.csv"), rows)
        curve_rows = [
            {
                "rate": r["rate"],
                "decay": r["decay"],
                "seed": r["seed"],
                "step": (c + 1) * args.chunk_steps,
                "train_loss": f"{curve[i, c, 0]:.6g}",
                "val_error": f"{curve[i, c, 1]:.6g}",
                "test_error": f"{curve[i, c, 2]:.6g}",
            }
            for i, r in enumerate(rows)
            for c in range(chunks)
        ]
        common.write_csv(os.path.join(out, "curves.csv"), curve_rows)
        speed = (chunks - done) * args.chunk_steps * grid.size / max(elapsed, 1e-9)
        report.write(args, out, grid, rows, speed, len(data.y_test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
