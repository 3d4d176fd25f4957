"""Concrete dropout: a relaxed Bernoulli mask whose rate is learned, and its penalty.

The relaxed drop indicator of one unit is ``d = sigmoid((logit(rate) + n) / t)`` with
``n = log(u) - log(1 - u)`` standard logistic noise and ``t`` the temperature; the
output is ``x * (1 - d) / (1 - rate)``. As ``t -> 0``, ``d`` becomes a Bernoulli(rate)
draw (``d = 1`` exactly where ``n > -logit(rate)``) and the op becomes inverted dropout;
at every ``t > 0`` the output is differentiable in ``rate``, so the rate can be learned
by gradient descent together with the weights, against ``concrete_dropout_penalty``.

The uniform ``u`` comes from jaxreg's bit engine (``_bits.random_bits``, the bits of
``jax.random.bits``): the top 23 bits give the midpoint ``(m + 1/2) * 2**-23`` of one of
2**23 equal cells, so ``u`` lies in the open interval (0, 1), ``|n| <= 16.6`` and no
``eps`` is needed inside the logarithms (the authors' code adds 1e-7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from jaxreg import _bits, _mask, _rate
from jaxreg._checks import (
    check_float_array,
    check_key_first,
    check_probability,
    check_real,
    describe,
    fail,
    is_python_number,
    is_traced,
)
from jaxreg._numerics import nan_unless, nonzero_or_one
from jaxreg._types import Array, Shape

# u = (m + 1/2) * 2**-23 = uniform_from_bits + 2**-24, exact in float32.
_HALF_CELL = np.float32(2.0**-24)


def logistic_noise(key: Array, shape: Shape) -> Array:
    """float32 standard logistic samples ``log(u) - log(1 - u)``, ``u`` in open (0, 1).

    ``u`` is the midpoint of one of 2**23 equal cells (the top 23 bits of
    ``_bits.random_bits``), so every sample is finite: ``|n| <= 16.64``.
    """
    u = _bits.uniform_from_bits(_bits.random_bits(key, shape)) + _HALF_CELL
    return jnp.log(u) - jnp.log1p(-u)


def check_positive(fn: str, name: str, value: Any, what: str = "a number > 0") -> float | Array:
    """A scalar hyperparameter > 0 and finite: a Python float or a scalar array.

    Concrete values are checked here; a traced one is the caller's to poison
    (``poison_nonpositive``).
    """
    v = check_real(fn, name, value, f"{what} or a scalar array")
    if not isinstance(v, float):
        if np.ndim(v) != 0:
            raise fail(
                fn,
                f"{name} must be a scalar, got shape {np.shape(v)}. To use several values "
                f"at once, jax.vmap over {name}.",
            )
        if is_traced(v):
            return v.astype(jnp.promote_types(v.dtype, jnp.float32))
    c = float(np.asarray(v))
    if not (math.isfinite(c) and c > 0.0):
        raise fail(fn, f"{name} must be > 0 and finite, got {describe(value)}.")
    return v if isinstance(v, float) else v.astype(jnp.promote_types(v.dtype, jnp.float32))


def poison_nonpositive(out: Array, value: float | Array) -> Array:
    """NaN value and gradient where a traced ``value`` is not > 0 and finite."""
    if isinstance(value, float):
        return out
    return nan_unless(out, (value > 0) & jnp.isfinite(value))


def check_rates(fn: str, rate: Any, shape: Shape, what: str) -> float | Array:
    """A drop probability: a Python float, or an array that broadcasts to ``shape``.

    Python numbers and scalar arrays are checked as every rate is
    (``check_probability``); a larger array must broadcast to ``shape`` (``what``
    describes ``shape`` in the message) and, where concrete, lie in [0, 1]. Arrays are returned
    in float32 (float64 kept).
    """
    if is_python_number(rate) or not getattr(rate, "shape", ()):
        return check_probability(fn, "rate", rate)
    v = check_real(fn, "rate", rate, "a number in [0, 1] or an array")
    try:
        fits = np.broadcast_shapes(v.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise fail(
            fn,
            f"rate must be a scalar or an array that broadcasts to {what}, got shape {v.shape}.",
        )
    if not is_traced(v):
        c = np.asarray(v, np.float64)
        bad = np.isnan(c) | (c < 0) | (c > 1)
        if bad.any():
            raise fail(fn, f"rate must be in [0, 1], got {c[bad].flat[0]!r} in an array.")
    return v if v.dtype == jnp.float64 else v.astype(jnp.float32)


def relaxed_keep(rate: Array, noise: Array, temperature: float | Array) -> Array:
    """``1 - sigmoid((logit(rate) + noise) / t)``: 1 at rate 0, 0 at rate 1, finite gradients.

    ``logit(rate)`` is infinite at rates 0 and 1; they are selected away (their
    limits 1 and 0 returned instead), so neither value nor gradient is NaN there.
    """
    inside = (rate > 0) & (rate < 1)
    p = jnp.where(inside, rate, 0.5)
    logit = jnp.log(p) - jnp.log1p(-p)
    keep = jax.nn.sigmoid(-(logit + noise) / temperature)
    return jnp.where(inside, keep, jnp.where(rate <= 0, 1.0, 0.0).astype(keep.dtype))


def concrete_dropout(
    key: Any,
    x: Array,
    *,
    rate: float | Array,
    temperature: float | Array = 0.1,
    broadcast_dims: int | Sequence[int] = (),
) -> Array:
    """Concrete dropout: a relaxed (continuous) dropout mask, differentiable in ``rate``.

    Each unit is multiplied by ``(1 - d) / (1 - rate)``, where the relaxed drop
    indicator ``d = sigmoid((log(rate) - log(1 - rate) + log(u) - log(1 - u)) / t)``
    (``u`` uniform, ``t = temperature``) is a Concrete (Gumbel-softmax) relaxation of
    a Bernoulli(``rate``) draw: ``P(d > 1/2) = rate`` at every temperature, and as
    ``t -> 0`` the output tends to inverted dropout's ``{0, x / (1 - rate)}``. Unlike
    ``jaxreg.dropout`` the output is differentiable with respect to ``rate``, so a rate
    held as a parameter (e.g. ``rate = jax.nn.sigmoid(logit)``) is learned by the
    optimizer; add ``concrete_dropout_penalty`` to the loss, or the rate goes to 0.
    The mask is computed in float32 (or ``x``'s dtype where wider) and the output
    rounded once to ``x``'s dtype. At inference use ``x`` itself (inverted scaling) or
    keep sampling (MC dropout).

    Args:
      key: a PRNG key; None only for a Python rate of 0 or 1 (``jaxreg.needs_key``).
      x: floating-point input of any shape; the output has its shape and dtype.
      rate: probability of dropping a unit (not the keep probability): a Python number
        in [0, 1], a scalar array, or an array that broadcasts to ``x.shape`` (one rate
        per feature: shape ``(x.shape[-1],)``); arrays may be traced and are
        differentiated. Python 0 returns ``x`` and draws nothing, Python 1 zeros;
        a traced rate outside [0, 1] or NaN gives NaN where it applies.
      temperature: the relaxation temperature ``t > 0`` (the paper uses 0.1): a
        Python number or a scalar array (a traced non-positive value gives NaN).
        Smaller is closer to Bernoulli dropout, with noisier rate gradients.
      broadcast_dims: axes along which one mask value is shared (as ``dropout``),
        e.g. ``(1, 2)`` for channel-wise (spatial) concrete dropout of NHWC maps.

    Returns:
      An array of ``x``'s shape and dtype. Gradients flow to ``x`` and ``rate``; at
      ``rate = 1`` the output and its gradients are zero (also where ``x`` is inf).

    Example:
      >>> import jax, jax.numpy as jnp, jaxreg
      >>> y = jaxreg.concrete_dropout(jax.random.key(0), jnp.ones((2, 3)), rate=0.2)
      >>> y.shape, y.dtype
      ((2, 3), dtype('float32'))

    References:
      Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017,
      https://arxiv.org/abs/1705.07832 (section 3; reference code:
      https://github.com/yaringal/ConcreteDropout).
      Maddison, Mnih, Teh. "The Concrete Distribution." ICLR 2017,
      https://arxiv.org/abs/1611.00712.
    """
    fn = "concrete_dropout"
    check_key_first(fn, key, x)
    x = check_float_array(fn, "x", x)
    what = f"x's shape {x.shape}" + (f" (one rate per feature: {x.shape[-1:]})" if x.ndim else "")
    rate = check_rates(fn, rate, x.shape, what)
    key = _rate.check_key_for(fn, key, rate)
    temperature = check_positive(fn, "temperature", temperature)
    shape = _mask.mask_shape(fn, x.shape, broadcast_dims)
    early = _rate.shortcut(x, rate)
    if early is not None:
        if key is not None and not _rate.decided(rate):
            _rate.consume(key)  # an empty x: nothing drawn, but the key counts as used
        return early
    wide = jnp.promote_types(x.dtype, jnp.float32)
    r = jnp.asarray(rate, jnp.promote_types(jnp.result_type(rate), jnp.float32))
    keep = relaxed_keep(r, logistic_noise(key, shape).astype(r.dtype), temperature)
    scale = jnp.where(r < 1, keep / nonzero_or_one(1 - r), 0).astype(wide)
    # A select, not a product: a unit whose scale is 0 is 0 even where x is inf.
    out = jnp.where(scale > 0, x.astype(wide) * scale, jnp.zeros((), wide)).astype(x.dtype)
    if not isinstance(rate, float):
        out = nan_unless(out, (r >= 0) & (r <= 1), x)
    return poison_nonpositive(out, temperature)


def concrete_dropout_penalty(
    kernel: Array,
    *,
    rate: float | Array,
    num_examples: int | float | Array,
    length_scale: float | Array,
    precision: float | Array | None = None,
) -> Array:
    """The regularizer of concrete dropout: the KL term of its variational objective.

    For dropout with rate ``p_k`` on the ``K`` inputs of a layer with kernel ``W``
    (input unit ``k`` owns the weights ``W[..., k, :]``), the paper's objective adds
    ``KL / N`` to the mean negative log-likelihood, with (inverted-dropout weights
    ``W = (1 - p) M`` in the paper's ``M``)::

        penalty = c / N * sum_k [ (l**2 / 2) * ||W[..., k, :]||**2 / (1 - p_k) - H(p_k) ]

    where ``H(p) = -p log p - (1 - p) log(1 - p)``, ``N = num_examples``, ``l =
    length_scale`` and ``c = 1``; with a single rate the entropy term is ``K * H(p)``.
    The weight term replaces weight decay on ``W`` (do not add an L2 penalty too); the
    entropy term pushes ``p`` towards 1/2, the weight term towards 0. The value can be
    negative.

    ``precision`` is for regression losses written as the mean squared error: a
    Gaussian likelihood of precision ``tau`` has ``NLL = (tau / 2) * MSE + const``, so
    an objective scaled to the MSE takes ``c = 2 / tau``. This is the reference
    implementation's parameterization: ``weight_regularizer = l**2 / (tau N)`` and
    ``dropout_regularizer = 2 / (tau N)``, with the penalty ``weight_regularizer *
    sum(W**2) / (1 - p) + dropout_regularizer * K * (p log p + (1 - p) log(1 - p))``.
    Leave ``precision=None`` for cross-entropy and other negative log-likelihoods:
    then ``weight_regularizer = l**2 / (2 N)`` and ``dropout_regularizer = 1 / N``.

    Args:
      kernel: the weights of the layer that *receives* the dropped units: a Dense
        kernel ``(K, out)`` or a conv kernel ``(..., K, out)`` (axis -2 indexes the
        dropped units; channel-wise dropout before a conv, as the authors' spatial
        variant).
      rate: the drop probability: a Python number in [0, 1), a scalar array, or one
        rate per input unit, shape ``(K,)`` (may be traced; differentiated).
      num_examples: ``N``, the number of training examples, > 0 (number or scalar array).
      length_scale: ``l``, the prior length-scale, > 0 (number or scalar array). The
        weight term equals ``l2_penalty(W, strength=c * l**2 / (2 N (1 - p)))``.
      precision: ``tau`` > 0 for a mean-squared-error loss (see above), or None for a
        loss that is a mean negative log-likelihood.

    Returns:
      A float32 scalar (wider if ``kernel`` is). A traced invalid argument gives NaN.
      Rates of exactly 0 or 1 (from a saturated logit, or traced) are evaluated at the
      nearest interior float (``finfo.tiny``, ``1 - finfo.epsneg``), so the value and
      gradient stay finite (and large, pushing the rate back inside).

    Example:
      >>> import jax.numpy as jnp, jaxreg
      >>> w = jnp.ones((4, 2))
      >>> p = jaxreg.concrete_dropout_penalty(w, rate=0.1, num_examples=1000, length_scale=1e-2)
      >>> p.shape, p.dtype
      ((), dtype('float32'))

    References:
      Gal, Hron, Kendall. "Concrete Dropout." NeurIPS 2017,
      https://arxiv.org/abs/1705.07832 (section 3, the KL of each layer's weights;
      reference implementation https://github.com/yaringal/ConcreteDropout, whose
      ``weight_regularizer`` and ``dropout_regularizer`` are mapped above).
      Gal, Ghahramani. "Dropout as a Bayesian Approximation." ICML 2016,
      https://arxiv.org/abs/1506.02142 (length-scale and model precision).
    """
    fn = "concrete_dropout_penalty"
    kernel = check_float_array(fn, "kernel", kernel)
    if kernel.ndim < 2:
        raise fail(
            fn,
            f"kernel must have rank >= 2 (axis -2 indexes the dropped inputs), got shape "
            f"{kernel.shape}. Pass the kernel of the layer that follows the dropout.",
        )
    units = kernel.shape[-2]
    rate = check_rates(fn, rate, (units,), f"({units},), one rate per input (kernel axis -2)")
    if isinstance(rate, float) and rate == 1.0:
        raise fail(
            fn,
            "rate must be below 1, got 1.0: the weight term divides by 1 - rate. "
            "Parameterise a learned rate as jax.nn.sigmoid(logit).",
        )
    n = check_positive(fn, "num_examples", num_examples)
    length = check_positive(fn, "length_scale", length_scale)
    tau = None if precision is None else check_positive(fn, "precision", precision)
    wide = jnp.promote_types(kernel.dtype, jnp.float32)
    w = kernel.astype(wide)
    rows = jnp.sum(jnp.square(w), axis=tuple(a for a in range(w.ndim) if a != w.ndim - 2))
    raw = jnp.broadcast_to(jnp.asarray(rate, wide), (units,))
    # Rates 0 and 1 are evaluated at the nearest interior points (value and gradient):
    # the entropy's slope is infinite at 0 and the weight term's value at 1.
    info = jnp.finfo(wide)
    inner = jnp.clip(raw, info.tiny, 1 - info.epsneg)
    p = raw + jax.lax.stop_gradient(inner - raw)
    weight = 0.5 * jnp.square(length) * jnp.sum(rows / (1 - p))
    entropy = -jnp.sum(xlogy(p, p) + xlogy(1 - p, 1 - p))
    scale = 1.0 if tau is None else 2.0 / tau
    out = (scale / n) * (weight - entropy)
    if not isinstance(rate, float):
        out = nan_unless(out, jnp.all((raw >= 0) & (raw <= 1)))
    for value in (n, length, tau):
        if value is not None:
            out = poison_nonpositive(out, value)
    return out
