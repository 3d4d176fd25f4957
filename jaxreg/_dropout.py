"""Bernoulli dropout on activations: standard, classic, spatial and variational."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from jaxreg import _mask, _rate
from jaxreg._checks import (
    check_bool,
    check_channel_axis,
    check_float_array,
    check_key_first,
    check_probability,
    fail,
    normalize_axes,
)
from jaxreg._numerics import nan_unless
from jaxreg._types import Array


def drop_units(
    fn: str,
    key: Any,
    x: Any,
    rate: Any,
    *,
    broadcast_dims: int | Sequence[int] = (),
    noise_shape: Sequence[int | None] | None = None,
    inverted: bool = True,
    sampler: str = "exact",
) -> Array:
    """The dropout ops' shared body: validate, draw one keep-mask, apply it.

    The mask is drawn at the (possibly reduced) mask shape; ``fn`` names the public op
    in errors.
    """
    key, x, rate, early = _rate.check_op_args(fn, key, x, rate)
    sampler = _mask.check_sampler(fn, sampler)
    inverted = check_bool(fn, "inverted", inverted)
    shape = _mask.mask_shape(fn, x.shape, broadcast_dims, noise_shape)
    if early is not None:
        return early
    return _mask.draw_and_apply(key, x, rate, shape, inverted=inverted, sampler=sampler)


def dropout(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    broadcast_dims: int | Sequence[int] = (),
    noise_shape: Sequence[int | None] | None = None,
    inverted: bool = True,
    sampler: str = "exact",
) -> Array:
    """Dropout: zeroes each unit with probability ``rate``.

    Inverted dropout (the default) scales kept units by 1/(1 - rate) during training, so
    nothing changes at inference. ``inverted=False`` is the classic form of the original
    paper: no scaling in training, and the network's activations are multiplied by
    ``1 - rate`` at inference (``scale_for_inference``). Both have the same expectation.

    The mask equals ``flax.linen.Dropout``'s (and ``jax.random.bernoulli(key, 1 - rate,
    shape)``) for the same key and rate, also under ``jax_enable_x64``, and so does the
    output, bit for bit for a Python rate. An array rate ``r`` keeps with probability
    ``1 - r`` in float32: flax at ``float(r)`` bit for bit (see the README for the
    comparison with the decimal). One exception, for both: where flax's division by
    ``1 - rate`` would be biased (keep probabilities below 1/8 that the 23-bit threshold
    rounds by more than a relative 2**-20, e.g. ``rate = 1 - 1e-12``; every rate up to
    0.875 is exact) kept units are divided by the realised keep probability instead, so
    every rate gives an unbiased output.

    Args:
      key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``). ``jax.vmap``
        over threefry keys equals a loop over them; over ``rbg``/``unsafe_rbg`` keys it
        does not, in JAX itself (jax#19085), and so neither here.
      x: floating-point input of any shape; the output has its shape and dtype.
      rate: probability of dropping a unit (not the keep probability). A Python number
        in [0, 1] or a scalar array that may be traced (``jax.vmap`` over rates works).
        A traced rate outside [0, 1] or NaN makes the output NaN. Python ``rate=0``
        returns ``x`` and draws nothing; ``rate=1`` returns zeros with zero gradients.
      broadcast_dims: axes along which one mask value is shared (flax's argument).
      noise_shape: Keras-style alternative to ``broadcast_dims``: one entry per axis,
        1 to share along it, the axis size or None to draw independently.
      inverted: scale kept units by 1/(1 - rate) (True) or not (False); a Python bool.
      sampler: ``"exact"`` (default): flax's and ``jax.random.bernoulli``'s mask.
        ``"fast"``: 8-bit thresholds, eight draws per hash (faster, see ``bench/``); the
        drop rate is rounded to a multiple of 1/256 (at least 1/256 kept for every rate
        below 1) and kept units are divided by the realised keep probability, so the
        output stays unbiased.

    Returns:
      An array of ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> y = jaxreg.dropout(jax.random.key(0), jnp.ones((2, 3)), rate=0.5)
      >>> y.shape, y.dtype
      ((2, 3), dtype('float32'))

    References:
      Srivastava, Hinton, Krizhevsky, Sutskever, Salakhutdinov. "Dropout: A Simple Way
      to Prevent Neural Networks from Overfitting." JMLR 15, 2014.
    """
    return drop_units(
        "dropout",
        key,
        x,
        rate,
        broadcast_dims=broadcast_dims,
        noise_shape=noise_shape,
        inverted=inverted,
        sampler=sampler,
    )


def scale_for_inference(x: Array, *, rate: float | Array) -> Array:
    """Multiplies by ``1 - rate``: the inference step of classic (non-inverted) dropout.

    Use it on the activations (or weights) that ``dropout(..., inverted=False)`` acted
    on during training.

    Args:
      x: floating-point array.
      rate: the drop probability used in training.

    Returns:
      ``x * (1 - rate)`` in ``x``'s dtype (NaN for a traced rate outside [0, 1]).
      Rate 1 gives zeros, also where ``x`` is inf or NaN (every unit was dropped in
      training), with zero gradients.

    References:
      Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from
      Overfitting." JMLR 15, 2014, section 2.
    """
    fn = "scale_for_inference"
    x = check_float_array(fn, "x", x)
    rate = check_probability(fn, "rate", rate)
    if _rate.static(rate) == 1.0:
        return jnp.zeros_like(x)
    if _rate.static(rate) is not None:
        return x * (1.0 - rate)
    alive = jnp.where(rate < 1.0, x, jnp.zeros((), x.dtype))  # no 0 * inf at rate 1
    return nan_unless(alive * (1.0 - rate).astype(x.dtype), _rate.valid_rate(rate))


def spatial_dropout(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    channel_axis: int = -1,
    sampler: str = "exact",
) -> Array:
    """Drops whole feature maps: one draw per (example, channel), shared over space.

    Keras ``SpatialDropout1D/2D/3D`` and PyTorch ``Dropout1d/2d/3d`` semantics, for a
    batched input with the batch on axis 0: ``(batch, *spatial, channels)`` by default
    (channels-last, as flax convolutions), or ``channel_axis=1`` for channels-first.

    Args:
      key: a PRNG key.
      x: floating-point input of rank >= 3 (batch, at least one spatial axis, channels).
      rate: probability of dropping a feature map (see ``dropout``).
      channel_axis: the channel axis (not 0, the batch axis).
      sampler: ``"exact"`` or ``"fast"`` (see ``dropout``).

    Returns:
      An array of ``x``'s shape and dtype; kept maps are scaled by 1/(1 - rate).

    References:
      Tompson, Goroshin, Jain, LeCun, Bregler. "Efficient Object Localization Using
      Convolutional Networks." CVPR 2015.
    """
    fn = "spatial_dropout"
    check_key_first(fn, key, x)
    ndim = jnp.ndim(x)
    if ndim < 3:
        raise fail(
            fn,
            f"x must have rank >= 3 (batch, spatial..., channels), got shape {jnp.shape(x)}. "
            "For (batch, features) inputs use jaxreg.dropout.",
        )
    channel = check_channel_axis(fn, channel_axis, ndim)
    shared = tuple(d for d in range(1, ndim) if d != channel)
    return drop_units(fn, key, x, rate, broadcast_dims=shared, sampler=sampler)


def variational_dropout(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    time_axis: int = 1,
    sampler: str = "exact",
) -> Array:
    """Dropout with one mask per sequence, the same at every time step.

    For inputs ``(batch, time, features)`` (``time_axis=1``) each (example, feature)
    is kept or dropped for the whole sequence. For a recurrent state inside
    ``jax.lax.scan``, draw the mask once and apply it at every step::

        mask = jaxreg.bernoulli_mask(key, h0.shape, rate=rate)

        def step(h, x_t):
            h = cell(x_t, jaxreg.apply_mask(h, mask, rate=rate))
            return h, h

        h, hs = jax.lax.scan(step, h0, xs)

    Args:
      key: a PRNG key.
      x: floating-point input with a time axis.
      rate: probability of dropping a unit (see ``dropout``).
      time_axis: the axis the mask is shared along.
      sampler: ``"exact"`` or ``"fast"`` (see ``dropout``).

    Returns:
      An array of ``x``'s shape and dtype.

    References:
      Gal, Ghahramani. "A Theoretically Grounded Application of Dropout in Recurrent
      Neural Networks." NeurIPS 2016.
    """
    fn = "variational_dropout"
    check_key_first(fn, key, x)
    if jnp.ndim(x) < 2:
        raise fail(fn, f"x must have a time axis and a feature axis, got shape {jnp.shape(x)}.")
    (time,) = normalize_axes(fn, "time_axis", time_axis, jnp.ndim(x))
    return drop_units(fn, key, x, rate, broadcast_dims=(time,), sampler=sampler)
