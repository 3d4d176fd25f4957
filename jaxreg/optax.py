"""Optax gradient transformations built on jaxreg's penalties, prox operators, constraints.

Import it explicitly (``import jaxreg.optax``); ``import jaxreg`` never imports optax.
Every factory returns an ``optax.GradientTransformation`` that needs ``params`` in
``update``; its state is a ``ScheduleState`` (the step count at which schedules are
read), except ``constrain`` (``optax.EmptyState``), ``with_decoupled_weight_decay``
(``WithDecoupledWeightDecayState``) and ``decoupled_adamw`` (an ``optax.chain``'s
tuple). Where they go in a chain:

* ``add_penalty`` adds the gradient of a penalty to the gradients: put it *before* the
  optimizer (coupled regularization, like PyTorch's ``SGD(weight_decay=...)``).
* ``proximal_l1``, ``proximal_elastic_net``, ``proximal_group_lasso`` and ``constrain``
  rewrite the final updates so that ``params + updates`` is the proximal point or the
  projection: put them *last*, after the learning rate is applied.
* Decoupled weight decay must come after the optimizer too: prefer
  ``with_decoupled_weight_decay(optimizer, weight_decay=...)``, which cannot be put in
  the wrong place, or ``decoupled_adamw``; ``decoupled_weight_decay`` is the bare
  transform for the end of a chain, and ``check_decay_shrinks`` tests a finished
  optimizer for the misplaced form.

Strengths and learning rates accept a Python number, a scalar array or an optax
schedule; each is checked under the transform's own name where its value is concrete
(at construction, and a schedule's value at every ``update`` outside ``jit``); inside
``jit`` a negative, NaN or infinite value makes the updates it touches NaN. The
factories work under ``optax.inject_hyperparams``, which calls every callable as a
schedule and turns numbers into arrays: list the non-numeric arguments (``penalty``,
``projection``, a callable ``where``, ``axis``) in its ``static_args``. ``where`` plays
the role of optax's ``mask`` with jaxreg's rules: a bool pytree of the params' exact
structure or a callable returning one (e.g. ``jaxreg.kernels_only``), never a prefix,
a string or a lone bool; what can be checked without the params is checked at
construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxreg._checks import errors_named, fail
from jaxreg._filters import PyTree, Where, check_where_type, resolve_where
from jaxreg._optax_common import (
    STATIC_ARGS_HINT,
    ScalarOrSchedule,
    ScheduleState,
    check_callable,
    check_hyperparameter,
    check_signature,
    init_count,
    poison,
    require_params,
    value_at,
)
from jaxreg._optax_decay import WithDecoupledWeightDecayState as WithDecoupledWeightDecayState
from jaxreg._optax_decay import check_decay_shrinks as check_decay_shrinks
from jaxreg._optax_decay import decoupled_adamw as decoupled_adamw
from jaxreg._optax_decay import decoupled_weight_decay as decoupled_weight_decay
from jaxreg._optax_decay import with_decoupled_weight_decay as with_decoupled_weight_decay
from jaxreg._penalties import Axis
from jaxreg._prox import prox_elastic_net, prox_group_lasso, prox_l1

Array = jax.Array

__all__ = [
    "ScheduleState",
    "WithDecoupledWeightDecayState",
    "add_penalty",
    "check_decay_shrinks",
    "constrain",
    "decoupled_adamw",
    "decoupled_weight_decay",
    "proximal_elastic_net",
    "proximal_group_lasso",
    "proximal_l1",
    "with_decoupled_weight_decay",
]


def add_penalty(
    penalty: Callable[..., Array],
    strength: ScalarOrSchedule | None = None,
    *,
    where: Where = None,
) -> optax.GradientTransformation:
    """Adds the gradient of a jaxreg penalty to the updates (coupled regularization).

    The update becomes ``updates + grad(penalty)(params)`` on the selected leaves, with
    the gradient from ``jax.grad``. Placed before an optimizer, this is the same as
    adding the penalty to the loss. ``add_penalty(jaxreg.l2_penalty, s)`` equals
    ``optax.add_decayed_weights(2 * s)`` (jaxreg's L2 has no factor 1/2).

    Args:
      penalty: a function ``penalty(params, *, strength, where)``, e.g.
        ``jaxreg.l1_penalty``, ``jaxreg.l2_penalty``, ``jaxreg.group_lasso_penalty``,
        ``jaxreg.orthogonal_penalty`` (bind other arguments with ``functools.partial``).
        With ``strength=None`` it is called as ``penalty(params, where=...)``, so a
        ``partial(jaxreg.elastic_net_penalty, l1=a, l2=b)`` works too.
      strength: passed to ``penalty`` as ``strength``: a number >= 0, a scalar array or
        an optax schedule (evaluated at the step count), or None.
      where: which leaves the penalty sees (bool pytree or callable; None: every array
        leaf). Unselected leaves get no gradient and keep their updates.

    Returns:
      An ``optax.GradientTransformation`` with state ``ScheduleState``.

    References:
      Loshchilov & Hutter. "Decoupled Weight Decay Regularization." ICLR 2019 (coupled
      L2 versus decoupled weight decay).
    """
    fn = "optax.add_penalty"
    check_callable(fn, "penalty", penalty)
    passed = ("where",) if strength is None else ("where", "strength")
    check_signature(fn, "penalty", penalty, passed)
    if strength is not None:
        strength = check_hyperparameter(fn, "strength", strength)
    check_where_type(fn, where)

    def update(
        updates: PyTree, state: ScheduleState, params: PyTree | None = None
    ) -> tuple[PyTree, ScheduleState]:
        require_params(fn, updates, params)
        selected = resolve_where(fn, params, where)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        chosen = [i for i, c in enumerate(jax.tree_util.tree_leaves(selected)) if c]
        values = [] if strength is None else [value_at(fn, "strength", strength, state.count)]
        kwargs = {"strength": values[0]} if values else {}

        def value(chosen_leaves: list[Array]) -> Array:
            full = list(leaves)
            for i, leaf in zip(chosen, chosen_leaves, strict=True):
                full[i] = leaf
            tree = jax.tree_util.tree_unflatten(treedef, full)
            return penalty(tree, where=selected, **kwargs)

        with errors_named(fn):
            grads = jax.grad(value)([leaves[i] for i in chosen])
        out = jax.tree_util.tree_leaves(updates)
        for i, g in zip(chosen, grads, strict=True):
            out[i] = out[i] + g.astype(out[i].dtype)
        new_updates = poison(jax.tree_util.tree_unflatten(treedef, out), selected, values)
        return new_updates, ScheduleState(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init_count, update)


def _replace_step(
    fn: str,
    where: Where,
    project: Callable[[PyTree, PyTree, Array], tuple[PyTree, list[Any]]],
    *,
    counted: bool = True,
) -> optax.GradientTransformation:
    """Updates that move params to ``project(params + updates)`` on the selected leaves.

    ``project(candidate, selected, count)`` returns the target and the hyperparameter
    values it used (for ``poison``). Unselected leaves keep their updates bit for bit.
    Exact zeros of the projection stay exact: ``p + (0 - p) == 0`` in floating point.
    Without ``counted`` the state is ``optax.EmptyState`` and ``count`` is None.
    """
    check_where_type(fn, where)

    def update(updates: PyTree, state: Any, params: PyTree | None = None) -> tuple[PyTree, Any]:
        require_params(fn, updates, params)
        selected = resolve_where(fn, params, where)
        candidate = jax.tree_util.tree_map(
            lambda c, p, u: p + u.astype(p.dtype) if c else p, selected, params, updates
        )
        with errors_named(fn):
            target, values = project(candidate, selected, state.count if counted else None)
        new_updates = jax.tree_util.tree_map(
            lambda c, p, u, t: (t - p).astype(u.dtype) if c else u,
            selected,
            params,
            updates,
            target,
        )
        new_updates = poison(new_updates, selected, values)
        if not counted:
            return new_updates, state
        return new_updates, ScheduleState(count=optax.safe_int32_increment(state.count))

    init = init_count if counted else (lambda params: optax.EmptyState())
    return optax.GradientTransformation(init, update)


def proximal_l1(
    learning_rate: ScalarOrSchedule, *, strength: ScalarOrSchedule, where: Where = None
) -> optax.GradientTransformation:
    """Proximal L1 step: soft-thresholding after the update, giving exact zeros.

    Put it last in a chain whose updates are ``-learning_rate * direction`` (e.g.
    ``optax.chain(optax.sgd(lr), proximal_l1(lr, strength=s))``, ISTA for plain SGD): the new
    parameters are ``prox_l1(params + updates, threshold=learning_rate * strength)``,
    the proximal gradient step for ``loss + l1_penalty(strength=s)``. Pass the same
    learning rate (or schedule) as the optimizer.

    Args:
      learning_rate: the optimizer's step size: number, scalar array or schedule.
      strength: the ``l1_penalty`` coefficient: number >= 0, scalar array or schedule.
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScheduleState``.

    References:
      Parikh & Boyd. "Proximal Algorithms." Foundations and Trends in Optimization
      1(3), 2014, section 4.2 (proximal gradient method).
    """
    fn = "optax.proximal_l1"
    learning_rate = check_hyperparameter(fn, "learning_rate", learning_rate)
    strength = check_hyperparameter(fn, "strength", strength)

    def project(candidate: PyTree, selected: PyTree, count: Array) -> tuple[PyTree, list]:
        lr = value_at(fn, "learning_rate", learning_rate, count)
        s = value_at(fn, "strength", strength, count)
        return prox_l1(candidate, threshold=lr * s, where=selected), [lr, s]

    return _replace_step(fn, where, project)


def proximal_elastic_net(
    learning_rate: ScalarOrSchedule,
    *,
    l1: ScalarOrSchedule,
    l2: ScalarOrSchedule,
    where: Where = None,
) -> optax.GradientTransformation:
    """Proximal elastic-net step (``prox_elastic_net`` with ``lr * l1``, ``lr * l2``).

    The proximal gradient step for ``loss + elastic_net_penalty(l1=l1, l2=l2)``; put it
    last in the chain, as ``proximal_l1``.

    Args:
      learning_rate: the optimizer's step size: number, scalar array or schedule.
      l1: the L1 coefficient: number >= 0, scalar array or schedule.
      l2: the L2 coefficient (no factor 1/2): number >= 0, scalar array or schedule.
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScheduleState``.

    References:
      Zou & Hastie. "Regularization and Variable Selection via the Elastic Net." 2005.
      Parikh & Boyd. "Proximal Algorithms." 2014.
    """
    fn = "optax.proximal_elastic_net"
    learning_rate = check_hyperparameter(fn, "learning_rate", learning_rate)
    l1 = check_hyperparameter(fn, "l1", l1)
    l2 = check_hyperparameter(fn, "l2", l2)

    def project(candidate: PyTree, selected: PyTree, count: Array) -> tuple[PyTree, list]:
        lr = value_at(fn, "learning_rate", learning_rate, count)
        a = value_at(fn, "l1", l1, count)
        b = value_at(fn, "l2", l2, count)
        return prox_elastic_net(candidate, l1=lr * a, l2=lr * b, where=selected), [lr, a, b]

    return _replace_step(fn, where, project)


def proximal_group_lasso(
    learning_rate: ScalarOrSchedule,
    *,
    strength: ScalarOrSchedule,
    axis: Axis = 0,
    where: Where = None,
) -> optax.GradientTransformation:
    """Proximal group-lasso step: whole groups become exactly 0.

    The proximal gradient step for
    ``loss + group_lasso_penalty(strength=strength, axis=axis)``:
    ``prox_group_lasso(params + updates, threshold=learning_rate * strength)``. Put it
    last in the chain. Under ``optax.inject_hyperparams`` pass ``axis`` as a tuple (or
    list it in ``static_args``) so that it is not turned into an array.

    Args:
      learning_rate: the optimizer's step size: number, scalar array or schedule.
      strength: the ``group_lasso_penalty`` coefficient: number >= 0, array or schedule.
      axis: the axes each group norm runs over (see ``jaxreg.group_lasso_penalty``).
      where: which leaves to shrink (bool pytree or callable; None: every array leaf).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScheduleState``.

    References:
      Yuan & Lin. "Model Selection and Estimation in Regression with Grouped
      Variables." 2006. Parikh & Boyd. "Proximal Algorithms." 2014.
    """
    fn = "optax.proximal_group_lasso"
    learning_rate = check_hyperparameter(fn, "learning_rate", learning_rate)
    strength = check_hyperparameter(fn, "strength", strength)
    if hasattr(axis, "dtype"):
        raise fail(
            fn,
            f"axis must be an int or a tuple of ints, got an array {axis!r}.{STATIC_ARGS_HINT}",
            exc=TypeError,
        )

    def project(candidate: PyTree, selected: PyTree, count: Array) -> tuple[PyTree, list]:
        lr = value_at(fn, "learning_rate", learning_rate, count)
        s = value_at(fn, "strength", strength, count)
        out = prox_group_lasso(candidate, threshold=lr * s, axis=axis, where=selected)
        return out, [lr, s]

    return _replace_step(fn, where, project)


def constrain(
    projection: Callable[..., PyTree], *, where: Where = None
) -> optax.GradientTransformation:
    """Applies a constraint after the update, so that ``params + updates`` satisfies it.

    Put it last in the chain. The new parameters are
    ``projection(params + updates, where=...)`` (up to one rounding of
    ``params + updates`` in ``optax.apply_updates``).

    Args:
      projection: a function ``projection(params, *, where)`` such as
        ``jaxreg.non_negative``, ``jaxreg.unit_norm`` or
        ``functools.partial(jaxreg.max_norm, max_value=3.0, axis=0)``.
      where: which leaves to constrain (bool pytree or callable; None: every array
        leaf). Unselected leaves keep their updates.

    Returns:
      An ``optax.GradientTransformation`` with state ``optax.EmptyState``.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014 (max-norm after every update).
    """
    fn = "optax.constrain"
    check_callable(fn, "projection", projection)
    check_signature(fn, "projection", projection, ("where",))

    def project(candidate: PyTree, selected: PyTree, _: None) -> tuple[PyTree, list]:
        return projection(candidate, where=selected), []

    return _replace_step(fn, where, project, counted=False)
