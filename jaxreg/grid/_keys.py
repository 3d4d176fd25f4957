"""The key rule: every model's randomness from its seed and the step number.

::

    base = jax.random.key(seed)
    init_key = fold_in(base, 0)
    step_key = fold_in(fold_in(base, 1), step)
    batch_key, loss_key = split(step_key)

Models that share a seed share their initialisation, minibatches and loss keys; a model
trained alone draws exactly what its row of a grid draws.
"""

from __future__ import annotations

import jax

INIT_STREAM = 0
STEP_STREAM = 1
STEP = "step"  # the name under which the loss sees the step number in its hparams


def init_key(seed: jax.Array) -> jax.Array:
    """The key ``init(key, hparams)`` gets."""
    return jax.random.fold_in(jax.random.key(seed), INIT_STREAM)


def step_keys(seed: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(batch_key, loss_key)`` of step ``step`` (0 for the first step)."""
    stream = jax.random.fold_in(jax.random.key(seed), STEP_STREAM)
    batch_key, loss_key = jax.random.split(jax.random.fold_in(stream, step))
    return batch_key, loss_key
