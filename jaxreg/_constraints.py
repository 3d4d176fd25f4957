"""Weight constraints as projections: max-norm, unit-norm, non-negativity.

Each function returns the projected parameters; apply it after every optimizer step
(``jaxreg.optax.constrain_max_norm`` and friends do it inside an optax chain). Selected
leaves are projected; the others are returned unchanged.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxreg._checks import check_scalar_nonnegative, valid_nonnegative
from jaxreg._filters import Where, map_selected, path_string
from jaxreg._numerics import nan_unless, nonzero_or_one, safe_divide
from jaxreg._trees import group_norms, selection
from jaxreg._types import Array, Axis, PyTree, Strength


def max_norm(params: PyTree, *, max_value: Strength, axis: Axis = 0, where: Where = None) -> PyTree:
    """Rescales every unit whose weight norm exceeds ``max_value`` down to ``max_value``.

    ``axis`` names the axes each norm runs over, as in Keras's ``MaxNorm``: for a Dense
    kernel ``(in, out)`` the default ``axis=0`` bounds the incoming weight vector of each
    output unit (Srivastava et al.'s constraint); for a conv kernel
    ``(h, w, in, out)`` use ``axis=(0, 1, 2)``. Units within the bound are left exactly
    as they are (no epsilon shrinkage). Norms are computed scaled, so every finite unit
    is handled, from norms near 1e-38 up to 3e38 in float32. Selecting biases (rank 1,
    ``axis=0``) bounds the whole bias vector; pass ``where=jaxreg.kernels_only`` to skip them.

    Args:
      params: a pytree of floating-point arrays.
      max_value: the bound, >= 0 (number or scalar array that may be traced; a traced
        negative value gives NaN).
      axis: an axis or a sequence of axes, checked against every selected leaf's rank.
      where: which leaves to constrain (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` whose selected units have norm <= ``max_value`` (up to
      rounding).

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: A Simple Way
      to Prevent Neural Networks from Overfitting." JMLR 15, 2014, section 5.1.
    """
    fn = "max_norm"
    c = check_scalar_nonnegative(fn, "max_value", max_value)

    def project(path: tuple, w: Array) -> Array:
        x, norm = group_norms(fn, path_string(path), w, axis)
        over = norm > c
        scale = jnp.where(over, c / nonzero_or_one(norm), 1.0)
        return nan_unless((x * scale).astype(w.dtype), valid_nonnegative(c))

    return map_selected(project, params, selection(fn, params, where))


def unit_norm(params: PyTree, *, axis: Axis = 0, where: Where = None) -> PyTree:
    """Divides every unit by its Euclidean norm along ``axis`` (Keras's ``UnitNorm``).

    Groups are as in ``max_norm``. An all-zero unit has no direction and stays zero.
    Norms are computed scaled, so units of any finite size are normalized (a unit of
    norm 1e-30 or 1e30 in float32 becomes a unit vector).

    Args:
      params: a pytree of floating-point arrays.
      axis: an axis or a sequence of axes, checked against every selected leaf's rank.
      where: which leaves to constrain (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` whose selected non-zero units have norm 1 (up to
      rounding).

    References:
      Salimans & Kingma. "Weight Normalization." NeurIPS 2016 (the unit-norm direction
      of weight vectors).
    """
    fn = "unit_norm"

    def project(path: tuple, w: Array) -> Array:
        x, norm = group_norms(fn, path_string(path), w, axis)
        return safe_divide(x, norm).astype(w.dtype)

    return map_selected(project, params, selection(fn, params, where))


def non_negative(params: PyTree, *, where: Where = None) -> PyTree:
    """Projects onto the non-negative orthant: ``max(w, 0)`` (Keras's ``NonNeg``).

    Args:
      params: a pytree of floating-point arrays.
      where: which leaves to constrain (bool pytree or callable; None: every array leaf).

    Returns:
      A pytree like ``params`` whose selected leaves are >= 0.

    References:
      Parikh & Boyd. "Proximal Algorithms." 2014, section 6.2 (projection onto the
      non-negative orthant).
    """
    fn = "non_negative"
    return map_selected(
        lambda _, w: jnp.maximum(w, jnp.zeros((), w.dtype)),
        params,
        selection(fn, params, where),
    )
