"""Dropout variants that change values instead of zeroing: Gaussian and alpha dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxreg import _bits, _mask, _rate
from jaxreg._checks import (
    check_float_array,
    check_key,
    check_key_first,
    check_scalar_nonnegative,
    fail,
    is_traced,
    valid_nonnegative,
)
from jaxreg._numerics import nan_unless, nonzero_or_one, safe_sqrt
from jaxreg._types import Array

# SELU's negative saturation value -lambda * alpha (Klambauer et al. 2017).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
ALPHA_PRIME = -_SELU_SCALE * _SELU_ALPHA


def gaussian_dropout(key: Any, x: Array, *, rate: float | Array) -> Array:
    """Multiplicative Gaussian noise with the variance of Bernoulli dropout.

    Each unit is multiplied by an independent ``N(1, rate / (1 - rate))`` sample: the
    same mean and variance as inverted dropout's ``Bernoulli(1 - rate) / (1 - rate)``.
    The noise is drawn and multiplied in float32 (or ``x``'s dtype where wider), then
    rounded once to ``x``'s dtype, so half-precision inputs near rate 1 overflow to
    inf where the product does, never to ``0 * inf = NaN``.

    Args:
      key: a PRNG key.
      x: floating-point input.
      rate: the equivalent drop probability (see ``dropout``). ``rate=1`` (infinite
        variance) returns zeros with zero gradients, by convention, as dropout does.

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014, section 10 (multiplicative Gaussian noise).
    """
    key, x, rate, early = _rate.check_op_args("gaussian_dropout", key, x, rate)
    if early is not None:
        return early
    wide = jnp.promote_types(x.dtype, jnp.float32)
    if _rate.static(rate) is not None:
        sigma = np.float32(np.sqrt(rate / (1.0 - rate)))
        noise = 1.0 + sigma * _bits.standard_normal(key, x.shape)
        return (x.astype(wide) * noise.astype(wide)).astype(x.dtype)
    keep = 1.0 - rate
    alive = keep > 0.0
    # sqrt has an infinite derivative at 0: safe_sqrt keeps d/d(rate) finite at rate 0.
    sigma = safe_sqrt(rate / nonzero_or_one(keep))
    noise = 1.0 + sigma * _bits.standard_normal(key, x.shape)
    x = jnp.where(alive, x, jnp.zeros((), x.dtype))  # rate 1: no inf * 0 in the gradient
    out = (x.astype(wide) * noise.astype(wide)).astype(x.dtype)
    return nan_unless(out, _rate.valid_rate(rate))


def alpha_dropout(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    broadcast_dims: int | Sequence[int] = (),
    noise_shape: Sequence[int | None] | None = None,
) -> Array:
    """Dropout for self-normalizing (SELU) networks.

    Dropped units are set to SELU's saturation value ``-lambda * alpha`` (not 0), then
    an affine map ``a * y + b`` restores zero mean and unit variance for inputs with
    zero mean and unit variance: with keep probability ``q = 1 - rate`` and
    ``alpha' = -lambda * alpha``, ``a = (q + alpha'^2 q (1 - q))^(-1/2)`` and
    ``b = -a (1 - q) alpha'``.

    ``broadcast_dims`` / ``noise_shape`` share one keep/drop draw along axes, as in
    ``dropout`` (Keras ``AlphaDropout(noise_shape=...)``): the mask is drawn at the
    reduced shape and broadcast, so a shared slice is either ``a * x + b`` everywhere
    or ``a * alpha' + b`` everywhere. Each unit still has the same marginal law, so the
    mean and variance property holds unit by unit.

    Args:
      key: a PRNG key.
      x: floating-point input (SELU activations).
      rate: probability of dropping a unit (see ``dropout``). ``rate=1`` returns zeros
        with zero gradients (the affine correction is undefined there).
      broadcast_dims: axes along which one mask value is shared (flax's argument).
      noise_shape: Keras-style alternative to ``broadcast_dims``: one entry per axis,
        1 to share along it, the axis size or None to draw independently.

    Returns:
      An array of ``x``'s shape and dtype. Gradients are ``a`` at kept units, 0 at
      dropped ones.

    References:
      Klambauer, Unterthiner, Mayr, Hochreiter. "Self-Normalizing Neural Networks."
      NeurIPS 2017.
    """
    fn = "alpha_dropout"
    key, x, rate, early = _rate.check_op_args(fn, key, x, rate)
    shape = _mask.mask_shape(fn, x.shape, broadcast_dims, noise_shape)
    if early is not None:
        return early
    q = 1.0 - rate
    if _rate.static(rate) is None:
        q = jnp.where(q > 0.0, q, 1.0)  # rate 1 is zeroed below; keep a, b finite
    a = (q + ALPHA_PRIME**2 * q * (1.0 - q)) ** -0.5
    b = -a * (1.0 - q) * ALPHA_PRIME
    keep = jnp.broadcast_to(_mask.draw_keep(key, shape, rate), x.shape)
    a = jnp.asarray(a).astype(x.dtype)
    b = jnp.asarray(b).astype(x.dtype)
    out = a * jnp.where(keep, x, jnp.asarray(ALPHA_PRIME, x.dtype)) + b
    if _rate.static(rate) is None:
        out = jnp.where(rate < 1.0, out, jnp.zeros((), x.dtype))
    return nan_unless(out, _rate.valid_rate(rate))


def gaussian_noise(key: Any, x: Array, *, stddev: float | Array) -> Array:
    """Additive zero-mean Gaussian noise: ``x + stddev * N(0, 1)`` (Keras ``GaussianNoise``).

    Unlike ``gaussian_dropout`` the noise is added, not multiplied, and its scale is a
    standard deviation, not a drop rate: any ``stddev >= 0`` is valid. The noise is
    drawn in float32 by the same engine as the other ops (equal to
    ``jax.random.normal(key, x.shape)``), scaled and added in float32 (or ``x``'s dtype
    where wider), then rounded once to ``x``'s dtype.
    Gradients: 1 with respect to ``x``, the drawn sample with respect to ``stddev``.

    Args:
      key: a PRNG key; None only for a Python ``stddev`` of 0 (``jaxreg.needs_key``
        is about rates: ask ``stddev != 0`` instead).
      x: floating-point input.
      stddev: the noise's standard deviation, >= 0 and finite: a Python number or a
        scalar array that may be traced (``jax.vmap`` over several works). A Python 0
        returns ``x`` itself and draws nothing. A traced negative, NaN or infinite
        value gives NaN.

    Returns:
      An array of ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> jaxreg.gaussian_noise(jax.random.key(0), jnp.ones((2, 3)), stddev=0.1).shape
      (2, 3)

    References:
      Sietsma & Dow. "Creating Artificial Neural Networks that Generalize." Neural
      Networks 4(1), 1991 (training with additive input noise).
      Bishop. "Training with Noise is Equivalent to Tikhonov Regularization." Neural
      Computation 7(1), 1995.
    """
    fn = "gaussian_noise"
    check_key_first(fn, key, x)
    x = check_float_array(fn, "x", x)
    stddev = check_scalar_nonnegative(fn, "stddev", stddev, finite=True)
    if isinstance(stddev, float) and stddev == 0.0:
        if key is not None:
            check_key(fn, key)
        return x
    if key is None:
        shown = "a traced value" if is_traced(stddev) else repr(np.asarray(stddev).tolist())
        raise fail(
            fn,
            f"key is None, but stddev={shown} draws random numbers. Pass a key from "
            "jax.random.key(seed); None is accepted only for a Python stddev of 0.",
            exc=TypeError,
        )
    key = check_key(fn, key)
    wide = jnp.promote_types(x.dtype, jnp.float32)  # add in float32, round once
    noise = jnp.asarray(stddev, wide) * _bits.standard_normal(key, x.shape).astype(wide)
    out = (x.astype(wide) + noise).astype(x.dtype)
    return nan_unless(out, valid_nonnegative(stddev, finite=True))
