"""Shared pieces of the examples: data, an MLP, a vmapped training loop, outputs, CLI.

Every example trains a *grid* of models as one program: the models lie along a leading
axis (``jax.vmap``), hyperparameters are per-model arrays (traced, so the whole grid
compiles once), steps run in ``lax.scan`` chunks, and the model axis can be sharded over
devices (``Trainer(mesh=...)``). The library (``jaxreg``) has no trainer
and no plotting: they live here.

Typical use::

    data = load_data(train_size=1000)
    hp = {"rate": jnp.array([0.0, 0.3]), "decay": jnp.array([0.0, 1e-4])}
    trainer = Trainer(
        init=lambda key: init_mlp(key, (40, 256, 256, 10)),
        apply=lambda params, hp, x, key: mlp(params, x, key=key, rates=hp["rate"]),
        optimizer=lambda hp: jaxreg.optax.decoupled_adamw(1e-3, weight_decay=hp["decay"]),
        batch_size=128,
        chunk_steps=100,
    )
    state = trainer.init_state(hp, seeds=jnp.array([0, 0]))
    for _ in range(10):
        state, train_loss = trainer.chunk(state, hp, data.x_train, data.y_train)
    loss, acc = trainer.evaluate(state.params, hp, data.x_test, data.y_test)

Seeds: model ``i`` derives all its randomness (init, minibatches, dropout masks) from
``jax.random.key(seeds[i])`` and the step number, so models that share a seed share
their initialisation and data order (common random numbers: differences between
settings are not blurred by init noise), and a run resumed from a checkpoint draws
exactly what an uninterrupted run draws.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import itertools
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxreg

PyTree = Any
DATASETS = ("mnist1d",)
MODEL_AXIS = "models"


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


class Data(NamedTuple):
    """A classification data set as float32 features and int32 labels (numpy)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


@functools.cache
def _mnist1d(num_samples: int, seed: int) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    return make_dataset(args)  # generated locally (a few seconds), no download


def load_data(
    dataset: str = "mnist1d",
    *,
    num_samples: int = 5000,
    train_size: int | None = None,
    val_size: int = 0,
    seed: int = 42,
) -> Data:
    """Generates (once per process) and splits a data set.

    Args:
      dataset: one of ``DATASETS``.
      num_samples: examples generated in all (MNIST-1D keeps 80% for training, 20% test).
      train_size: keep only the first ``train_size`` training examples (after the
        validation split), to make overfitting easier; None keeps them all.
      val_size: the last ``val_size`` training examples become a validation set.
      seed: the generator's seed (42 is MNIST-1D's published data set).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    raw = _mnist1d(num_samples, seed)
    x, y = raw["x"].astype(np.float32), raw["y"].astype(np.int32)
    if not 0 <= val_size < len(x):
        raise ValueError(f"val_size must be in [0, {len(x)}), got {val_size}")
    x_val, y_val = x[len(x) - val_size :], y[len(x) - val_size :]
    x, y = x[: len(x) - val_size], y[: len(y) - val_size]
    if train_size is not None:
        if not 0 < train_size <= len(x):
            raise ValueError(f"train_size must be in [1, {len(x)}], got {train_size}")
        x, y = x[:train_size], y[:train_size]
    x_test = raw["x_test"].astype(np.float32)
    return Data(x, y, x_val, y_val, x_test, raw["y_test"].astype(np.int32))


# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> list[dict]:
    """He-normal kernels and zero biases for an MLP with layer widths ``sizes``."""
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=True
    ):
        kernel = jax.random.normal(k, (n_in, n_out)) * np.float32(math.sqrt(2.0 / n_in))
        params.append({"kernel": kernel, "bias": jnp.zeros(n_out)})
    return params


def mlp(
    params: list[dict],
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    rates: Any = 0.0,
) -> jax.Array:
    """ReLU MLP logits; dropout after every hidden layer when ``key`` is given.

    ``rates``: one drop rate for every hidden layer or a sequence with one per hidden
    layer; Python floats or (traced) arrays. ``key=None``: no dropout (evaluation).
    """
    hidden = params[:-1]
    if isinstance(rates, (list, tuple)):
        if len(rates) != len(hidden):
            raise ValueError(f"rates: {len(hidden)} hidden layers, got {len(rates)} rates")
    else:
        rates = [rates] * len(hidden)
    keys = jax.random.split(key, len(hidden)) if key is not None else [None] * len(hidden)
    for layer, k, rate in zip(hidden, keys, rates, strict=True):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        if k is not None:
            x = jaxreg.dropout(k, x, rate=rate)
    return x @ params[-1]["kernel"] + params[-1]["bias"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------


def put(tree: PyTree, mesh: Mesh | None, *, models: bool) -> PyTree:
    """Places host arrays on the mesh: model axis sharded (``models``) or replicated.

    Works with several processes too: every process holds the full host array and
    contributes the shards of its own devices.
    """
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    sharding = NamedSharding(mesh, P(MODEL_AXIS) if models else P())

    def place(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(place, tree)


def to_host(tree: PyTree) -> PyTree:
    """Full numpy copies of (possibly sharded, possibly multi-process) arrays."""

    def fetch(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(fetch, tree)


# ---------------------------------------------------------------------------------------
# Training: K models as one program
# ---------------------------------------------------------------------------------------


class TrainState(NamedTuple):
    """Per-model training state; every leaf has the model axis first."""

    params: PyTree
    opt_state: PyTree
    step: jax.Array  # int32: steps done
    seed: jax.Array  # int32: the model's seed


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Trains K models at once: ``vmap`` over models, ``lax.scan`` over steps.

    Attributes:
      init: ``key -> params`` for one model.
      apply: ``(params, hp, x, key) -> logits`` for one model; ``key=None`` at evaluation.
        ``hp`` is the model's slice of the hyperparameter pytree (scalars, traced).
      optimizer: ``hp -> optax.GradientTransformation`` (built inside the vmapped
        program, so per-model arrays such as a weight decay are traced).
      batch_size: examples per step (sampled with replacement, per model).
      chunk_steps: steps per ``chunk`` call (one ``lax.scan``).
      loss: ``(logits, labels) -> scalar``; ``penalty``: optional
        ``(params, hp) -> scalar`` added to the training loss.
      mesh: optional 1-D mesh with the axis ``MODEL_AXIS``: models sharded over its
        devices.
    """

    init: Callable[[jax.Array], PyTree]
    apply: Callable[..., jax.Array]
    optimizer: Callable[[PyTree], optax.GradientTransformation]
    batch_size: int
    chunk_steps: int
    loss: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy
    penalty: Callable[[PyTree, PyTree], jax.Array] | None = None
    mesh: Mesh | None = None

    def _shardings(self, *trees_models: bool):
        if self.mesh is None:
            return None
        return tuple(NamedSharding(self.mesh, P(MODEL_AXIS) if m else P()) for m in trees_models)

    @functools.cached_property
    def _init(self):
        def one(hp, seed):
            params = self.init(jax.random.fold_in(jax.random.key(seed), 0))
            opt_state = self.optimizer(hp).init(params)
            return TrainState(params, opt_state, jnp.zeros((), jnp.int32), seed)

        s = self._shardings(True, True)
        return jax.jit(jax.vmap(one), out_shardings=None if s is None else s[0])

    def init_state(self, hp: PyTree, seeds: Any) -> TrainState:
        """Fresh states for ``len(seeds)`` models (hp leaves have that leading axis)."""
        hp = put(hp, self.mesh, models=True)
        seeds = put(np.asarray(seeds, np.int32), self.mesh, models=True)
        return self._init(hp, seeds)

    def _one_chunk(self, state: TrainState, hp: PyTree, x: jax.Array, y: jax.Array):
        opt = self.optimizer(hp)
        stream = jax.random.fold_in(jax.random.key(state.seed), 1)

        def loss_fn(params, key, xb, yb):
            value = self.loss(self.apply(params, hp, xb, key), yb)
            return value if self.penalty is None else value + self.penalty(params, hp)

        def step(st: TrainState, _):
            batch_key, drop_key = jax.random.split(jax.random.fold_in(stream, st.step))
            idx = jax.random.randint(batch_key, (self.batch_size,), 0, x.shape[0])
            value, grads = jax.value_and_grad(loss_fn)(st.params, drop_key, x[idx], y[idx])
            updates, opt_state = opt.update(grads, st.opt_state, st.params)
            params = optax.apply_updates(st.params, updates)
            return st._replace(params=params, opt_state=opt_state, step=st.step + 1), value

        state, losses = jax.lax.scan(step, state, None, length=self.chunk_steps)
        return state, losses.mean()

    @functools.cached_property
    def _chunk(self):
        s = self._shardings(True, True, False, False)
        out = None if s is None else (s[0], s[0])
        program = jax.vmap(self._one_chunk, in_axes=(0, 0, None, None))
        return jax.jit(program, in_shardings=s, out_shardings=out, donate_argnums=0)

    def chunk(self, state: TrainState, hp: PyTree, x: Any, y: Any) -> tuple[TrainState, Any]:
        """``chunk_steps`` steps for every model; returns the new state and the mean
        minibatch training loss per model over the chunk."""
        return self._chunk(state, hp, x, y)

    def lower_chunk(self, state: TrainState, hp: PyTree, x: Any, y: Any):
        """The lowered chunk program (``.compile().as_text()`` gives the HLO)."""
        return self._chunk.lower(state, hp, x, y)

    @functools.cached_property
    def _evaluate(self):
        def one(params, hp, x, y):
            logits = self.apply(params, hp, x, None)
            correct = jnp.argmax(logits, -1) == y
            return self.loss(logits, y), correct.mean()

        s = self._shardings(True, True, False, False)
        out = None if s is None else (s[0], s[0])
        return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)), in_shardings=s, out_shardings=out)

    def evaluate(self, params: PyTree, hp: PyTree, x: Any, y: Any) -> tuple[Any, Any]:
        """Per-model loss and accuracy without dropout (``apply(..., key=None)``)."""
        return self._evaluate(params, hp, x, y)

    def put_data(self, *arrays: Any) -> tuple:
        """Data arrays replicated on the mesh (or on the default device)."""
        return tuple(put(a, self.mesh, models=False) for a in arrays)

    def put_models(self, tree: PyTree) -> PyTree:
        """Per-model arrays with the model axis sharded on the mesh."""
        return put(tree, self.mesh, models=True)


def grid(**axes: Sequence[Any]) -> dict[str, np.ndarray]:
    """The Cartesian product of named value lists, one flat array per name.

    ``grid(rate=[0, 0.5], seed=[0, 1])`` gives ``{"rate": [0, 0, 0.5, 0.5],
    "seed": [0, 1, 0, 1]}`` (the last name varies fastest).
    """
    combos = list(itertools.product(*axes.values()))
    return {name: np.array([c[i] for c in combos]) for i, name in enumerate(axes)}


# ---------------------------------------------------------------------------------------
# Outputs: atomic files, tables, progress
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path next to ``path``; renamed onto ``path`` on success only."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` atomically (temporary file + ``os.replace``)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_csv(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """Writes dict rows as CSV atomically; the first row's keys are the header."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` atomically; the format comes from ``path``'s suffix."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def progress(total_chunks: int, *, models: int, chunk_steps: int, initial: int = 0, **kwargs):
    """A tqdm bar over chunks that counts model-steps (rate in model-steps/s, ETA).

    Call ``bar.update(1)`` after each chunk. Drawn on stderr; off when not a terminal
    unless ``disable=False`` is passed.
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None)
    kwargs.setdefault("desc", f"{models} models")
    return tqdm(
        total=total_chunks,
        initial=initial,
        unit=" model-steps",
        unit_scale=models * chunk_steps,
        dynamic_ncols=True,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: argument --x: ...``, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def float_list(
    *, low: float | None = None, high: float | None = None, high_open: bool = False
) -> Callable[[str], list[float]]:
    """An argparse ``type`` for comma-separated floats in [low, high] (or [low, high)).

    Errors (empty list, non-numeric, out of range, NaN) become argparse errors, which
    ``Parser`` prints on one line naming the argument, with exit code 2.
    """

    def parse(text: str) -> list[float]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"needs at least one value, got {text!r}")
        values = []
        for item in items:
            try:
                v = float(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{item!r} is not a number") from None
            if math.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
                raise argparse.ArgumentTypeError(
                    f"{item} is outside {_interval(low, high, high_open)}"
                )
            if high_open and v == high:
                raise argparse.ArgumentTypeError(
                    f"{item} is outside {_interval(low, high, high_open)}"
                )
            values.append(v)
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"values repeat in {text!r}")
        return values

    return parse


def _interval(low: float | None, high: float | None, high_open: bool) -> str:
    lo = "(-inf" if low is None else f"[{low:g}"
    hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
    return f"{lo}, {hi}"


def positive_int(text: str) -> int:
    """An argparse ``type`` for an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type`` for a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fail(message: str, code: int = 2) -> None:
    """Prints one line to stderr and exits (for checks after argument parsing)."""
    print(message, file=sys.stderr)
    raise SystemExit(code)


# ---------------------------------------------------------------------------------------
# Findings helpers (appended by the findings examples)
# ---------------------------------------------------------------------------------------


def mlp_hidden(
    params: list[dict],
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    rates: Any = 0.0,
) -> list[jax.Array]:
    """The hidden activations of ``mlp`` (after ReLU and, with ``key``, after dropout).

    Same layers, keys and rates as ``mlp``: with the same ``key`` the masks are the
    ones ``mlp`` draws, so these are exactly the inputs of the next layer in train
    mode (``key`` given) or in evaluation mode (``key=None``).
    """
    hidden = params[:-1]
    rates = list(rates) if isinstance(rates, (list, tuple)) else [rates] * len(hidden)
    keys = jax.random.split(key, len(hidden)) if key is not None else [None] * len(hidden)
    outputs = []
    for layer, k, rate in zip(hidden, keys, rates, strict=True):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        if k is not None:
            x = jaxreg.dropout(k, x, rate=rate)
        outputs.append(x)
    return outputs


def tile_rows(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` repeated along axis 0 to exactly ``length`` rows (``len(x)`` must divide it).

    ``Trainer`` samples minibatch rows uniformly from its data array; training sets of
    different sizes tiled to one length give every size the same array shape (one
    compiled program) while each example stays equally likely.
    """
    if length % len(x):
        raise ValueError(f"tile_rows: {len(x)} rows do not divide {length}")
    return np.concatenate([x] * (length // len(x)))


def mean_std(values: Any, fmt: str = ".3f") -> str:
    """``"mean ± std"`` of ``values`` (std with ddof=1; 0 for a single value)."""
    v = np.asarray(values, np.float64)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return f"{v.mean():{fmt}} ± {std:{fmt}}"


def plot_band(ax: Any, x: Any, ys: Any, *, label: str, color: Any = None, **kwargs: Any):
    """Mean over seeds (rows of ``ys``) as a line, min-max over seeds as a shaded band."""
    ys = np.asarray(ys, np.float64).reshape(-1, len(x))
    (line,) = ax.plot(x, ys.mean(0), label=label, color=color, **kwargs)
    ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def example_parser(doc: str, name: str) -> Parser:
    """The examples' shared flags: ``--smoke`` and ``--out`` (default ``results/<name>``)."""
    parser = Parser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run, tiny grid")
    parser.add_argument("--out", default=os.path.join("results", name), help="output folder")
    return parser


def matplotlib_pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------
# Batch normalisation (appended by the findings examples)
# ---------------------------------------------------------------------------------------


def init_batch_norm(num_features: int) -> dict:
    """Batch-norm parameters: a unit ``scale`` and a zero ``bias`` per feature."""
    return {"scale": jnp.ones(num_features), "bias": jnp.zeros(num_features)}


def batch_norm(
    params: dict,
    x: jax.Array,
    *,
    stats: tuple[jax.Array, jax.Array] | None = None,
    eps: float = 1e-5,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Functional batch normalisation over every axis but the last (the features).

    ``stats=None`` normalises with the batch's own mean and (biased) variance, as in
    training; otherwise with the given ``(mean, var)``, as at inference (population
    statistics, e.g. averaged over the training set). Returns ``(y, (mean, var))``: the
    statistics used, so a training-mode pass over a data set yields its population
    statistics (what running averages estimate) without mutable state.
    """
    if stats is None:
        axes = tuple(range(x.ndim - 1))
        mean, var = jnp.mean(x, axes), jnp.var(x, axes)
    else:
        mean, var = stats
    y = (x - mean) * jax.lax.rsqrt(var + eps)
    return y * params["scale"] + params["bias"], (mean, var)
