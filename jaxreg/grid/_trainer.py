"""``Trainer``: the user's functions and settings; init, train chunk by chunk, evaluate."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from jaxreg._checks import check_callable, check_choice, check_positive_int, describe, fail
from jaxreg.grid import _data, _engine, _inputs, _state
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
      chunk_steps: steps per compiled chunk (one ``lax.fori_loop``); the callback, the
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

        Args:
          grid: the models (``product`` or ``rows``); a ``seed`` axis is optional (0).
          data: the training data; only its shapes are used, to check that ``loss``
            returns a scalar on a batch.

        Returns:
          A ``GridState`` at step 0 (also the structure a checkpoint restores into).
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
        aux = _inputs.check_loss(self, fn, hparams, data)
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
        args = _inputs.prepare(self, fn, state, data, subsets, validation_data, validation_subsets)
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
        program = self._chunk(state, args)
        chunk = self._steps_arg()
        state = _engine.copy(state)  # the program consumes its input
        for c in range(done // self.chunk_steps, steps // self.chunk_steps):
            state = program(state, chunk, *args)
            if callback is not None:
                callback(state, c)
        return state

    def _steps_arg(self) -> jax.Array:
        if "steps" not in self._cache:
            self._cache["steps"] = _engine.steps_arg(self.chunk_steps, self.mesh)
        return self._cache["steps"]

    def _signature(self, state, args) -> tuple:
        shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), (state, args))
        leaves, tree = jax.tree_util.tree_flatten(shapes)
        return (tree, tuple(leaves))

    def _plan(self, state, args) -> tuple[_engine.Plan, Callable | None]:
        """The plan for this state and data, and its program if the probe made it."""
        if self.strategy != "auto":
            return _engine.Plan(self.strategy, self.group_size or 1, {}), None
        recorded = int(_data.first_value(state.plan))
        if recorded >= 0:  # a resumed state keeps the plan it was trained with
            return _engine.Plan.from_code(recorded), None
        key = ("probe", self._signature(state, args))
        if key not in self._cache:
            self._cache[key] = _engine.probe(self, self.mesh, state, args)
        return self._cache[key]

    def _chunk(self, state, args):
        plan, probed = self._plan(state, args)
        has_aux = state.aux is not None
        key = ("chunk", plan.code, has_aux)
        if key not in self._cache:
            self._cache[key] = probed or _engine.chunk_program(
                self, self.mesh, plan, has_aux=has_aux
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
        args = _inputs.prepare(
            self, "grid.Trainer.plan", state, data, subsets, validation_data, validation_subsets
        )
        return self._plan(state, args)[0]

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
        args = _inputs.prepare(
            self, "grid.Trainer.lower", state, data, subsets, validation_data, validation_subsets
        )
        return self._chunk(state, args).lower(state, self._steps_arg(), *args)

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
        _inputs.check_state(fn, state, self.mesh)
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
        plan = self._evaluate_plan(state)
        program = _engine.evaluate_program(
            tuple(metrics.items()), self.mesh, plan.code, best, batch_size
        )
        out = program(
            state,
            _data.put(data, self.mesh, models=False),
            _data.as_device_subsets(subsets, self.mesh),
        )
        return state.to_host(out)

    def _evaluate_plan(self, state) -> _engine.Plan:
        """Evaluation runs the models as training did (vmap when not trained yet)."""
        if self.strategy != "auto":
            return _engine.Plan(self.strategy, self.group_size or 1, {})
        return _engine.Plan.from_code(max(int(_data.first_value(state.plan)), 0))

    # -- identity ---------------------------------------------------------------------

    # -- identity ---------------------------------------------------------------------

    def fingerprint(self, grid: Grid, data: PyTree = None, *, extra: Any = None) -> str:
        """A hash of what decides the results, to refuse resuming another grid.

        Covers the grid (names, values, order), ``batch_size``, ``chunk_steps``,
        ``patience``, the key rule, the functions' qualified names, the data's shapes
        and dtypes, and ``repr(extra)``. The functions' code and closed-over values are
        not seen: pass what varies (e.g. command-line arguments) as ``extra``. The
        strategy and mesh are left out: a state records its plan (``GridState.plan``).

        Args:
          grid: the grid.
          data: the training data (only shapes and dtypes are used), or None.
          extra: anything with a stable ``repr``.

        Returns:
          16 hex digits.
        """
        return _inputs.fingerprint(self, grid, data, extra)
