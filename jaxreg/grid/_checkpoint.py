"""Checkpoint and resume a grid's state: atomic writes, verified reads, one grid per folder.

A grid's state is a plain pytree (parameters, optimizer states, early-stopping records,
a step counter). ``Checkpointer`` saves it after chunks and restores it after a crash,
SIGKILL included, so that the resumed run equals an uninterrupted one bitwise. The
arrays are written by orbax-checkpoint (optional extra ``jaxreg[grid]``, imported only
when ``save`` or ``restore`` runs): it handles sharded arrays and every process of a
``jax.distributed`` job writing its own shards. Around it this module adds what a
resume must never get wrong:

- **One grid per folder.** Each checkpoint records the grid's ``fingerprint``; another
  fingerprint is refused with both values, never resumed.
- **Atomic writes.** A checkpoint is written under ``.tmp-step_<n>/``, every file and
  folder is fsynced, then the folder is renamed to ``step_<n>/`` (and the parent fsynced).
  A write killed half-way leaves only a ``.tmp-`` folder, which is ignored and removed.
- **Verified reads.** ``manifest.json``, written last, holds the size and sha256 of every
  file orbax wrote, the path, shape, dtype and sha256 of every leaf's bytes, and a
  sha256 of itself. ``restore`` checks all three; a damaged (truncated, flipped)
  checkpoint is skipped with a ``RuntimeWarning`` for the one before it, and if none is
  intact ``restore`` raises instead of returning a wrong state.

Layout of ``directory``: ``step_<n>/manifest.json`` and ``step_<n>/state/`` (orbax's
files) for the newest ``keep`` saved steps; anything else in the folder is left alone.
Several processes need a shared file system (as orbax does); process 0 writes the
manifest, renames and deletes, and the others wait for it.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import shutil
import warnings
from typing import Any

import jax
import numpy as np

from jaxreg._checks import check_positive_int, describe, fail, is_traced

_FORMAT = "jaxreg.grid.checkpoint/1"
_STEP_DIR = re.compile(r"step_(\d+)")
_MANIFEST = "manifest.json"
_STATE = "state"
_SCRATCH = (".tmp-", ".del-")  # prefixes of interrupted writes and deletions


class _DamagedError(Exception):
    """A checkpoint whose files are not what was written."""


def fingerprint(config: Any) -> str:
    """A short stable hash of a grid's description, for ``Checkpointer(fingerprint=)``.

    Args:
      config: what makes two runs the same grid: nested dicts, lists and tuples of
        strings, numbers, ``None`` and arrays (hashed by dtype, shape and bytes), e.g.
        the axes, the steps per chunk and the data set's name.

    Returns:
      16 hexadecimal digits; equal configs give equal fingerprints in every process
      and session (dict order does not matter).

    Examples:
      >>> config = {"rate": [0.1, 0.5], "seed": [0, 1], "chunk_steps": 100}
      >>> len(fingerprint(config)), fingerprint(config) == fingerprint(dict(config))
      (16, True)
    """
    return _sha_json(_canonical(config))[:16]


def _canonical(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _canonical(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_canonical(v) for v in x]
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        return {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": _sha_bytes(a)}
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise fail(
        "grid.fingerprint",
        f"config must hold dicts, lists, numbers, strings and arrays, got {describe(x)}.",
        exc=TypeError,
    )


class Checkpointer:
    """Saves a grid's state pytree into ``directory`` and resumes from the newest intact one.

    Typical use, one save per compiled chunk::

        ckpt = Checkpointer(out, fingerprint=fingerprint(config))
        state, step = ckpt.restore(state) or (state, 0)  # resume, or start
        while step < total:
            state = train_chunk(state)
            step += chunk_steps
            ckpt.save(state, step)

    Args:
      directory: the folder (created if missing) holding this grid's checkpoints; one
        job writes it at a time (construction removes unfinished writes).
      fingerprint: identifies the grid, e.g. ``fingerprint(config)``. A folder holding
        checkpoints of another fingerprint is refused, here and in ``restore``.
      keep: how many of the newest checkpoints to keep (>= 1). The default 2 keeps one
        to fall back on if the newest is damaged.
    """

    def __init__(self, directory: str | os.PathLike, *, fingerprint: str, keep: int = 2):
        fn = "grid.Checkpointer"
        if not isinstance(directory, (str, os.PathLike)):
            raise fail(
                fn, f"directory must be a str or a path, got {describe(directory)}.", exc=TypeError
            )
        if not isinstance(fingerprint, str) or not fingerprint:
            raise fail(
                fn,
                f"fingerprint must be a non-empty str, got {describe(fingerprint)}. "
                "Use jaxreg.grid.fingerprint(config).",
                exc=TypeError,
            )
        self.directory = os.path.abspath(os.fspath(directory))
        self.fingerprint = fingerprint
        self.keep = check_positive_int(fn, "keep", keep)
        if _lead():
            os.makedirs(self.directory, exist_ok=True)
            for name in os.listdir(self.directory):  # leftovers of killed writes/deletions
                if name.startswith(_SCRATCH):
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        _barrier("jaxreg.grid.Checkpointer")
        for step in self.steps():  # refuse another grid before any work is done
            try:
                manifest = _read_manifest(self._path(step))
            except _DamagedError:
                continue
            self._check_fingerprint(fn, manifest, step)

    def steps(self) -> list[int]:
        """The steps of the committed checkpoints, newest first (not yet verified)."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = _STEP_DIR.fullmatch(name)
            if match and os.path.isdir(os.path.join(self.directory, name)):
                found.append(int(match.group(1)))
        return sorted(found, reverse=True)

    def latest_step(self) -> int | None:
        """The newest committed checkpoint's step, or None; ``restore`` verifies it."""
        steps = self.steps()
        return steps[0] if steps else None

    def save(self, state: Any, step: int) -> str:
        """Writes ``state`` as the checkpoint of ``step``, atomically; returns its folder.

        A checkpoint already saved for ``step`` is replaced; checkpoints of later steps
        (left by a run that was resumed from an earlier one) are deleted, and so are
        those beyond the newest ``keep``. Every process of a multi-process job calls it.

        Args:
          state: a pytree of arrays (JAX arrays, sharded or not, PRNG key arrays, NumPy
            arrays) and Python numbers.
          step: a Python int >= 0, e.g. the number of training steps done.

        Returns:
          The checkpoint's folder, ``<directory>/step_<step>``.
        """
        fn = "grid.Checkpointer.save"
        step = _check_step(fn, step)
        leaves, _, records = _flatten(fn, "state", state)
        ocp = _orbax(fn)
        name = f"step_{step}"
        tmp = os.path.join(self.directory, f".tmp-{name}")
        if _lead():
            shutil.rmtree(tmp, ignore_errors=True)
        _barrier(f"jaxreg.grid.save.begin.{step}")
        arrays = {str(i): _storable(leaf) for i, leaf in enumerate(leaves)}
        ocp.Checkpointer(ocp.StandardCheckpointHandler()).save(os.path.join(tmp, _STATE), arrays)
        for record, leaf in zip(records, leaves, strict=True):
            record["sha256"] = _leaf_sha(leaf)
        _barrier(f"jaxreg.grid.save.written.{step}")
        final = self._path(step)
        if _lead():
            body = {
                "format": _FORMAT,
                "fingerprint": self.fingerprint,
                "step": step,
                "leaves": records,
                "files": _file_table(os.path.join(tmp, _STATE)),
            }
            with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
                json.dump({"body": body, "sha256": _sha_json(body)}, f, indent=1)
            _fsync_tree(tmp)
            trash = os.path.join(self.directory, f".del-{name}")
            if os.path.exists(final):  # the same step saved again: replaced
                shutil.rmtree(trash, ignore_errors=True)
                os.replace(final, trash)
            os.replace(tmp, final)
            _fsync(self.directory)
            shutil.rmtree(trash, ignore_errors=True)
            kept = [s for s in self.steps() if s <= step][: self.keep]
            for old in self.steps():
                if old not in kept:
                    self._delete(old)
        _barrier(f"jaxreg.grid.save.done.{step}")
        return final

    def restore(self, like_state: Any) -> tuple[Any, int] | None:
        """Restores the newest intact checkpoint onto ``like_state``'s structure and shardings.

        Args:
          like_state: a state of the same grid (e.g. the freshly initialised one) or its
            ``jax.ShapeDtypeStruct`` leaves: same pytree structure, shapes and dtypes as
            the saved state. JAX leaves come back with its leaves' shardings, NumPy
            leaves as NumPy arrays, Python numbers as Python numbers.

        Returns:
          ``(state, step)`` of the newest checkpoint that verifies, or None when the
          folder holds no checkpoint (start from scratch).

        Raises:
          ValueError: the checkpoints belong to another fingerprint, or ``like_state``
            differs from the saved state in structure, shape or dtype.
          RuntimeError: there are checkpoints but none is intact. Each damaged one
            skipped on the way gives a ``RuntimeWarning``.
        """
        fn = "grid.Checkpointer.restore"
        like_leaves, treedef, like_records = _flatten(fn, "like_state", like_state, abstract=True)
        problems = []
        for step in self.steps():
            path = self._path(step)
            try:
                manifest = _read_manifest(path)
                self._check_fingerprint(fn, manifest, step)
                _check_like(fn, manifest["leaves"], like_records, path)
                _agree(_verify_files(path, manifest["files"]))
                values = _orbax_restore(fn, path, like_leaves, manifest["leaves"])
                _verify_leaves(values, manifest["leaves"])
            except _DamagedError as err:
                problems.append(f"step_{step}: {err}")
                warnings.warn(
                    f"jaxreg.{fn}: skipping the damaged checkpoint {path} ({err}); "
                    "trying an earlier one.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            return jax.tree.unflatten(treedef, values), step
        if problems:
            raise fail(
                fn,
                f"no intact checkpoint in {self.directory}: {'; '.join(problems)}. "
                "Delete the folder (or pass another directory) to start over.",
                exc=RuntimeError,
            )
        return None

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, f"step_{step}")

    def _check_fingerprint(self, fn: str, manifest: dict, step: int) -> None:
        if manifest["fingerprint"] != self.fingerprint:
            raise fail(
                fn,
                f"the checkpoint {self._path(step)} belongs to another grid: it was "
                f"saved with fingerprint {manifest['fingerprint']!r}, this grid has "
                f"{self.fingerprint!r}. Pass another directory, or delete this one to "
                "start over.",
            )

    def _delete(self, step: int) -> None:
        trash = os.path.join(self.directory, f".del-step_{step}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(self._path(step), trash)  # atomic: never a half-deleted step_<n>
        _fsync(self.directory)
        shutil.rmtree(trash, ignore_errors=True)


# Helpers ---------------------------------------------------------------------------------


def _orbax(fn: str) -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise fail(
            fn, "needs orbax-checkpoint: pip install 'jaxreg[grid]'.", exc=ImportError
        ) from err
    return ocp


def _lead() -> bool:
    return jax.process_index() == 0


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _agree(problem: str | None) -> None:
    """Raises ``_DamagedError`` on every process if any process found ``problem``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        bad = multihost_utils.process_allgather(np.int32(problem is not None))
        if problem is None and np.any(bad):
            problem = "another process found it damaged"
    if problem is not None:
        raise _DamagedError(problem)


def _check_step(fn: str, step: Any) -> int:
    try:
        value = None if isinstance(step, (bool, np.bool_)) else operator.index(step)
    except TypeError:
        value = None
    if value is None:
        raise fail(fn, f"step must be a Python int >= 0, got {describe(step)}.", exc=TypeError)
    if value < 0:
        raise fail(fn, f"step must be >= 0, got {value}.")
    return value


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _flatten(fn: str, name: str, tree: Any, *, abstract: bool = False):
    """Leaves, treedef and one record (path, shape, dtype) per leaf; rejects other leaves."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not pairs:
        raise fail(fn, f"{name} must hold at least one array, got {describe(tree)}.")
    records = []
    for path, leaf in pairs:
        where = jax.tree_util.keystr(path)
        allowed = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)
        if not isinstance(leaf, allowed + ((jax.ShapeDtypeStruct,) if abstract else ())):
            raise fail(
                fn,
                f"{name}{where} must be an array or a Python number, got {describe(leaf)}.",
                exc=TypeError,
            )
        if is_traced(leaf):
            raise fail(
                fn,
                f"{name}{where} must be concrete, got {describe(leaf)}. Save outside jit.",
                exc=TypeError,
            )
        shaped = leaf if hasattr(leaf, "dtype") and hasattr(leaf, "shape") else np.asarray(leaf)
        records.append({"path": where, "shape": list(shaped.shape), "dtype": str(shaped.dtype)})
    return [leaf for _, leaf in pairs], treedef, records


def _storable(leaf: Any) -> Any:
    return leaf if isinstance(leaf, (jax.Array, np.ndarray)) else np.asarray(leaf)


def _host(leaf: Any) -> np.ndarray | None:
    """The leaf's bytes as a host array, or None where this process holds only part."""
    if isinstance(leaf, jax.Array):
        if not leaf.is_fully_addressable:
            return None
        if _is_key(leaf):
            leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(np.asarray(leaf))


def _leaf_sha(leaf: Any) -> str | None:
    host = _host(leaf)
    return None if host is None else _sha_bytes(host)


def _sha_bytes(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _sha_json(body: Any) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _sha_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: str) -> dict[str, str]:
    """Every file under ``root``: its path relative to ``root`` (with ``/``) -> full path."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root).replace(os.sep, "/")] = path
    return found


def _file_table(root: str) -> dict[str, dict]:
    return {
        rel: {"size": os.path.getsize(path), "sha256": _sha_file(path)}
        for rel, path in _files(root).items()
    }


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync(os.path.join(dirpath, name))
        _fsync(dirpath)


def _read_manifest(path: str) -> dict:
    try:
        with open(os.path.join(path, _MANIFEST), encoding="utf-8") as f:
            stored = json.load(f)
        body = stored["body"]
        intact = stored["sha256"] == _sha_json(body) and body["format"] == _FORMAT
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _DamagedError(f"{_MANIFEST} is missing or unreadable: {type(err).__name__}") from None
    if not intact:
        raise _DamagedError(f"{_MANIFEST} fails its sha256")
    return body


def _verify_files(path: str, table: dict[str, dict]) -> str | None:
    """The first difference between the files under ``state/`` and ``table``, or None."""
    found = _files(os.path.join(path, _STATE))
    for rel in sorted(set(found) | set(table)):
        name = f"file {_STATE}/{rel}"
        if rel not in found:
            return f"{name} is missing"
        if rel not in table:
            return f"{name} was not written by the save"
        size = os.path.getsize(found[rel])
        if size != table[rel]["size"]:
            return f"{name} has {size} bytes, {table[rel]['size']} were written"
        if _sha_file(found[rel]) != table[rel]["sha256"]:
            return f"{name} fails its sha256"
    return None


def _check_like(fn: str, saved: list[dict], like: list[dict], path: str) -> None:
    fix = "Build like_state the way the saved run built its state, or pass another directory."
    saved_paths, like_paths = [r["path"] for r in saved], [r["path"] for r in like]
    if saved_paths != like_paths:
        extra = [p for p in like_paths if p not in saved_paths][:5]
        missing = [p for p in saved_paths if p not in like_paths][:5]
        got = " and ".join(
            [f"with leaves {', '.join(extra)} not in the checkpoint"] * bool(extra)
            + [f"without the saved leaves {', '.join(missing)}"] * bool(missing)
        )
        raise fail(
            fn,
            f"like_state must have the structure of the state saved in {path}, got "
            f"a state {got or 'with the same leaves in another order'}. {fix}",
        )
    for s, k in zip(saved, like, strict=True):
        if (s["shape"], s["dtype"]) != (k["shape"], k["dtype"]):
            raise fail(
                fn,
                f"like_state{k['path']} must have shape {tuple(s['shape'])} and "
                f"dtype {s['dtype']} as saved in {path}, got shape {tuple(k['shape'])} "
                f"and dtype {k['dtype']}. {fix}",
            )


def _orbax_restore(fn: str, path: str, like_leaves: list, saved: list[dict]) -> list:
    ocp = _orbax(fn)
    targets = {}
    for i, leaf in enumerate(like_leaves):
        if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
            sharding = leaf.sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            targets[str(i)] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        else:
            targets[str(i)] = np.zeros(saved[i]["shape"], saved[i]["dtype"])
    checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    out = checkpointer.restore(os.path.join(path, _STATE), args=ocp.args.StandardRestore(targets))
    values = []
    for i, leaf in enumerate(like_leaves):
        value = out[str(i)]
        if isinstance(leaf, np.generic):
            value = np.asarray(value)[()]
        elif isinstance(leaf, np.ndarray):
            value = np.asarray(value)
        elif isinstance(leaf, (bool, int, float, complex)):
            value = type(leaf)(np.asarray(value).item())
        values.append(value)
    return values


def _verify_leaves(values: list, saved: list[dict]) -> None:
    for value, record in zip(values, saved, strict=True):
        host = None if record["sha256"] is None else _host(_storable(value))
        if host is not None and _sha_bytes(host) != record["sha256"]:
            raise _DamagedError(f"leaf {record['path']} restored with other bytes than were saved")
