"""DropConnect: dropout on weights instead of activations, ``r = a((M * W) v)``.

Masks come from ``_mask.draw_keep`` (the bit engine), so ``drop_connect(key, w)`` is
``apply_mask(w, bernoulli_mask(key, w.shape))`` bit for bit.

Per-example masks (``drop_connect_dense(..., per_example=True)``): example ``b`` (the
``b``-th row of ``x`` with its leading axes flattened) uses the weights
``drop_connect(jax.random.fold_in(key, b), kernel)``. Its mask does not depend on the
batch size. A ``custom_vjp`` loops over the examples (one per device per step, in
contiguous blocks of rows that a batch sharding partitions) and regenerates each mask
from its key in the backward pass, so no (batch, in, out) array exists in either pass.

References:
  Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
  DropConnect." ICML 2013.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg import _bits, _mask, _rate
from jaxreg._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_float_array,
    check_positive_int,
    check_probability,
    fail,
)
from jaxreg._filters import kernels_only, resolve_where
from jaxreg._numerics import safe_sqrt
from jaxreg._types import Array, Rate


def _matmul(x: Array, kernel: Array, precision: Any, dot_general: Any) -> Array:
    """``x @ kernel`` over the last axis of ``x``, with flax's ``precision``/``dot_general``."""
    if dot_general is None:
        return jnp.matmul(x, kernel, precision=precision)
    return dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _drop_weights(key: Array, w: Array, rate: Rate, inverted: bool = True) -> Array:
    """The one DropConnect draw: ``w`` with a fresh keep-mask applied (no validation)."""
    return _mask.draw_and_apply(key, w, rate, w.shape, inverted=inverted, sampler="exact")


def drop_connect(key: Any, w: Array, *, rate: float | Array, inverted: bool = True) -> Array:
    """DropConnect on a weight array: each weight is zeroed with probability ``rate``.

    Args:
      key: a PRNG key (``jax.random.key`` or legacy ``jax.random.PRNGKey``).
      w: floating-point weights of any shape.
      rate: probability of dropping a weight (not the keep probability); a Python
        number in [0, 1] or a scalar array that may be traced. A traced rate outside
        [0, 1] gives NaN. Python ``rate=0`` returns ``w`` itself and draws nothing.
      inverted: scale kept weights by 1/(1 - rate) (default) or keep them unscaled
        (the paper's form; then use ``drop_connect_inference``).

    Returns:
      An array of ``w``'s shape and dtype, equal to ``apply_mask(w, bernoulli_mask(key,
      w.shape, rate=rate), rate=rate, inverted=inverted)``.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013.
    """
    key, w, rate, early = _rate.check_op_args("drop_connect", key, w, rate, name="w")
    inverted = check_bool("drop_connect", "inverted", inverted)
    return early if early is not None else _drop_weights(key, w, rate, inverted)


def _example_key_data(key: Array, n: int) -> Array:
    """Raw data of ``fold_in(key, b)`` for b < n; uses ``key`` once (key-reuse checker).

    Built from an iota over the global row index, so under batch sharding each device
    computes only its own rows' keys.
    """
    key = _bits.consume(key)
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(n, dtype=jnp.uint32))
    return jax.random.key_data(keys)


def lanes(key: Array, n: int) -> int:
    """How many examples the per-example loop processes side by side.

    Rows are split into ``lanes`` contiguous blocks, and each loop step handles one row
    of every block. The block axis is the one a batch sharding lands on (when it
    splits the rows into at most ``jax.device_count()`` contiguous blocks), so XLA
    partitions the loop over the batch: every device runs its own rows, no
    all-gather. One lane (a plain loop) on a single device and for keys outside the
    fused threefry path (vmapping rbg keys draws other bits than a loop, jax#19085).
    Memory: one masked kernel and one kernel-gradient accumulator per lane, spread over
    the devices when the batch is sharded.
    """
    if not _bits.uses_fast_path(key, (1,)):
        return 1
    return math.gcd(n, jax.device_count())


def _to_lanes(a: Array, p: int) -> Array:
    """``(n, ...) -> (n // p, p, ...)``: step ``t``, lane ``l`` is row ``l * (n // p) + t``."""
    return jnp.swapaxes(a.reshape(p, a.shape[0] // p, *a.shape[1:]), 0, 1)


def _from_lanes(a: Array) -> Array:
    return jnp.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:])


def _over_lanes(fn: Callable, p: int) -> Callable:
    """``fn`` of one example, applied to a step's ``p`` lanes (vmap, or as is for 1)."""
    if p == 1:
        return lambda *args: jax.tree.map(lambda a: a[None], fn(*(a[0] for a in args)))
    return jax.vmap(fn)


def _example_mask(impl: Any, static_rate: float | None, data: Array, rate: Any, shape: Any):
    r = rate if static_rate is None else static_rate
    return _mask.draw_keep(jax.random.wrap_key_data(data, impl=impl), shape, r), r


def _example_mask_once(impl: Any, static_rate: float | None, data: Array, rate: Any, shape: Any):
    """The mask, packed and unpacked: XLA then hashes once for its two backward uses."""
    keep, r = _example_mask(impl, static_rate, data, rate, shape)
    return _bits.unpack_bits(_bits.pack_bits(keep), shape[-1]), r


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _per_example_matmul(impl, static_rate, p, precision, x, kernel, data, rate):
    """``y[b] = x[b] @ drop_connect(key_b, kernel)``, ``p`` examples at a time."""

    def one(xb, db):
        keep, r = _example_mask(impl, static_rate, db, rate, kernel.shape)
        w = _mask.scale_kept(kernel, keep, r, inverted=True)
        return jnp.matmul(xb, w, precision=precision)

    step = _over_lanes(one, p)
    ys = lax.scan(lambda _, row: (None, step(*row)), None, (_to_lanes(x, p), _to_lanes(data, p)))
    return _from_lanes(ys[1])


def _per_example_fwd(impl, static_rate, p, precision, x, kernel, data, rate):
    y = _per_example_matmul(impl, static_rate, p, precision, x, kernel, data, rate)
    return y, (x, kernel, data, rate, y)


def _per_example_bwd(impl, static_rate, p, precision, res, g):
    x, kernel, data, rate, y = res

    def one(dw, xb, gb, db):
        keep, r = _example_mask_once(impl, static_rate, db, rate, kernel.shape)
        w = _mask.scale_kept(kernel, keep, r, inverted=True)
        dxb = jnp.matmul(w, gb, precision=precision)
        outer = xb.astype(jnp.float32)[:, None] * gb.astype(jnp.float32)[None, :]
        return dw + jnp.where(keep, outer, 0.0), dxb.astype(x.dtype)

    step = _over_lanes(one, p)
    # One kernel-gradient accumulator per lane (sharded like the lanes), summed at the end.
    dw = jnp.zeros((p, *kernel.shape), jnp.float32)
    rows = (_to_lanes(x, p), _to_lanes(g, p), _to_lanes(data, p))
    dw, dx = lax.scan(lambda dw, row: step(dw, *row), dw, rows)
    dw, dx = jnp.sum(dw, axis=0), _from_lanes(dx)
    r = rate if static_rate is None else static_rate
    keep = _rate.keep_probability(r)
    if isinstance(keep, float):
        inv_keep = 1.0 / keep if keep > 0.0 else 0.0
    else:
        inv_keep = jnp.where(keep > 0.0, 1.0 / jnp.where(keep > 0.0, keep, 1.0), 0.0)
    dw = _rate.poison_invalid(dw * inv_keep, r).astype(kernel.dtype)
    if rate is None:
        return dx, dw, None, None
    # y = x @ (M * W) / keep with keep = 1 - rate, so dy/drate = y / keep.
    d_rate = jnp.sum(g.astype(jnp.float32) * y.astype(jnp.float32)) * inv_keep
    return dx, dw, None, d_rate.astype(rate.dtype)


_per_example_matmul.defvjp(_per_example_fwd, _per_example_bwd)


def _check_dense(fn: str, x: Any, kernel: Any, bias: Any) -> tuple[Array, Array, Array | None]:
    x = check_float_array(fn, "x", x)
    kernel = check_float_array(fn, "kernel", kernel)
    if kernel.ndim != 2:
        raise fail(fn, f"kernel must be 2-D (in, out), got shape {kernel.shape}.")
    if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise fail(
            fn,
            f"x must have shape (..., {kernel.shape[0]}) to match kernel {kernel.shape}, "
            f"got {x.shape}.",
        )
    if bias is not None:
        bias = check_float_array(fn, "bias", bias)
        if bias.shape != kernel.shape[1:]:
            raise fail(fn, f"bias must have shape ({kernel.shape[1]},), got {bias.shape}.")
    return x, kernel, bias


def _check_dot_general(fn: str, dot_general: Any) -> None:
    if dot_general is not None:
        check_callable(fn, "dot_general", dot_general, "(or None)")


def drop_connect_dense(
    key: Any,
    x: Array,
    kernel: Array,
    bias: Array | None = None,
    *,
    rate: float | Array,
    per_example: bool = False,
    precision: Any = None,
    dot_general: Callable[..., Array] | None = None,
) -> Array:
    """A dense layer ``x @ (M * kernel) / (1 - rate) + bias`` with DropConnect.

    The bias is not dropped. ``per_example=False`` draws one mask for the whole batch:
    exactly ``x @ drop_connect(key, kernel, rate=rate) + bias``. ``per_example=True``
    draws an independent mask for every example, as in the paper: row ``b`` of ``x``
    (leading axes flattened, row-major) uses ``drop_connect(jax.random.fold_in(key, b),
    kernel, rate=rate)``. That costs batch * in * out random draws (forward and again in
    backward) but only O(in * out) memory: masks are regenerated from the key in a
    ``custom_vjp``, never stored as a (batch, in, out) array. On ``D`` devices the
    examples run ``D`` at a time, one contiguous block of rows each (see ``lanes``), so
    under batch sharding every device computes only its own rows, with no collective
    and a sharded output (the kernel gradient's sum over the batch is an all-reduce).
    Being a ``custom_vjp``, the per-example mode supports reverse-mode autodiff
    (``jax.grad``, including the gradient with respect to a traced ``rate``) but not
    forward mode (``jax.jvp``).

    Args:
      key: a PRNG key.
      x: floating-point inputs of shape ``(..., in)``.
      kernel: floating-point weights of shape ``(in, out)``.
      bias: optional ``(out,)`` bias, added after the masked product.
      rate: probability of dropping a weight (see ``drop_connect``). Python ``rate=0``
        is the plain dense layer and draws nothing; ``rate=1`` gives ``bias`` (or
        zeros) with zero gradients for ``x`` and ``kernel``, even for inf inputs.
      per_example: one mask per example (True) or one for the batch (False).
      precision: matmul precision, as in ``jnp.matmul`` and ``flax.linen.Dense``
        (``None``, a ``jax.lax.Precision`` or a string such as ``"highest"``).
      dot_general: optional replacement for ``jax.lax.dot_general`` with its signature
        (flax's ``dot_general`` field, e.g. for quantized matmuls); None uses
        ``jnp.matmul``. Shared-mask mode only: the per-example ``custom_vjp`` computes
        its own products.

    Returns:
      An array of shape ``(..., out)`` in the promoted dtype of ``x``, ``kernel``, ``bias``.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013, section 2.
    """
    fn = "drop_connect_dense"
    x, kernel, bias = _check_dense(fn, x, kernel, bias)
    rate = check_probability(fn, "rate", rate)
    key = _rate.check_key_for(fn, key, rate)
    per_example = check_bool(fn, "per_example", per_example)
    _check_dot_general(fn, dot_general)
    if per_example and dot_general is not None:
        raise fail(
            fn,
            "dot_general is not supported with per_example=True (its custom_vjp computes "
            "its own products); pass precision= instead, or per_example=False.",
        )
    if _rate.static(rate) == 0.0:
        y = _matmul(x, kernel, precision, dot_general)
    elif _rate.static(rate) == 1.0:
        y = jnp.zeros((*x.shape[:-1], kernel.shape[1]), jnp.result_type(x, kernel))
    else:
        if _rate.static(rate) is None:  # rate 1: zero x so that inf * 0 cannot give NaN.
            x = jnp.where(rate < 1.0, x, jnp.zeros((), x.dtype))
        if not per_example:
            y = _matmul(x, _drop_weights(key, kernel, rate), precision, dot_general)
        else:
            rows = x.reshape(-1, x.shape[-1]).astype(jnp.result_type(x, kernel))
            data = _example_key_data(key, rows.shape[0])
            static = _rate.static(rate)
            dynamic = None if static is not None else rate
            impl = jax.random.key_impl(key)
            p = lanes(key, rows.shape[0])
            kernel = kernel.astype(rows.dtype)
            try:
                y = _per_example_matmul(impl, static, p, precision, rows, kernel, data, dynamic)
            except TypeError as err:
                if "forward-mode" not in str(err):
                    raise
                raise fail(
                    fn,
                    "per_example=True does not support forward-mode autodiff (jax.jvp, "
                    "jax.jacfwd, jax.hessian): its masks are regenerated in a custom_vjp. "
                    "Use reverse mode (jax.grad, jax.jacrev; jax.jacrev(jax.jacrev(f)) for a "
                    "Hessian), or per_example=False.",
                    exc=TypeError,
                ) from None
            y = y.reshape(*x.shape[:-1], kernel.shape[1])
    return y if bias is None else y + bias


def drop_connect_inference(
    key: Any,
    x: Array,
    kernel: Array,
    bias: Array | None = None,
    *,
    rate: float | Array,
    activation: Callable[[Array], Array],
    num_samples: int = 1000,
    method: str = "moments",
    inverted: bool = True,
    precision: Any = None,
    dot_general: Callable[..., Array] | None = None,
) -> Array:
    """The paper's inference for a DropConnect layer: Gaussian moment matching.

    With keep probability ``p = 1 - rate``, the pre-activation ``u = (M * W) v`` of a
    trained DropConnect layer is a sum of independent terms; the paper approximates it
    per unit by a Gaussian with the same mean and variance (Algorithm 2):
    ``u ~ N(p W v, p (1 - p) (W * W)(v * v))`` for unscaled masks (``inverted=False``),
    and ``u ~ N(W v, (1 - p) / p (W * W)(v * v))`` for masks scaled by 1/p (the
    default, as ``drop_connect_dense`` trains). ``num_samples`` draws of ``u`` (from the
    bit engine, ``_bits.standard_normal``) go through ``activation`` and are averaged.
    ``method="scale"`` is the plain weight-scaling inference for comparison,
    ``activation(W v + bias)`` (``activation(p W v + bias)`` if not inverted); it draws
    nothing.

    Args:
      key: a PRNG key.
      x: floating-point inputs ``v`` of shape ``(..., in)``.
      kernel: weights ``W`` of shape ``(in, out)``.
      bias: optional ``(out,)`` bias (not dropped; shifts the mean).
      rate: the drop probability used in training (see ``drop_connect``). Python
        ``rate=0`` draws nothing; ``rate=1`` (with ``inverted``, infinite variance)
        gives ``activation(bias)`` by convention, as ``gaussian_dropout`` gives zeros.
      activation: elementwise nonlinearity ``a`` (e.g. ``jax.nn.relu``).
      num_samples: number of Gaussian samples per unit (the paper uses Z = 1000).
      method: ``"moments"`` (the paper's) or ``"scale"``.
      inverted: whether training scaled kept weights by 1/p (see ``drop_connect``).
      precision: matmul precision for the mean and variance products (see
        ``drop_connect_dense``).
      dot_general: optional replacement for ``jax.lax.dot_general`` used for both
        products (see ``drop_connect_dense``).

    Returns:
      An array of shape ``(..., out)``: the average of ``activation(u)``. Memory grows
      as ``num_samples * batch * out``.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013, section 3 (Algorithm 2).
    """
    fn = "drop_connect_inference"
    x, kernel, bias = _check_dense(fn, x, kernel, bias)
    rate = check_probability(fn, "rate", rate)
    key = _rate.check_key_for(fn, key, rate)
    num_samples = check_positive_int(fn, "num_samples", num_samples)
    check_callable(fn, "activation", activation)
    method = check_choice(fn, "method", method, ("moments", "scale"))
    inverted = check_bool(fn, "inverted", inverted)
    _check_dot_general(fn, dot_general)

    def matmul(a: Array, b: Array) -> Array:
        return _matmul(a, b, precision, dot_general)

    shift = jnp.zeros((), x.dtype) if bias is None else bias
    keep = 1.0 - rate
    if _rate.static(rate) is not None:
        if rate == 1.0:  # every weight dropped: only the bias is left (traced rate alike)
            zeros = jnp.zeros((*x.shape[:-1], kernel.shape[1]), jnp.result_type(x, kernel))
            return activation(zeros + shift)
        if rate == 0.0 or method == "scale":
            return activation(matmul(x, kernel) * (1.0 if inverted else keep) + shift)
        factor = rate / keep if inverted else keep * rate
    else:
        alive = keep > 0.0
        x = jnp.where(alive, x, jnp.zeros((), x.dtype))  # no inf * 0 when rate = 1
        kernel = jnp.where(alive, kernel, jnp.zeros((), kernel.dtype))
        if method == "scale":
            scale = jnp.asarray(1.0 if inverted else keep, x.dtype)
            return _rate.poison_invalid(activation(matmul(x, kernel) * scale + shift), rate)
        factor = rate / jnp.where(alive, keep, 1.0) if inverted else keep * rate
        factor = jnp.where(alive, factor, 0.0)
    mean = matmul(x, kernel)
    if not inverted:
        mean = mean * jnp.asarray(keep, mean.dtype)
    var = jnp.asarray(factor, mean.dtype) * matmul(x * x, kernel * kernel)
    std = safe_sqrt(var)
    z = _bits.standard_normal(key, (num_samples, *mean.shape)).astype(mean.dtype)
    out = jnp.mean(activation(mean + std * z + shift), axis=0)
    return _rate.poison_invalid(out, rate)


def drop_connect_tree(
    key: Any, params: Any, *, rate: float | Array, where: Any | None = None
) -> Any:
    """DropConnect on selected leaves of a parameter pytree (inverted scaling).

    Leaf ``i`` (in ``jax.tree.leaves`` order, counting every leaf, selected or not)
    uses ``drop_connect(jax.random.split(key, num_leaves)[i], leaf, rate=rate)``, so a
    leaf's mask does not change when ``where`` selects other leaves.

    Args:
      key: a PRNG key.
      params: a pytree of arrays (e.g. flax ``variables["params"]``).
      rate: probability of dropping a weight (see ``drop_connect``); Python
        ``rate=0`` returns ``params`` itself and draws nothing.
      where: which leaves to mask: a bool pytree of ``params``' structure or a callable
        returning one (see ``jaxreg.by_path``); None means ``jaxreg.kernels_only``:
        weight matrices and conv kernels, not biases, norm scales or embeddings.

    Returns:
      A pytree of ``params``' structure; unselected leaves are returned as they are.

    References:
      Wan, Zeiler, Zhang, LeCun, Fergus. "Regularization of Neural Networks using
      DropConnect." ICML 2013.
    """
    fn = "drop_connect_tree"
    rate = check_probability(fn, "rate", rate)
    key = _rate.check_key_for(fn, key, rate)
    leaves, treedef = jax.tree.flatten(params)
    selected = jax.tree.leaves(resolve_where(fn, params, kernels_only if where is None else where))
    if _rate.static(rate) == 0.0 or not any(selected):
        return params
    dropped_all = _rate.static(rate) == 1.0
    keys = [None] * len(leaves) if dropped_all else jax.random.split(key, len(leaves))
    out = [
        (jnp.zeros_like(v) if dropped_all else _drop_weights(k, v, rate)) if sel else v
        for k, v, sel in zip(keys, leaves, selected, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)
