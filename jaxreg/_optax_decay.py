"""Decoupled weight decay and AdamW as Loshchilov & Hutter wrote them.

Re-exported by ``jaxreg.optax``; import that module, not this one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from jaxreg._filters import PyTree, Where, resolve_where
from jaxreg._optax_common import (
    ScalarOrSchedule,
    at,
    check_hyperparameter,
    init_count,
    require_params,
)

Array = jax.Array


class DecoupledWeightDecayState(NamedTuple):
    """State of ``decoupled_weight_decay``: the step count, for schedules."""

    count: Array


def decoupled_weight_decay(
    strength: ScalarOrSchedule, *, multiplier: ScalarOrSchedule = 1.0, where: Where = None
) -> optax.GradientTransformation:
    """Decoupled weight decay as in Loshchilov & Hutter: ``-multiplier * strength * w``.

    Put it last, after the learning rate is applied: the step becomes
    ``updates - eta_t * lambda * params`` with ``eta_t = multiplier`` (the paper's
    schedule multiplier, 1 for a constant schedule) and ``lambda = strength``. The decay
    does not depend on the base learning rate ``alpha``.

    ``optax.adamw(learning_rate, weight_decay=wd)`` and PyTorch's ``AdamW`` instead
    subtract ``learning_rate * wd * params``: the decay is multiplied by the full
    learning rate ``alpha * eta_t``. The two agree when ``wd = lambda / alpha``.
    ``optax.add_decayed_weights(wd)`` placed *before* the learning rate is that same
    optax form; placed before an adaptive optimizer it is coupled L2 instead.

    Args:
      strength: ``lambda``: number >= 0, scalar array or schedule.
      multiplier: ``eta_t``: number >= 0, scalar array or schedule.
      where: which leaves decay (bool pytree or callable; None: every array leaf),
        e.g. ``jaxreg.kernels_only`` to skip biases and norm scales.

    Returns:
      An ``optax.GradientTransformation`` with state ``DecoupledWeightDecayState``.

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019,
      Algorithm 2, line 12.
    """
    fn = "optax.decoupled_weight_decay"
    strength = check_hyperparameter(fn, "strength", strength)
    multiplier = check_hyperparameter(fn, "multiplier", multiplier)
    return _decay(fn, strength, multiplier, where)


def _decay(
    fn: str, strength: ScalarOrSchedule, multiplier: ScalarOrSchedule, where: Where
) -> optax.GradientTransformation:
    """``decoupled_weight_decay`` on checked values; errors in ``update`` name ``fn``."""

    def update(
        updates: PyTree, state: DecoupledWeightDecayState, params: PyTree | None = None
    ) -> tuple[PyTree, DecoupledWeightDecayState]:
        require_params(fn, updates, params)
        mask = resolve_where(fn, params, where)
        decay = at(multiplier, state.count) * at(strength, state.count)
        new_updates = jax.tree_util.tree_map(
            lambda m, u, p: (u - decay * p).astype(u.dtype) if m else u, mask, updates, params
        )
        return new_updates, DecoupledWeightDecayState(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init_count(DecoupledWeightDecayState), update)


def decoupled_adamw(
    learning_rate: ScalarOrSchedule,
    *,
    weight_decay: ScalarOrSchedule,
    multiplier: ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    where: Where = None,
) -> optax.GradientTransformation:
    """AdamW as written by Loshchilov & Hutter (their Algorithm 2).

    ``params <- params - eta_t * (alpha * adam_direction + lambda * params)`` with
    ``alpha = learning_rate``, ``eta_t = multiplier`` and ``lambda = weight_decay``:
    ``optax.chain(optax.scale_by_adam(b1, b2, eps), optax.scale_by_learning_rate(
    alpha * eta_t), decoupled_weight_decay(lambda, multiplier=eta_t))``. It equals
    ``optax.adamw(alpha * eta_t, weight_decay=lambda / alpha)``; tuning ``alpha`` here
    leaves the decay per step unchanged.

    Args:
      learning_rate: ``alpha``, number >= 0, scalar array or schedule.
      weight_decay: ``lambda``, number >= 0, scalar array or schedule.
      multiplier: ``eta_t``, number >= 0, scalar array or schedule (e.g. a cosine
        schedule from 1 to 0).
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      eps: Adam's epsilon.
      where: which leaves decay (bool pytree or callable; None: every array leaf).

    Returns:
      An ``optax.GradientTransformation`` (an ``optax.chain``).

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019.
    """
    fn = "optax.decoupled_adamw"
    learning_rate = check_hyperparameter(fn, "learning_rate", learning_rate)
    weight_decay = check_hyperparameter(fn, "weight_decay", weight_decay)
    multiplier = check_hyperparameter(fn, "multiplier", multiplier)

    def step_size(count: Array) -> Array:
        return at(learning_rate, count) * at(multiplier, count)

    either_scheduled = callable(learning_rate) or callable(multiplier)
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.scale_by_learning_rate(step_size if either_scheduled else step_size(0)),
        _decay(fn, weight_decay, multiplier, where),
    )
