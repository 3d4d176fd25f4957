"""``Trainer``: the user's functions and settings; init, train chunk by chunk, evaluate."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxreg._checks import check_callable, check_choice, check_positive_int, describe, fail
from jaxreg.grid import _data, _engine, _keys, _state
from jaxreg.grid._grids import Grid

PyTree = Any
STRATEGIES = ("auto", "vmap", "map")


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Trains every model of a grid at once, as one compiled program per chunk of steps.

    Attributes:
      init: ``(key, hparams) -> params`` for one model.
      loss: ``(params, hparams, batch, key) -> loss`` or ``(loss, aux)`` for one model:
        a scalar loss on a minibatch; ``key`` is the step's key for dropout and noise.
      optimizer: ``hparams -> optax.GradientTransformation``; called inside the
        compiled program, so the hyperparameters are traced scalars.
      batch_size: examples per step, drawn per model (uniformly, with replacement).
      chunk_steps: steps per compiled chunk (one ``lax.scan``); the callback, the
        validation and early stopping run after each chunk.
      strategy: ``"vmap"`` (a device's models at once), ``"map"`` (in groups of
        ``group_size``, one group after the other, inside the program) or ``"auto"`` (a
        short measured probe picks one; see ``plan``).
      group_size: models per group under ``"map"`` (default 1).
      validation: optional ``(params, hparams, batch) -> value`` (lower is better): a
        scalar, or per-example values that are averaged. Evaluated after every chunk.
      patience: stop a model after this many evaluations without improvement (None:
        never stop; the best parameters are still kept).
      mesh: a 1-D ``jax.sharding.Mesh`` whose axis holds the models; None: every
        device of every process.
    """

    init: Callable[[jax.Array, dict], PyTree]
    loss: Callable[..., Any]
    optimizer: Callable[[dict], optax.GradientTransformation]
    batch_size: int
    chunk_steps: int = 100
    strategy: str = "auto"
    group_size: int | None = None
    validation: Callable[..., Any] | None = None
    patience: int | None = None
    mesh: Mesh | None = None
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        fn = "grid.Trainer"
        check_callable(fn, "init", self.init, "(key, hparams) -> params")
        check_callable(fn, "loss", self.loss, "(params, hparams, batch, key) -> scalar")
        check_callable(fn, "optimizer", self.optimizer, "(hparams) -> GradientTransformation")
        check_positive_int(fn, "batch_size", self.batch_size)
        check_positive_int(fn, "chunk_steps", self.chunk_steps)
        check_choice(fn, "strategy", self.strategy, STRATEGIES)
        if self.group_size is not None:
            check_positive_int(fn, "group_size", self.group_size)
        if self.validation is not None:
            check_callable(fn, "validation", self.validation, "(params, hparams, batch)")
        if self.patience is not None:
            check_positive_int(fn, "patience", self.patience)
            if self.validation is None:
                raise fail(fn, "patience needs a validation function, got validation=None.")
        object.__setattr__(self, "mesh", _data.check_mesh(fn, self.mesh))

    # -- state ------------------------------------------------------------------------

    def init_state(self, grid: Grid, data: PyTree) -> _state.GridState:
        """Every model's fresh state, the model axis padded to a multiple of the mesh.

        ``data`` is only looked at for its shapes (to check ``loss`` on a batch).
        """
        fn = "grid.Trainer.init_state"
        if not isinstance(grid, Grid):
            raise fail(fn, f"grid must be a jaxreg.grid.Grid, got {describe(grid)}.", exc=TypeError)
        hparams = grid.hparams
        if "seed" not in hparams:
            hparams["seed"] = np.zeros(grid.size, np.int32)
        elif hparams["seed"].dtype != np.int32:
            raise fail(fn, f"the seed axis must hold integers, got {hparams['seed'][:4]}.")
        _data.num_examples(fn, "data", data)
        aux = self._check_loss(fn, hparams, data)
        size = _state.padded_size(grid.size, self.mesh.size)
        valid = np.arange(size) < grid.size
        hp = _data.put(_data.pad_models(hparams, size), self.mesh, models=True)
        valid = _data.put(valid, self.mesh, models=True)
        aux = jax.tree_util.tree_map(lambda a: np.full((size, *a.shape), np.nan, np.float32), aux)
        aux = _data.put(aux, self.mesh, models=True)
        program = _engine.init_program(
            self.init, self.optimizer, self.mesh, self.validation is not None
        )
        return program((hp, valid, aux))

    def _check_loss(self, fn: str, hparams: dict, data: PyTree):
        """Traces ``loss`` for one model on one batch; returns the aux shapes (or None)."""
        hp = {k: jax.ShapeDtypeStruct((), v.dtype) for k, v in hparams.items()}
        key = jax.eval_shape(lambda: jax.random.key(0))
        params = jax.eval_shape(self.init, key, hp)
        batch = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((self.batch_size,) + np.shape(a)[1:], a.dtype), data
        )
        out = jax.eval_shape(self.loss, params, hp, batch, key)
        has_aux = isinstance(out, (tuple, list)) and len(out) == 2
        value = out[0] if has_aux else out
        if not isinstance(value, jax.ShapeDtypeStruct) or value.shape != ():
            got = describe(value) if not hasattr(value, "shape") else f"shape {value.shape}"
            raise fail(
                fn,
                f"loss must return a scalar or (scalar, aux), got {got}. Average over the "
                "batch, e.g. optax.softmax_cross_entropy_with_integer_labels(...).mean().",
            )
        if not jnp.issubdtype(value.dtype, jnp.floating):
            raise fail(fn, f"loss must return a floating-point scalar, got dtype {value.dtype}.")
        return out[1] if has_aux else None

    # -- training ---------------------------------------------------------------------

    def train(
        self,
        state: _state.GridState,
        data: PyTree,
        *,
        steps: int,
        subsets: Any = None,
        validation_data: PyTree = None,
        validation_subsets: Any = None,
        callback: Callable[[_state.GridState, int], Any] | None = None,
    ) -> _state.GridState:
        """Trains until every model has done ``steps`` steps, chunk by chunk.

        Args:
          state: from ``init_state``, or restored from a checkpoint (training resumes at
            its step). Not modified.
          data: pytree of arrays with a common leading example axis (shared by all
            models, replicated on the devices).
          steps: total steps, a multiple of ``chunk_steps``.
          subsets: optional per-model example subsets: a list of index arrays into
            ``data``; model ``i`` uses ``subsets[hparams['subset'][i]]``.
          validation_data: the data ``validation`` is evaluated on after each chunk.
          validation_subsets: per-model subsets of ``validation_data`` (like
            ``subsets``; ``validation`` must then return per-example values).
          callback: ``callback(state, chunk_index)`` after each chunk (0-based, counted
            from step 0). The state is valid during the call only: copy what you keep.

        Returns:
          The state after ``steps`` steps.
        """
        fn = "grid.Trainer.train"
        args, has_aux = self._prepare(fn, state, data, subsets, validation_data, validation_subsets)
        check_positive_int(fn, "steps", steps)
        if steps % self.chunk_steps:
            raise fail(
                fn, f"steps must be a multiple of chunk_steps {self.chunk_steps}, got {steps}."
            )
        done = int(_data.first_value(state.step))
        if done % self.chunk_steps or done > steps:
            raise fail(
                fn,
                f"state is at step {done}, which is not a chunk boundary (chunk_steps "
                f"{self.chunk_steps}) at or before steps {steps}.",
            )
        if done == steps:
            return state
        program = self._chunk(state, args, has_aux)
        state = jax.tree_util.tree_map(jnp.copy, state)  # the program reuses its input
        for c in range(done // self.chunk_steps, steps // self.chunk_steps):
            state = program(state, *args)
            if callback is not None:
                callback(state, c)
        return state

    def _prepare(self, fn, state, data, subsets, validation_data, validation_subsets):
        if not isinstance(state, _state.GridState):
            raise fail(
                fn, f"state must be a GridState (from init_state), got {describe(state)}.",
                exc=TypeError,
            )  # fmt: skip
        self._check_state_fits(fn, state)
        n = _data.num_examples(fn, "data", data)
        hp_host = None
        if subsets is not None:
            subsets = _data.pack_subsets(fn, "subsets", subsets, n)
            hp_host = _data.to_host(state.hparams)
            used = _data.check_subset_hparam(fn, "subsets", subsets, hp_host)
            smallest = int(
                np.argmin(
                    np.where(
                        np.isin(np.arange(len(subsets.sizes)), used),
                        subsets.sizes,
                        np.iinfo(np.int32).max,
                    )
                )
            )
            if self.batch_size > subsets.sizes[smallest]:
                raise fail(
                    fn,
                    f"batch_size {self.batch_size} is larger than subsets[{smallest}] "
                    f"({subsets.sizes[smallest]} examples), which a model uses. Use a "
                    "smaller batch_size or larger subsets.",
                )
        elif self.batch_size > n:
            raise fail(
                fn,
                f"batch_size {self.batch_size} is larger than the {n} examples of data. "
                "Use a smaller batch_size.",
            )
        if (self.validation is None) != (validation_data is None):
            raise fail(
                fn,
                "validation_data must be given exactly when the trainer has a validation "
                f"function, got validation={self.validation!r} and validation_data "
                f"{'given' if validation_data is not None else 'None'}.",
            )
        if validation_subsets is not None:
            if validation_data is None:
                raise fail(fn, "validation_subsets needs validation_data, got None.")
            m = _data.num_examples(fn, "validation_data", validation_data)
            validation_subsets = _data.pack_subsets(fn, "validation_subsets", validation_subsets, m)
            hp_host = _data.to_host(state.hparams) if hp_host is None else hp_host
            _data.check_subset_hparam(fn, "validation_subsets", validation_subsets, hp_host)
        elif validation_data is not None:
            _data.num_examples(fn, "validation_data", validation_data)
        has_aux = state.aux is not None
        args = (
            _data.put(data, self.mesh, models=False),
            _data.as_device_subsets(subsets, self.mesh),
            None
            if validation_data is None
            else _data.put(validation_data, self.mesh, models=False),
            _data.as_device_subsets(validation_subsets, self.mesh),
        )
        return args, has_aux

    def _check_state_fits(self, fn, state):
        if state.num_models % self.mesh.size:
            raise fail(
                fn,
                f"mesh of {self.mesh.size} devices cannot hold the {state.num_models} models "
                "of state (the model axis must split evenly over the devices). Make the "
                "state with this trainer's init_state, or use a mesh whose size divides "
                f"{state.num_models}.",
            )

    def _signature(self, state, args) -> tuple:
        shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), (state, args))
        leaves, tree = jax.tree_util.tree_flatten(shapes)
        return (tree, tuple(leaves))

    def _plan(self, state, args, has_aux) -> _engine.Plan:
        if self.strategy != "auto":
            return _engine.Plan(self.strategy, self.group_size or 1, {})
        key = ("plan", self._signature(state, args))
        if key not in self._cache:
            plan, program = _engine.probe(self, self.mesh, state, args, has_aux=has_aux)
            self._cache[key] = plan
            chunk_key = ("chunk", plan.strategy, plan.group_size, has_aux)
            if program is not None and chunk_key not in self._cache:
                self._cache[chunk_key] = program  # the probe compiled the real chunk
        return self._cache[key]

    def _chunk(self, state, args, has_aux):
        plan = self._plan(state, args, has_aux)
        key = ("chunk", plan.strategy, plan.group_size, has_aux)
        if key not in self._cache:
            self._cache[key] = _engine.chunk_program(
                self, self.mesh, plan, steps=self.chunk_steps, has_aux=has_aux, donate=True
            )
        return self._cache[key]

    def plan(
        self,
        state: _state.GridState,
        data: PyTree,
        *,
        subsets: Any = None,
        validation_data: PyTree = None,
        validation_subsets: Any = None,
    ) -> _engine.Plan:
        """The strategy ``train`` uses for this state and data (measured once for "auto")."""
        args, has_aux = self._prepare(
            "grid.Trainer.plan", state, data, subsets, validation_data, validation_subsets
        )
        return self._plan(state, args, has_aux)

    def lower(
        self,
        state: _state.GridState,
        data: PyTree,
        *,
        subsets: Any = None,
        validation_data: PyTree = None,
        validation_subsets: Any = None,
    ):
        """The lowered chunk program (``.compile().as_text()``: its HLO)."""
        args, has_aux = self._prepare(
            "grid.Trainer.lower", state, data, subsets, validation_data, validation_subsets
        )
        return self._chunk(state, args, has_aux).lower(state, *args)

    # -- evaluation -------------------------------------------------------------------

    def evaluate(
        self,
        state: _state.GridState,
        data: PyTree,
        metrics: Mapping[str, Callable[..., Any]],
        *,
        subsets: Any = None,
        best: bool = False,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Each metric's value per model (padded models dropped), as numpy arrays.

        Args:
          state: a grid state.
          data: pytree of arrays with a common leading example axis.
          metrics: name -> ``(params, hparams, batch) -> value``: a scalar, or
            per-example values (leading axis: the examples) that are averaged.
          subsets: per-model subsets of ``data`` (as in ``train``).
          best: evaluate ``state.best_params`` (needs a trainer with ``validation``).
          batch_size: evaluate in batches of this many examples.

        Returns:
          dict name -> array with one entry per real model (in grid order).
        """
        fn = "grid.Trainer.evaluate"
        if not isinstance(state, _state.GridState):
            raise fail(fn, f"state must be a GridState, got {describe(state)}.", exc=TypeError)
        self._check_state_fits(fn, state)
        if not isinstance(metrics, Mapping) or not metrics:
            raise fail(
                fn,
                f"metrics must be a non-empty dict name -> function, got {describe(metrics)}.",
                exc=TypeError,
            )
        for k, m in metrics.items():
            check_callable(fn, f"metrics[{k!r}]", m, "(params, hparams, batch)")
        if best and state.best_params is None:
            raise fail(
                fn, "best=True needs a trainer with a validation function (best_params is None)."
            )
        if batch_size is not None:
            check_positive_int(fn, "batch_size", batch_size)
        n = _data.num_examples(fn, "data", data)
        if subsets is not None:
            subsets = _data.pack_subsets(fn, "subsets", subsets, n)
            _data.check_subset_hparam(fn, "subsets", subsets, _data.to_host(state.hparams))
        plan = _engine.Plan(
            self.strategy if self.strategy != "auto" else "vmap", self.group_size or 1, {}
        )
        if self.strategy == "auto":
            plans = [v for k, v in self._cache.items() if k[0] == "plan"]
            plan = plans[-1] if plans else plan
        names = tuple(metrics.items())
        key = ("evaluate", names, best, batch_size, plan.strategy, plan.group_size)
        if key not in self._cache:
            self._cache[key] = _engine.evaluate_program(
                names, self.mesh, plan, best=best, batch_size=batch_size
            )
        out = self._cache[key](
            state,
            _data.put(data, self.mesh, models=False),
            _data.as_device_subsets(subsets, self.mesh),
        )
        return state.to_host(out)

    # -- identity ---------------------------------------------------------------------

    def fingerprint(self, grid: Grid, data: PyTree = None, *, extra: Any = None) -> str:
        """A hash of what decides the results: the grid, the settings, the functions'
        names, the data's shapes and dtypes, and ``extra`` (e.g. command-line arguments).

        The functions' code and closed-over values are not seen: pass what varies
        through ``extra``. The strategy and mesh are left out (they do not change what
        is computed, only how).
        """

        def fname(f):
            return (
                None
                if f is None
                else f"{getattr(f, '__module__', '')}.{getattr(f, '__qualname__', type(f).__name__)}"
            )

        spec = {
            "grid": grid.fingerprint(),
            "key_rule": [_keys.INIT_STREAM, _keys.STEP_STREAM],
            "batch_size": self.batch_size,
            "chunk_steps": self.chunk_steps,
            "patience": self.patience,
            "functions": [
                fname(f) for f in (self.init, self.loss, self.optimizer, self.validation)
            ],
            "data": None
            if data is None
            else [
                [
                    list(np.shape(a)),
                    str(np.asarray(a).dtype) if not hasattr(a, "dtype") else str(a.dtype),
                ]
                for a in jax.tree_util.tree_leaves(data)
            ],
            "extra": repr(extra),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
