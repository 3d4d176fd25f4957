"""Grids: products of named axes and explicit row lists, as per-model arrays."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxreg._checks import describe, fail

# A factor is one axis of the grid: a named axis (its values) or a block of rows.
# ``("axis", name, values)`` or ``("rows", name, (dict, ...))``.
Factor = tuple[str, str, tuple]


def _check_value(fn: str, name: str, value: Any) -> bool | int | float:
    """A hyperparameter value: a finite Python (or NumPy) number or a bool."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)) or (
        isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiub"
    ):
        value = value.item() if isinstance(value, np.ndarray) else value
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value
        if not math.isfinite(float(value)):
            raise fail(fn, f"{name} must be finite, got {value}. Remove it from the grid.")
        return float(value)
    raise fail(
        fn,
        f"{name} values must be Python numbers or bools, got {describe(value)}. Encode a "
        "categorical choice as an integer and branch on it with jax.lax.switch.",
        exc=TypeError,
    )


def _column(fn: str, name: str, values: Sequence[Any]) -> np.ndarray:
    """One name's values as an array: bool, int32 (all integers) or float32."""
    vals = [_check_value(fn, name, v) for v in values]
    if all(isinstance(v, bool) for v in vals):
        return np.array(vals, bool)
    if any(isinstance(v, bool) for v in vals):
        raise fail(fn, f"{name} mixes bools and numbers, got {vals[:6]}.", exc=TypeError)
    if all(isinstance(v, int) for v in vals):
        if any(not -(2**31) <= v < 2**31 for v in vals):
            raise fail(fn, f"{name} must fit in int32, got {vals[:6]}.")
        return np.array(vals, np.int32)
    return np.array(vals, np.float32)


def _check_name(fn: str, name: Any) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise fail(fn, f"axis names must be identifiers, got {describe(name)}.", exc=TypeError)
    if name == "step":
        raise fail(
            fn,
            "axis names must not be 'step', got 'step'. The loss gets the step number as "
            "hparams['step']; name the axis otherwise (e.g. 'steps').",
        )
    return name


class Grid:
    """A grid of models: a product of factors (named axes or row blocks).

    Build one with ``product`` and ``rows``. Model ``i`` is the ``i``-th combination in
    row-major order (the last factor varies fastest).
    """

    def __init__(self, factors: Sequence[Factor]):
        self._factors = tuple(factors)
        combos = list(itertools.product(*(range(len(f[2])) for f in self._factors)))
        self._index = np.array(combos, np.int64).reshape(len(combos), len(self._factors))
        columns: dict[str, list] = {}
        for j, (kind, name, values) in enumerate(self._factors):
            for i in self._index[:, j]:
                entries = values[i].items() if kind == "rows" else [(name, values[i])]
                for key, value in entries:
                    columns.setdefault(key, []).append(value)
        self._hparams = {k: _column("grid", k, v) for k, v in columns.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """The hyperparameter names, in factor order."""
        return tuple(self._hparams)

    @property
    def axes(self) -> tuple[str, ...]:
        """One name per factor: the axis's name, or the row block's ``name``."""
        return tuple(f[1] for f in self._factors)

    @property
    def shape(self) -> tuple[int, ...]:
        """One length per factor; ``reshape`` gives per-model values this shape."""
        return tuple(len(f[2]) for f in self._factors)

    @property
    def size(self) -> int:
        """The number of models."""
        return len(self._index)

    def __len__(self) -> int:
        return self.size

    @property
    def hparams(self) -> dict[str, np.ndarray]:
        """Per-model arrays, one per name, each of shape ``(size,)`` (copies)."""
        return {k: v.copy() for k, v in self._hparams.items()}

    def __repr__(self) -> str:
        axes = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.shape, strict=True))
        return f"Grid({self.size} models: {axes})"

    def values(self, axis: str) -> list:
        """The values along ``axis`` (a row block's: its dicts)."""
        for _, name, values in self._factors:
            if name == axis:
                return [dict(v) if isinstance(v, Mapping) else v for v in values]
        raise fail("grid.Grid.values", f"axis must be one of {self.axes}, got {axis!r}.")

    def reshape(self, values: Any) -> np.ndarray:
        """Per-model values (leading axis ``size``) laid out on the axes: ``shape + ...``."""
        v = np.asarray(values)
        if v.ndim == 0 or v.shape[0] != self.size:
            raise fail(
                "grid.Grid.reshape",
                f"values must have a leading axis of {self.size} (one per model), got "
                f"shape {v.shape}. Drop padded models first (GridState.to_host does).",
            )
        return v.reshape(self.shape + v.shape[1:])

    def take(self, indices: Any) -> Grid:
        """The selected models (in the given order) as a grid of rows named ``row``."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < -self.size or idx.max() >= self.size:
            raise fail(
                "grid.Grid.take", f"indices must be in [0, {self.size}), got {idx.tolist()}."
            )
        return rows([self._row(int(i)) for i in idx])

    def _row(self, i: int) -> dict[str, Any]:
        return {k: v[i].item() for k, v in self._hparams.items()}

    def rows(self, **columns: Any) -> list[dict[str, Any]]:
        """One dict per model: its hyperparameters, then ``columns`` (per-model values).

        Ready for ``csv.DictWriter(f, fieldnames=list(rows[0]))``.
        """
        cols = {}
        for name, values in columns.items():
            v = np.asarray(values)
            if v.ndim == 0 or v.shape[0] != self.size:
                raise fail(
                    "grid.Grid.rows",
                    f"{name} must have one value per model ({self.size}), got shape {v.shape}.",
                )
            cols[name] = v
        out = []
        for i in range(self.size):
            row = self._row(i)
            row.update(
                {n: (v[i].item() if v.ndim == 1 else v[i].tolist()) for n, v in cols.items()}
            )
            out.append(row)
        return out

    def fingerprint(self) -> str:
        """A hash of the grid's axes, names, values (with dtypes) and order."""
        spec = {
            "axes": list(self.axes),
            "shape": list(self.shape),
            "hparams": {k: [str(v.dtype), v.tolist()] for k, v in self._hparams.items()},
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def product(*grids: Grid, **axes: Sequence[Any]) -> Grid:
    """The Cartesian product of grids and named axes; the last factor varies fastest.

    ``product(rate=[0, 0.5], seed=[0, 1])`` has 4 models: ``rate`` = 0, 0, 0.5, 0.5 and
    ``seed`` = 0, 1, 0, 1. ``product(rows([...]), seed=range(3))`` repeats paired
    settings over seeds.

    Args:
      *grids: grids (from ``rows`` or ``product``) whose factors come first.
      **axes: name -> non-empty sequence of Python numbers or bools.

    Returns:
      The ``Grid``.
    """
    factors: list[Factor] = []
    for g in grids:
        if not isinstance(g, Grid):
            raise fail(
                "grid.product",
                f"positional arguments must be grids (from jaxreg.grid.rows or product), got "
                f"{describe(g)}. Give axes as keywords: product(rate=[0.1, 0.5]).",
                exc=TypeError,
            )
        factors.extend(g._factors)
    for name, values in axes.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, (Sequence, np.ndarray, range)
        ):
            raise fail(
                "grid.product",
                f"{name} must be a sequence of values, got {describe(values)}.",
                exc=TypeError,
            )
        values = list(np.asarray(values).tolist() if isinstance(values, np.ndarray) else values)
        if not values:
            raise fail("grid.product", f"{name} must have at least one value, got [].")
        _column("grid.product", name, values)
        factors.append(("axis", _check_name("grid.product", name), tuple(values)))
    if not factors:
        raise fail("grid.product", "needs at least one axis, got none.")
    _check_unique("grid.product", factors)
    return Grid(factors)


def rows(rows: Sequence[Mapping[str, Any]], *, name: str = "row") -> Grid:
    """A grid of explicit settings (paired values, a schedule family): one model per row.

    Args:
      rows: non-empty sequence of dicts with the same keys, name -> Python number or bool.
      name: the factor's name in ``Grid.axes`` (for ``reshape`` and ``values``).

    Returns:
      The ``Grid``.
    """
    fn = "grid.rows"
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise fail(fn, f"rows must be a non-empty sequence of dicts, got {describe(rows)}.")
    keys = None
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise fail(fn, f"rows[{i}] must be a dict, got {describe(row)}.", exc=TypeError)
        if keys is None:
            keys = list(row)
            if not keys:
                raise fail(fn, "rows[0] must name at least one hyperparameter, got {}.")
        elif set(row) != set(keys):
            raise fail(
                fn,
                f"rows[{i}] must have the keys of rows[0] {sorted(keys)}, got {sorted(row)}.",
            )
    for key in keys:
        _check_name(fn, key)
        _column(fn, f"rows[*][{key!r}]", [r[key] for r in rows])
    block = tuple({k: r[k] for k in keys} for r in rows)
    return Grid([("rows", _check_name(fn, name), block)])


def _check_unique(fn: str, factors: Sequence[Factor]) -> None:
    seen_axes: set[str] = set()
    seen: set[str] = set()
    for kind, name, values in factors:
        if name in seen_axes:
            raise fail(fn, f"axis names must be unique, got {name!r} twice.")
        seen_axes.add(name)
        names = list(values[0]) if kind == "rows" else [name]
        for n in names:
            if n in seen:
                raise fail(fn, f"hyperparameter names must be unique, got {n!r} twice.")
            seen.add(n)
