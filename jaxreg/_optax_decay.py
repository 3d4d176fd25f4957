"""Decoupled weight decay and AdamW as Loshchilov & Hutter wrote them.

Re-exported by ``jaxreg.optax``; import that module, not this one.

Decoupled weight decay must act on the *final* updates, after the optimizer has
rescaled the gradients and applied the learning rate. Placed first in a chain with
Adam, ``-lambda * w`` is normalised by Adam like a gradient and its sign flips: weights
grow (measured: 1.0 -> 2.13 in 100 zero-gradient steps). A transform cannot see where
it sits in a chain (optax hands it only its own state and the incoming updates, which
look the same before and after an optimizer), so the misplaced form cannot be detected
from inside ``decoupled_weight_decay``. Hence:

* ``with_decoupled_weight_decay(optimizer, ...)`` takes the optimizer and applies the
  decay after it: it cannot be misplaced. ``decoupled_adamw`` is built the same way.
* ``check_decay_shrinks(optimizer, params)`` detects the misplaced form from outside:
  one update with zero gradients must not grow any parameter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreg._checks import check_scalar_nonnegative, describe, fail, valid_nonnegative
from jaxreg._filters import Where, is_inexact_array, path_string
from jaxreg._numerics import nan_unless
from jaxreg._optax_common import (
    ScalarOrSchedule,
    ScheduleState,
    StrengthOrSchedule,
    check_finite,
    check_hyperparameter,
    check_unit_interval,
    init_count,
    require_params,
    selective_update,
    value_at,
)
from jaxreg._trees import leaf_strengths
from jaxreg._types import Array, PyTree


def decoupled_weight_decay(
    weight_decay: StrengthOrSchedule,
    *,
    multiplier: ScalarOrSchedule = 1.0,
    where: Where = None,
) -> optax.GradientTransformation:
    """Decoupled weight decay as in Loshchilov & Hutter: ``-multiplier * weight_decay * w``.

    The bare transform: it must be the **last** element of a chain, after the learning
    rate is applied (``optax.chain(optax.adam(lr), decoupled_weight_decay(...))``).
    Placed before the optimizer, the decay is rescaled like a gradient and, with Adam
    or SGD, grows the weights instead; nothing inside the transform can see that.
    ``with_decoupled_weight_decay(optimizer, weight_decay=...)`` cannot be misplaced;
    ``check_decay_shrinks`` tests a finished optimizer.

    The step becomes ``updates - eta_t * lambda * params`` with ``eta_t = multiplier``
    (the paper's schedule multiplier, 1 for a constant schedule) and
    ``lambda = weight_decay``. The decay does not depend on the base learning rate
    ``alpha``. ``optax.adamw(learning_rate, weight_decay=wd)`` and PyTorch's ``AdamW``
    instead subtract ``learning_rate * wd * params``: the two agree when
    ``wd = lambda / alpha``. Complex parameters decay like real ones
    (``w <- w - eta_t * lambda * w``), as in ``optax.adamw``.

    Args:
      weight_decay: ``lambda``: finite number >= 0, scalar array, schedule, or a
        pytree of those with one value per leaf (or subtree) of the params.
      multiplier: ``eta_t``: finite number >= 0, scalar array or schedule.
      where: which leaves decay (bool pytree or callable; None: every array leaf),
        e.g. ``jaxreg.kernels_only`` to skip biases and norm scales.

    Returns:
      An ``optax.GradientTransformation`` with state ``ScheduleState``.

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019,
      Algorithm 2, line 12.
    """
    fn = "optax.decoupled_weight_decay"
    weight_decay = check_hyperparameter(fn, "weight_decay", weight_decay, per_leaf=True)
    multiplier = check_hyperparameter(fn, "multiplier", multiplier)
    return _decay(fn, weight_decay, multiplier, where)


def _decay(
    fn: str, weight_decay: StrengthOrSchedule, multiplier: ScalarOrSchedule, where: Where
) -> optax.GradientTransformation:
    """Decoupled decay on checked values; errors in ``update`` name ``fn``."""

    def step(updates: PyTree, params: PyTree, selected: PyTree, count: Array) -> tuple:
        m = value_at(fn, "multiplier", multiplier, count)
        wd = value_at(fn, "weight_decay", weight_decay, count)
        _, decays = leaf_strengths(fn, "weight_decay", wd, params)
        flat, treedef = jax.tree_util.tree_flatten(params)
        out = [
            (u - (m * s) * p).astype(u.dtype) if c else u
            for c, u, p, s in zip(
                jax.tree_util.tree_leaves(selected),
                jax.tree_util.tree_leaves(updates),
                flat,
                decays,
                strict=True,
            )
        ]
        return jax.tree_util.tree_unflatten(treedef, out), [m, wd]

    update = selective_update(fn, where, step, complex_ok=True)
    return optax.GradientTransformation(init_count, update)


class WithDecoupledWeightDecayState(NamedTuple):
    """State of ``with_decoupled_weight_decay``: the optimizer's state and the step count."""

    inner_state: Any
    count: Array


def with_decoupled_weight_decay(
    optimizer: optax.GradientTransformation,
    *,
    weight_decay: ScalarOrSchedule,
    multiplier: ScalarOrSchedule = 1.0,
    where: Where = None,
) -> optax.GradientTransformationExtraArgs:
    """An optimizer followed by decoupled weight decay: the decay cannot be misplaced.

    The updates are ``optimizer``'s updates minus ``multiplier * weight_decay * params``
    on the selected leaves: ``decoupled_weight_decay`` applied *after* the whole
    optimizer (learning rate included). With ``optimizer = optax.adam(alpha * eta)``
    this is the paper's AdamW, ``decoupled_adamw(alpha, weight_decay=lambda,
    multiplier=eta)``; with ``optax.sgd(alpha * eta)`` it is the paper's SGDW.

    Extra arguments of ``update`` (e.g. ``value=`` for ``optax.contrib`` optimizers)
    are passed to ``optimizer``.

    Args:
      optimizer: an ``optax.GradientTransformation`` producing final updates (its
        learning rate applied), e.g. ``optax.adam(1e-3)`` or an ``optax.chain``.
      weight_decay: ``lambda``: finite number >= 0, scalar array, schedule, or a
        pytree of those per leaf (or subtree) of the params.
      multiplier: ``eta_t``: finite number >= 0, scalar array or schedule; pass the
        same schedule the optimizer's learning rate follows (divided by its peak).
      where: which leaves decay (bool pytree or callable; None: every array leaf).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      ``WithDecoupledWeightDecayState``.

    Example:
      >>> import jax.numpy as jnp, optax, jaxreg, jaxreg.optax
      >>> tx = jaxreg.optax.with_decoupled_weight_decay(
      ...     optax.adam(1e-3), weight_decay=1e-4, where=jaxreg.kernels_only)
      >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
      >>> type(tx.init(params)).__name__
      'WithDecoupledWeightDecayState'

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019,
      Algorithms 1 and 2.
    """
    fn = "optax.with_decoupled_weight_decay"
    methods = (getattr(optimizer, "init", None), getattr(optimizer, "update", None))
    if not all(callable(m) for m in methods):
        raise fail(
            fn,
            f"optimizer must be an optax.GradientTransformation, got {describe(optimizer)}. "
            "Pass e.g. optax.adam(1e-3).",
            exc=TypeError,
        )
    weight_decay = check_hyperparameter(fn, "weight_decay", weight_decay, per_leaf=True)
    multiplier = check_hyperparameter(fn, "multiplier", multiplier)
    inner = optax.with_extra_args_support(optimizer)
    decay = _decay(fn, weight_decay, multiplier, where)

    def init(params: PyTree) -> WithDecoupledWeightDecayState:
        return WithDecoupledWeightDecayState(optimizer.init(params), init_count(params).count)

    def update(
        updates: PyTree,
        state: WithDecoupledWeightDecayState,
        params: PyTree | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, WithDecoupledWeightDecayState]:
        require_params(fn, updates, params)
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        updates, counted = decay.update(updates, ScheduleState(state.count), params)
        return updates, WithDecoupledWeightDecayState(inner_state, counted.count)

    return optax.GradientTransformationExtraArgs(init, update)


def _check_mu_dtype(fn: str, mu_dtype: Any) -> Any:
    if mu_dtype is None:
        return None
    try:
        dtype = jnp.dtype(mu_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
        raise fail(
            fn,
            f"mu_dtype must be None or a floating dtype, got {describe(mu_dtype)}.",
            exc=TypeError,
        )
    return dtype


def decoupled_adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: StrengthOrSchedule = 1e-4,
    where: Where = None,
    *,
    multiplier: ScalarOrSchedule = 1.0,
) -> optax.GradientTransformation:
    """AdamW as written by Loshchilov & Hutter (their Algorithm 2).

    ``params <- params - eta_t * (alpha * adam_direction + lambda * params)`` with
    ``alpha = learning_rate``, ``eta_t = multiplier`` and ``lambda = weight_decay``:
    ``optax.chain(optax.scale_by_adam(b1, b2, eps), optax.scale_by_learning_rate(
    alpha * eta_t), decoupled_weight_decay(lambda, multiplier=eta_t))``. It equals
    ``optax.adamw(alpha * eta_t, weight_decay=lambda / alpha)`` (same ``mu_dtype``),
    and ``with_decoupled_weight_decay(optax.adam(alpha * eta_t), weight_decay=lambda,
    multiplier=eta_t)``; tuning ``alpha`` here leaves the decay per step unchanged.
    Complex parameters are supported, as in ``optax.adamw``.

    The signature is ``optax.adamw``'s, positions and defaults included, with one
    documented difference: optax's ``mask`` is ``where`` (jaxreg's rules), and the decay
    is multiplied by ``multiplier``, not by the learning rate (keyword-only, last).

    Args:
      learning_rate: ``alpha``, finite number >= 0, scalar array or schedule.
      b1: Adam's first-moment decay, in [0, 1).
      b2: Adam's second-moment decay, in [0, 1).
      eps: Adam's epsilon (added to the root), finite and >= 0.
      eps_root: epsilon inside the root, finite and >= 0 (as ``optax.scale_by_adam``).
      mu_dtype: dtype of the first moment (None: the params' dtype), as in
        ``optax.adamw``; e.g. ``jnp.bfloat16`` to halve its memory.
      weight_decay: ``lambda``, finite number >= 0, scalar array, schedule, or a
        pytree of those per leaf (or subtree) of the params; default ``1e-4`` as
        ``optax.adamw``.
      where: which leaves decay (bool pytree or callable; None: every array leaf).
      multiplier: ``eta_t``, finite number >= 0, scalar array or schedule (e.g. a
        cosine schedule from 1 to 0).

    Returns:
      An ``optax.GradientTransformation`` (an ``optax.chain``).

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019.
    """
    fn = "optax.decoupled_adamw"
    learning_rate = check_hyperparameter(fn, "learning_rate", learning_rate)
    weight_decay = check_hyperparameter(fn, "weight_decay", weight_decay, per_leaf=True)
    multiplier = check_hyperparameter(fn, "multiplier", multiplier)
    b1 = check_unit_interval(fn, "b1", b1)
    b2 = check_unit_interval(fn, "b2", b2)
    for name, value in (("eps", eps), ("eps_root", eps_root)):
        check_finite(fn, name, check_scalar_nonnegative(fn, name, value))
    mu_dtype = _check_mu_dtype(fn, mu_dtype)

    def step_size(count: Array) -> Array:
        lr = value_at(fn, "learning_rate", learning_rate, count)
        m = value_at(fn, "multiplier", multiplier, count)
        return nan_unless(lr * m, valid_nonnegative(lr, m, finite=True))

    either_scheduled = callable(learning_rate) or callable(multiplier)
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype),
        optax.scale_by_learning_rate(step_size if either_scheduled else step_size(0)),
        _decay(fn, weight_decay, multiplier, where),
    )


def check_decay_shrinks(
    optimizer: optax.GradientTransformation, params: PyTree, state: Any = None
) -> None:
    """Raises ValueError if one update with zero gradients grows any parameter.

    With zero gradients, Adam, SGD (with or without momentum) and the like move
    nothing, so a correctly placed weight decay can only shrink weights. A decoupled
    decay placed *before* the optimizer is rescaled like a gradient and grows them
    (its sign flips): this check catches that misplacement, whatever the optimizer.
    Call it once on the finished optimizer, e.g. in a test.

    Where it cannot see the problem: a decay whose value is 0 at the probed step (a
    warm-up schedule starting at 0: pass a later ``state``); leaves the decay does not
    select. And it also fails for chains that legitimately grow weights without
    gradients (``constrain(jaxreg.unit_norm)`` on small weights).

    Args:
      optimizer: the ``optax.GradientTransformation`` to probe.
      params: parameters to probe with (non-zero where decay should act).
      state: the optimizer state to probe from (default: ``optimizer.init(params)``).

    Returns:
      None.

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019
      (decay applied to the weights, after the adaptive step).
    """
    fn = "optax.check_decay_shrinks"
    state = optimizer.init(params) if state is None else state
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, state, params)
    moved = optax.apply_updates(params, updates)
    for (path, before), after in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(moved), strict=True
    ):
        if not is_inexact_array(before):
            continue
        old = float(np.linalg.norm(np.asarray(before, np.complex128).ravel()))
        new = float(np.linalg.norm(np.asarray(after, np.complex128).ravel()))
        leaf = path_string(path) or "params"
        if not np.isfinite(new) or new > old * (1 + 1e-6):
            raise fail(
                fn,
                f"one update with zero gradients takes params leaf {leaf!r} from norm "
                f"{old:.6g} to {new:.6g}: weight decay placed before the optimizer (or "
                "its learning rate) is rescaled like a gradient and grows the weights. "
                "Use jaxreg.optax.with_decoupled_weight_decay(optimizer, weight_decay=...)"
                ", or put jaxreg.optax.decoupled_weight_decay last in the chain.",
            )
