"""Shared pieces of the examples: a data set, small models, outputs and plots.

The examples train their grids with the library's engine, ``jaxreg.grid``; this module
holds only what an experiment needs around it: MNIST-1D splits (``load_data``), an MLP
with per-layer dropout (``init_mlp``, ``mlp``, ``mlp_hidden``), functional batch norm,
atomic CSV/text/figure writers and plotting helpers. The command-line helpers live in
``_cli`` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import (  # noqa: F401  (re-exported: the examples import them from here)
    Parser,
    example_parser,
    fail,
    float_list,
    positive_float,
    positive_int,
    progress,
)

import jaxreg

DATASETS = ("mnist1d",)


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
# Outputs
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


def plot_band(ax: Any, x: Any, ys: Any, *, label: str, color: Any = None, **kwargs: Any):
    """Mean over seeds (rows of ``ys``) as a line, min-max over seeds as a shaded band."""
    ys = np.asarray(ys, np.float64).reshape(-1, len(x))
    (line,) = ax.plot(x, ys.mean(0), label=label, color=color, **kwargs)
    ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2, linewidth=0)
    return line


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
