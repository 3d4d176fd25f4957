"""Hostile inputs: one table row per call, each either a clear error or a checked value.

A row is ``(id, call, expect)``: ``call()`` runs the public function; ``expect`` is
``Raises(type, words)`` (the message must start with ``jaxreg.<fn>:`` and contain every
word) or ``Value(check)`` (``check(result)`` must hold). Warnings are errors here, so a
NumPy cast warning cannot hide a silently dropped imaginary part. Below the table:
regression tests for the numeric fixes that need more than one call.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable

import equinox as eqx
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from jaxreg import _rate
from ops import SCALARS


@dataclasses.dataclass(frozen=True)
class Raises:
    exc: type[Exception]
    words: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Value:
    check: Callable


def raises(exc, *words):
    return Raises(exc, words)


def key():
    """A fresh key per call: the suite runs with JAX's key-reuse checker on."""
    return jax.random.key(0)


X = jnp.ones((4, 3, 2))  # rank 3: every op accepts it
W = jnp.ones((3, 2))
P = {"w": jnp.array([[1.0, -2.0], [3.0, 0.5]])}
INF_X = jnp.array([[jnp.inf, 1.0], [-jnp.inf, jnp.nan]])

# Every op with a rate, as (name, call(rate)).
RATE_OPS = {
    "dropout": lambda r: jaxreg.dropout(key(), X, rate=r),
    "spatial_dropout": lambda r: jaxreg.spatial_dropout(key(), X, rate=r),
    "variational_dropout": lambda r: jaxreg.variational_dropout(key(), X, rate=r),
    "gaussian_dropout": lambda r: jaxreg.gaussian_dropout(key(), X, rate=r),
    "alpha_dropout": lambda r: jaxreg.alpha_dropout(key(), X, rate=r),
    "drop_path": lambda r: jaxreg.drop_path(key(), X, rate=r),
    "drop_block": lambda r: jaxreg.drop_block(key(), X, rate=r, block_size=2),
    "drop_connect": lambda r: jaxreg.drop_connect(key(), W, rate=r),
    "drop_connect_dense": lambda r: jaxreg.drop_connect_dense(key(), X, W[:2], rate=r),
    "drop_connect_inference": lambda r: jaxreg.drop_connect_inference(
        key(), X, W[:2], rate=r, activation=jax.nn.relu, num_samples=2
    ),
    "drop_connect_tree": lambda r: jaxreg.drop_connect_tree(key(), P, rate=r),
    "bernoulli_mask": lambda r: jaxreg.bernoulli_mask(key(), (3, 2), rate=r),
    "apply_mask": lambda r: jaxreg.apply_mask(X, X > 0, rate=r),
    "scale_for_inference": lambda r: jaxreg.scale_for_inference(X, rate=r),
    "needs_key": lambda r: jaxreg.needs_key(r),
}

BAD_RATES = [
    ("np-complex", np.complex128(0.5 + 0.7j), TypeError, ("rate must be", "complex")),
    ("py-complex", 0.5 + 0.7j, TypeError, ("rate must be", "(0.5+0.7j) (a complex)")),
    ("str", "0.5", TypeError, ("rate must be", "'0.5' (a str)")),
    ("above-1", 1.5, ValueError, ("rate must be in [0, 1], got 1.5",)),
    ("nan", float("nan"), ValueError, ("rate must be in [0, 1], got nan",)),
]

# Every penalty-like function with a non-negative hyperparameter, as call(value).
STRENGTH_OPS = {
    "l1_penalty": ("strength", lambda s: jaxreg.l1_penalty(P, strength=s)),
    "l2_penalty": ("strength", lambda s: jaxreg.l2_penalty(P, strength=s)),
    "elastic_net_penalty": ("strength", lambda s: jaxreg.elastic_net_penalty(P, strength=s)),
    "group_lasso_penalty": ("strength", lambda s: jaxreg.group_lasso_penalty(P, strength=s)),
    "orthogonal_penalty": ("strength", lambda s: jaxreg.orthogonal_penalty(P, strength=s)),
    "prox_l1": ("strength", lambda s: jaxreg.prox_l1(P, strength=s)),
    "prox_elastic_net": ("strength", lambda s: jaxreg.prox_elastic_net(P, strength=s)),
    "prox_group_lasso": ("strength", lambda s: jaxreg.prox_group_lasso(P, strength=s)),
    "max_norm": ("max_value", lambda s: jaxreg.max_norm(P, max_value=s)),
}
# Penalty coefficients must be finite (inf * 0 is NaN); so must the prox operators'.
PENALTIES = (
    "l1_penalty",
    "l2_penalty",
    "elastic_net_penalty",
    "group_lasso_penalty",
    "prox_l1",
    "prox_elastic_net",
    "prox_group_lasso",
)


def _rows():
    rows = []
    for name, call in RATE_OPS.items():
        for tag, rate, exc, words in BAD_RATES:
            rows.append(
                (f"{name}-rate-{tag}", lambda c=call, r=rate: c(r), Raises(exc, (name, *words)))
            )
    for name, (arg, call) in STRENGTH_OPS.items():
        rows += [
            (
                f"{name}-complex",
                lambda c=call: c(np.complex128(0.1 + 1j)),
                raises(TypeError, name, arg, "complex"),
            ),
            (f"{name}-str", lambda c=call: c("0.1"), raises(TypeError, name, arg, "'0.1' (a str)")),
            (f"{name}-negative", lambda c=call: c(-0.1), raises(ValueError, name, arg, "-0.1")),
        ]
    for name in PENALTIES:
        arg, call = STRENGTH_OPS[name]
        rows.append((f"{name}-inf", lambda c=call: c(math.inf), raises(ValueError, arg, "finite")))
    return rows


def _zero_like(shape):
    return lambda y: y.shape == shape and not jnp.any(y)


def _finite_zero(y):
    return bool(jnp.all(y == 0)) and bool(jnp.all(jnp.isfinite(y)))


def _tracer_flag():
    return jax.jit(lambda inv: jaxreg.dropout(key(), X, rate=0.5, inverted=inv))(True)


def _rate_grad_at_one(op):
    return jax.grad(lambda r: jnp.sum(op(key(), INF_X, rate=r)))(1.0)


def _swapped_mc():
    return jaxreg.mc_predict(
        key(), lambda x, k: jaxreg.dropout(k, x, rate=0.5), jnp.ones(3), num_samples=2
    )


EMPTY = jnp.zeros((0, 2**32))
FILTERED_MLP = eqx.nn.MLP(2, 2, 4, 1, key=jax.random.key(1))

ROWS = [
    *_rows(),
    # Flags and sizes.
    (
        "inverted-str",
        lambda: jaxreg.dropout(key(), X, rate=0.5, inverted="False"),
        raises(TypeError, "jaxreg.dropout", "inverted must be a bool", "'False' (a str)"),
    ),
    (
        "inverted-traced",
        _tracer_flag,
        raises(TypeError, "inverted must be a Python bool", "traced"),
    ),
    (
        "drop_connect-inverted-int",
        lambda: jaxreg.drop_connect(key(), W, rate=0.5, inverted=1),
        raises(TypeError, "drop_connect", "inverted must be a bool", "1 (an int)"),
    ),
    (
        "drop_path-inverted-str",
        lambda: jaxreg.drop_path(key(), X, rate=0.5, inverted="yes"),
        raises(TypeError, "drop_path", "inverted"),
    ),
    (
        "apply_mask-inverted-none",
        lambda: jaxreg.apply_mask(X, X > 0, rate=0.5, inverted=None),
        raises(TypeError, "apply_mask", "inverted must be a bool", "None"),
    ),
    (
        "per_example-str",
        lambda: jaxreg.drop_connect_dense(key(), X, W[:2], rate=0.5, per_example="no"),
        raises(TypeError, "drop_connect_dense", "per_example must be a bool"),
    ),
    (
        "shared_channels-int",
        lambda: jaxreg.drop_block(key(), X, rate=0.5, block_size=2, shared_channels=0),
        raises(TypeError, "drop_block", "shared_channels must be a bool"),
    ),
    (
        "mask-shape-float",
        lambda: jaxreg.bernoulli_mask(key(), (2.5, 3), rate=0.5),
        raises(TypeError, "bernoulli_mask", "shape must be a tuple of ints", "2.5 (a float)"),
    ),
    (
        "mask-shape-int",
        lambda: jaxreg.bernoulli_mask(key(), 3, rate=0.5),
        raises(TypeError, "shape must be a tuple of ints", "3 (an int)"),
    ),
    (
        "mask-shape-negative",
        lambda: jaxreg.bernoulli_mask(key(), (2, -1), rate=0.5),
        raises(ValueError, "shape must be non-negative"),
    ),
    (
        "noise_shape-int",
        lambda: jaxreg.dropout(key(), X, rate=0.5, noise_shape=4),
        raises(TypeError, "dropout", "noise_shape must be a tuple", "4 (an int)"),
    ),
    (
        "noise_shape-wrong",
        lambda: jaxreg.dropout(key(), X, rate=0.5, noise_shape=(4, 2)),
        raises(ValueError, "noise_shape must have one entry per axis"),
    ),
    (
        "block_size-float",
        lambda: jaxreg.drop_block(key(), X, rate=0.5, block_size=2.5),
        raises(TypeError, "drop_block", "block_size must be an int", "2.5 (a float)"),
    ),
    (
        "block_size-none",
        lambda: jaxreg.drop_block(key(), X, rate=0.5, block_size=None),
        raises(TypeError, "block_size must be an int", "None"),
    ),
    (
        "block_size-bool",
        lambda: jaxreg.drop_block(key(), X, rate=0.5, block_size=True),
        raises(TypeError, "block_size must be an int", "True (a bool)"),
    ),
    (
        "num_samples-str",
        lambda: jaxreg.mc_predict(key(), lambda k: k, num_samples="8"),
        raises(TypeError, "mc_predict", "num_samples must be a Python int", "'8' (a str)"),
    ),
    (
        "depth-float",
        lambda: jaxreg.drop_path_rates(0.1, 3.0),
        raises(TypeError, "drop_path_rates", "depth must be a Python int", "3.0 (a float)"),
    ),
    (
        "dc-inference-num_samples",
        lambda: jaxreg.drop_connect_inference(
            key(), X, W[:2], rate=0.5, activation=jax.nn.relu, num_samples=0.5
        ),
        raises(TypeError, "num_samples", "0.5 (a float)"),
    ),
    (
        "dc-inference-method",
        lambda: jaxreg.drop_connect_inference(
            key(), X, W[:2], rate=0.5, activation=jax.nn.relu, num_samples=2, method="mean"
        ),
        raises(ValueError, "method must be one of 'moments', 'scale'", "'mean'"),
    ),
    (
        "dc-inference-activation",
        lambda: jaxreg.drop_connect_inference(
            key(), X, W[:2], rate=0.5, activation="relu", num_samples=2
        ),
        raises(TypeError, "activation must be callable", "'relu' (a str)"),
    ),
    (
        "sampler-bad",
        lambda: jaxreg.dropout(key(), X, rate=0.5, sampler="quick"),
        raises(ValueError, "sampler must be one of"),
    ),
    (
        "drop_path-per_example-str",
        lambda: jaxreg.drop_path(key(), X, rate=0.5, per_example="rows"),
        raises(TypeError, "drop_path", "per_example must be a bool", "'rows' (a str)"),
    ),
    (
        "channel_axis-0-spatial",
        lambda: jaxreg.spatial_dropout(key(), X, rate=0.5, channel_axis=0),
        raises(ValueError, "spatial_dropout", "channel_axis must not be 0"),
    ),
    (
        "channel_axis-0-drop_block",
        lambda: jaxreg.drop_block(key(), X, rate=0.5, block_size=2, channel_axis=0),
        raises(ValueError, "drop_block", "channel_axis must not be 0"),
    ),
    (
        "broadcast_dims-repeat",
        lambda: jaxreg.dropout(key(), X, rate=0.5, broadcast_dims=(0, -3)),
        raises(ValueError, "broadcast_dims repeats an axis", "List each axis once", "(0,)"),
    ),
    (
        "broadcast_dims-str",
        lambda: jaxreg.dropout(key(), X, rate=0.5, broadcast_dims="0"),
        raises(TypeError, "broadcast_dims must hold ints", "'0' (a str)"),
    ),
    (
        "mask-not-broadcast",
        lambda: jaxreg.apply_mask(X, jnp.ones((5,), bool), rate=0.5),
        raises(ValueError, "does not broadcast", "jaxreg.bernoulli_mask(key, x.shape"),
    ),
    (
        "mask-int",
        lambda: jaxreg.apply_mask(X, jnp.ones(X.shape, jnp.int32), rate=0.5),
        raises(TypeError, "mask must be a bool array"),
    ),
    (
        "rate-vector",
        lambda: jaxreg.dropout(key(), X, rate=jnp.array([0.1, 0.2])),
        raises(ValueError, "rate must be a scalar", "jax.vmap"),
    ),
    (
        "rate-bool",
        lambda: jaxreg.dropout(key(), X, rate=True),
        raises(TypeError, "rate must be", "True (a bool)"),
    ),
    (
        "rate-complex-array",
        lambda: jaxreg.dropout(key(), X, rate=jnp.array(0.5 + 0j)),
        raises(TypeError, "rate must be", "complex"),
    ),
    (
        "rate-key",
        lambda: jaxreg.dropout(key(), X, rate=key()),
        raises(TypeError, "rate must be"),
    ),
    (
        "x-int",
        lambda: jaxreg.dropout(key(), jnp.ones(3, jnp.int32), rate=0.5),
        raises(TypeError, "x must be a floating-point array", "int32", "astype"),
    ),
    (
        "x-str",
        lambda: jaxreg.dropout(key(), "abc", rate=0.5),
        raises(TypeError, "x must be a floating-point array", "'abc' (a str)"),
    ),
    (
        "x-complex",
        lambda: jaxreg.dropout(key(), jnp.ones(3, jnp.complex64), rate=0.5),
        raises(TypeError, "x must be a floating-point array", "complex64"),
    ),
    # Keys.
    (
        "key-int",
        lambda: jaxreg.dropout(0, X, rate=0.5),
        raises(TypeError, "key must be a PRNG key", "0 (an int)"),
    ),
    ("key-none", lambda: jaxreg.dropout(None, X, rate=0.5), raises(TypeError, "key is None")),
    (
        "key-nnx-rngs",
        lambda: jaxreg.dropout(nnx.Rngs(0), X, rate=0.5),
        raises(TypeError, "dropout", "flax.nnx.Rngs", "rngs.dropout()"),
    ),
    (
        "key-nnx-stream",
        lambda: jaxreg.dropout(nnx.Rngs(dropout=0).dropout, X, rate=0.5),
        raises(TypeError, "flax.nnx.RngStream", "rngs.dropout()"),
    ),
    (
        "mc-key-nnx-rngs",
        lambda: jaxreg.mc_predict(nnx.Rngs(0), lambda k: k, num_samples=2),
        raises(TypeError, "mc_predict", "rngs.dropout()"),
    ),
    (
        "key-batch",
        lambda: jaxreg.dropout(jax.random.split(key(), 2), X, rate=0.5),
        raises(ValueError, "single PRNG key", "jax.vmap"),
    ),
    # Functions given in the wrong shape.
    ("mc-swapped-args", _swapped_mc, raises(TypeError, "mc_predict", "fn(key, *args)")),
    (
        "mc-args-hold-key",
        lambda: jaxreg.mc_predict(jnp.ones(3), lambda x, k: x, key(), num_samples=2),
        raises(TypeError, "mc_predict", "key must be a PRNG key", "swapped"),
    ),
    (
        "mc-fn-not-callable",
        lambda: jaxreg.mc_predict(key(), 3, num_samples=2),
        raises(TypeError, "fn must be callable fn(key, *args)", "3 (an int)"),
    ),
    (
        "mc-key-and-fn-swapped",
        lambda: jaxreg.mc_predict(lambda k: k, key(), num_samples=2),
        raises(TypeError, "mc_predict", "look swapped", "mc_predict(key, fn, *args"),
    ),
    (
        "dropout-legacy-key-swapped",
        lambda: jaxreg.dropout(X, jax.random.PRNGKey(0), rate=0.5),
        raises(TypeError, "dropout", "look swapped", "key comes first"),
    ),
    (
        "per-example-jacfwd",
        lambda: jax.jacfwd(
            lambda x: jaxreg.drop_connect_dense(key(), x, W, rate=0.5, per_example=True)
        )(jnp.ones((2, 3))),
        raises(TypeError, "drop_connect_dense", "forward-mode", "jax.jacrev"),
    ),
    (
        "per-example-hessian",
        lambda: jax.hessian(
            lambda x: jaxreg.drop_connect_dense(key(), x, W, rate=0.5, per_example=True).sum()
        )(jnp.ones((2, 3))),
        raises(TypeError, "drop_connect_dense", "forward-mode"),
    ),
    # Selections.
    (
        "by_path-bad-regex",
        lambda: jaxreg.by_path(P, "("),
        raises(ValueError, "by_path", "not a valid regular expression", "re.escape"),
    ),
    (
        "by_path-int",
        lambda: jaxreg.by_path(P, 3),
        raises(TypeError, "pattern must be a regex string", "3 (an int)"),
    ),
    (
        "where-leaf-str",
        lambda: jaxreg.l2_penalty(P, where={"w": "yes"}),
        raises(TypeError, "where must hold one bool per parameter leaf", "'yes' (a str)"),
    ),
    (
        "python-floats-l2",
        lambda: jaxreg.l2_penalty([1.0, 2.0], strength=1.0),
        raises(TypeError, "l2_penalty", "only Python numbers", "jnp.asarray"),
    ),
    (
        "python-floats-l1",
        lambda: jaxreg.l1_penalty({"a": 3.0}),
        raises(TypeError, "l1_penalty", "only Python numbers"),
    ),
    (
        "python-floats-prox",
        lambda: jaxreg.prox_l1([1.0, 2.0], strength=0.5),
        raises(TypeError, "prox_l1", "only Python numbers"),
    ),
    (
        "python-floats-max_norm",
        lambda: jaxreg.max_norm([1.0], max_value=0.5),
        raises(TypeError, "max_norm", "only Python numbers"),
    ),
    (
        "python-floats-elastic",
        lambda: jaxreg.elastic_net_penalty([1.0]),
        raises(TypeError, "elastic_net_penalty", "only Python numbers"),
    ),
    (
        "python-floats-with-where",
        lambda: jaxreg.l2_penalty([jnp.array(1.0), 2.0], where=[True, True]),
        raises(TypeError, "must be a floating-point array to be regularized"),
    ),
    (
        "kernels_only-of-unfiltered-eqx",
        lambda: jaxreg.l2_penalty(
            eqx.filter(FILTERED_MLP, eqx.is_array), where=jaxreg.kernels_only(FILTERED_MLP)
        ),
        raises(ValueError, "l2_penalty", "eqx.filter", "where=jaxreg.kernels_only"),
    ),
    (
        "kernels_only-fn-on-filtered-eqx",
        lambda: jaxreg.l2_penalty(
            eqx.filter(FILTERED_MLP, eqx.is_array), where=jaxreg.kernels_only
        ),
        Value(lambda y: y > 0 and jnp.isfinite(y)),
    ),
    (
        "orthogonal-vector",
        lambda: jaxreg.orthogonal_penalty({"b": jnp.ones(3)}),
        raises(ValueError, "rank >= 2", "kernels_only"),
    ),
    (
        "group-axis-out-of-range",
        lambda: jaxreg.group_lasso_penalty(P, axis=2),
        raises(ValueError, "axis holds axis 2", "Params leaf: 'w'"),
    ),
    # Values that used to be wrong.
    (
        "mc-bool-outputs",
        lambda: jaxreg.mc_predict(
            key(), lambda k: jax.random.bernoulli(k, 0.5, (4,)), num_samples=4000
        ),
        Value(
            lambda mv: (
                mv[0].dtype == jnp.float32
                and bool(jnp.all(jnp.abs(mv[0] - 0.5) < 0.05))
                and bool(jnp.all(jnp.abs(mv[1] - 0.25) < 0.02))
            )
        ),
    ),
    (
        "mc-int-outputs",
        lambda: jaxreg.mc_predict(
            key(), lambda k: jax.random.randint(k, (3,), 0, 2), num_samples=4000
        ),
        Value(lambda mv: mv[0].dtype == jnp.float32 and bool(jnp.all(mv[1] > 0.2))),
    ),
    (
        "scale_for_inference-inf-rate1",
        lambda: jaxreg.scale_for_inference(jnp.array([jnp.inf, 1.0]), rate=1.0),
        Value(_finite_zero),
    ),
    (
        "scale_for_inference-inf-traced-rate1",
        lambda: jax.jit(lambda r: jaxreg.scale_for_inference(jnp.array([jnp.inf, 1.0]), rate=r))(
            1.0
        ),
        Value(_finite_zero),
    ),
    (
        "apply_mask-all-true-rate1",
        lambda: jaxreg.apply_mask(INF_X, jnp.ones(INF_X.shape, bool), rate=1.0),
        Value(_finite_zero),
    ),
    (
        "apply_mask-all-true-traced-rate1",
        lambda: jax.jit(lambda r: jaxreg.apply_mask(INF_X, jnp.ones(INF_X.shape, bool), rate=r))(
            1.0
        ),
        Value(_finite_zero),
    ),
    (
        "dropout-rate-grad-inf-x",
        lambda: _rate_grad_at_one(jaxreg.dropout),
        Value(lambda g: g == 0),
    ),
    (
        "drop_connect-rate-grad-inf-w",
        lambda: _rate_grad_at_one(jaxreg.drop_connect),
        Value(lambda g: g == 0),
    ),
    (
        "dc-inference-inf-kernel-traced-rate1",
        lambda: jax.jit(
            lambda r: jaxreg.drop_connect_inference(
                key(),
                jnp.ones((2, 2)),
                INF_X,
                jnp.ones(2),
                rate=r,
                activation=jax.nn.relu,
                num_samples=4,
            )
        )(1.0),
        Value(lambda y: bool(jnp.all(y == 1.0))),
    ),
    (
        "gaussian-f16-near-rate1",
        lambda: jaxreg.gaussian_dropout(
            key(), jnp.array([0.0, 1.0, -2.0] * 100, jnp.float16), rate=1 - 1e-9
        ),
        Value(lambda y: y.dtype == jnp.float16 and not jnp.any(jnp.isnan(y)) and y[0] == 0),
    ),
    (
        "gaussian-f16-near-rate1-traced",
        lambda: jax.jit(
            lambda r: jaxreg.gaussian_dropout(
                key(), jnp.array([0.0, 1.0] * 100, jnp.float16), rate=r
            )
        )(0.9999999),
        Value(lambda y: not jnp.any(jnp.isnan(y)) and y[0] == 0),
    ),
    (
        "extreme-rate-divisor",
        lambda: jaxreg.apply_mask(jnp.ones(2), jnp.ones(2, bool), rate=1 - 1e-12),
        Value(lambda y: bool(jnp.all(y == 2.0**23))),
    ),
    (
        "extreme-rate-divisor-traced",
        lambda: jax.jit(lambda r: jaxreg.apply_mask(jnp.ones(2), jnp.ones(2, bool), rate=r))(
            np.float32(1 - 1e-7)
        ),
        Value(lambda y: bool(jnp.all(jnp.abs(y * _q32(1 - np.float32(1 - 1e-7)) - 1) < 2**-20))),
    ),
    (
        "fast-rate-0.999-keeps-some",
        lambda: jaxreg.apply_mask(jnp.ones(2), jnp.ones(2, bool), rate=0.999, sampler="fast"),
        Value(lambda y: bool(jnp.all(y == 256.0))),
    ),
    (
        "l2-traced-negative-grad-nan",
        lambda: jax.jit(jax.grad(lambda p, s: jaxreg.l2_penalty(p, strength=s)))(P, -0.5)["w"],
        Value(lambda g: bool(jnp.all(jnp.isnan(g)))),
    ),
    (
        "prox-traced-negative-nan",
        lambda: jax.jit(lambda s: jaxreg.prox_l1(P, strength=s))(-0.5)["w"],
        Value(lambda y: bool(jnp.all(jnp.isnan(y)))),
    ),
    (
        "dropout-traced-rate-above-1-grad-nan",
        lambda: jax.jit(jax.grad(lambda x, r: jnp.sum(jaxreg.dropout(key(), x, rate=r))))(X, 1.5),
        Value(lambda g: bool(jnp.all(jnp.isnan(g)))),
    ),
    (
        "l2-zero-params-strength-0",
        lambda: jaxreg.l2_penalty({"w": jnp.zeros(3)}, strength=0.0),
        Value(lambda y: y == 0),
    ),
    (
        "unit_norm-tiny",
        lambda: jaxreg.unit_norm(jnp.full((4, 2), 1e-30)),
        Value(lambda y: bool(jnp.allclose(jnp.linalg.norm(y, axis=0), 1.0, rtol=1e-6))),
    ),
    (
        "unit_norm-huge",
        lambda: jaxreg.unit_norm(jnp.full((4, 2), 1e30)),
        Value(lambda y: bool(jnp.allclose(jnp.linalg.norm(y, axis=0), 1.0, rtol=1e-6))),
    ),
    (
        "max_norm-huge",
        lambda: jaxreg.max_norm(jnp.full((4, 2), 1e20), max_value=2.0),
        Value(lambda y: bool(jnp.allclose(jnp.linalg.norm(y, axis=0), 2.0, rtol=1e-6))),
    ),
    (
        "max_norm-tiny-untouched",
        lambda: jaxreg.max_norm(jnp.full((4, 2), 1e-25), max_value=2.0),
        Value(lambda y: bool(jnp.all(y == jnp.float32(1e-25)))),
    ),
    (
        "group_lasso-tiny",
        lambda: jaxreg.group_lasso_penalty({"w": jnp.full((4, 1), 1e-30)}),
        Value(lambda y: bool(jnp.isclose(y, 2e-30, rtol=1e-5))),
    ),
    (
        "prox_group_lasso-huge",
        lambda: jaxreg.prox_group_lasso(jnp.full((4, 1), 1e20), strength=1e20),
        Value(lambda y: bool(jnp.allclose(y, 0.5e20, rtol=1e-6))),
    ),
    # Empty inputs of any shape return empty outputs.
    (
        "empty-dropout",
        lambda: jaxreg.dropout(key(), EMPTY, rate=0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-dropout-fast",
        lambda: jaxreg.dropout(key(), EMPTY, rate=0.5, sampler="fast"),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-gaussian",
        lambda: jaxreg.gaussian_dropout(key(), EMPTY, rate=0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-alpha",
        lambda: jaxreg.alpha_dropout(key(), EMPTY, rate=0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-drop_path",
        lambda: jaxreg.drop_path(key(), EMPTY, rate=0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-drop_connect",
        lambda: jaxreg.drop_connect(key(), EMPTY, rate=0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
    (
        "empty-mask",
        lambda: jaxreg.bernoulli_mask(key(), (0, 2**32), rate=0.5),
        Value(_zero_like((0, 2**32))),
    ),
    (
        "empty-spatial",
        lambda: jaxreg.spatial_dropout(key(), jnp.zeros((0, 2**32, 3)), rate=0.5),
        Value(_zero_like((0, 2**32, 3))),
    ),
    (
        "empty-drop_block",
        lambda: jaxreg.drop_block(key(), jnp.zeros((0, 4, 4, 2)), rate=0.5, block_size=2),
        Value(_zero_like((0, 4, 4, 2))),
    ),
    (
        "empty-traced-rate",
        lambda: jax.jit(lambda r: jaxreg.dropout(key(), EMPTY, rate=r))(0.5),
        Value(_zero_like(EMPTY.shape)),
    ),
]


def _q32(keep):
    """The exact sampler's realised keep probability for a float32 keep probability."""
    return math.ceil(float(np.float32(keep)) * 2**23) / 2**23


def test_table_is_large_and_unique():
    ids = [row[0] for row in ROWS]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_hostile_input(row):
    _, call, expect = row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(expect, Raises):
            with pytest.raises(expect.exc) as info:
                call()
            message = str(info.value)
            assert message.startswith("jaxreg."), message
            for word in expect.words:
                assert word in message, (word, message)
        else:
            assert expect.check(call())


# Regression tests for the numeric fixes.

# Keep probabilities 1 - rate from 1e-12 to 1, log-spaced, plus a few round rates.
GRID = np.concatenate([1.0 - np.logspace(-12, 0, 97)[:-1], [0.1, 0.5, 0.875, 0.9, 0.95, 0.99]])


def _scaled_ones(rates, traced):
    """apply_mask of a kept 1.0 at each rate: 1 / (what kept units are divided by)."""
    one = jnp.ones(1)
    mask = jnp.ones(1, bool)
    if traced:
        f = jax.jit(jax.vmap(lambda r: jaxreg.apply_mask(one, mask, rate=r)[0]))
        return np.asarray(f(jnp.asarray(rates, jnp.float32)))
    return np.array([jaxreg.apply_mask(one, mask, rate=float(r))[0] for r in rates], np.float32)


@pytest.mark.parametrize("traced", [False, True])
def test_every_rate_is_unbiased_and_flax_exact_where_flax_is_unbiased(traced):
    rates = GRID.astype(np.float32) if traced else GRID
    keep32 = (1 - np.float32(rates)) if traced else np.float32(1 - rates)
    rates = rates[keep32 > 0]  # float32 rounds 1 - 1e-12 to rate 1: zeros, tested elsewhere
    keep32 = keep32[keep32 > 0]
    y = _scaled_ones(rates, traced).astype(np.float64)
    realised = np.array([_q32(p) for p in keep32])
    # E[output] = x * realised * y: unbiased to 2**-20 (plus float32 rounding) at every rate.
    np.testing.assert_array_less(np.abs(realised * y - 1), 2**-20 + 2**-23)
    # flax's output x / (1 - rate) wherever that is unbiased, always up to rate 0.875.
    flax_ok = np.abs(realised / keep32.astype(np.float64) - 1) <= 2**-20
    assert flax_ok[rates <= 0.875].all()
    np.testing.assert_array_equal(y[flax_ok], (np.float32(1) / keep32)[flax_ok])
    # Negative control: flax's divisor is biased beyond the bound at the other rates.
    assert (np.abs(realised / keep32 - 1) > 2**-20 + 2**-23).sum() > 10


@pytest.mark.parametrize("rate", [1 - 1e-4, 1 - 1e-6, 1 - 3e-8])
def test_extreme_rate_masks_equal_jax_bernoulli(rate):
    k = jax.random.key(3)
    mask = jaxreg.bernoulli_mask(k, (2**16,), rate=rate)
    np.testing.assert_array_equal(mask, jax.random.bernoulli(jax.random.key(3), 1 - rate, (2**16,)))


def test_rate_near_one_is_unbiased_at_five_sigma():
    # The example: 2**24 ones at rate 1 - 1e-12 had mean 59,606.
    n = 2**24
    y = jaxreg.dropout(jax.random.key(7), jnp.ones(n), rate=1 - 1e-12)
    q = 2.0**-23  # realised keep probability (threshold 1 of 2**23)
    sigma = math.sqrt((1 - q) / (q * n))
    mean = float(jnp.mean(y, dtype=jnp.float32))
    assert abs(mean - 1) < 5 * sigma
    biased = mean * q / 1e-12  # flax's divisor 1 - rate instead: the control
    assert abs(biased - 1) > 5 * sigma


def test_fast_sampler_near_one_is_unbiased_at_five_sigma():
    n = 2**20
    y = jaxreg.dropout(jax.random.key(8), jnp.ones(n), rate=0.999, sampler="fast")
    q = 1 / 256
    sigma = math.sqrt((1 - q) / (q * n))
    kept = float(jnp.mean(y != 0))
    assert abs(kept - q) < 5 * math.sqrt(q * (1 - q) / n)
    assert abs(float(jnp.mean(y)) - 1) < 5 * sigma
    # Control: the old threshold 0 of 256 kept nothing, a mean of 0.
    assert abs(0.0 - 1) > 5 * sigma
    assert int(_rate.fast_threshold(0.999)) == 1 and int(_rate.fast_threshold(1.0)) == 0


def test_traced_fast_threshold_matches_python():
    rates = np.array([0.0, 0.1, 0.5, 0.998, 0.999, 0.9999, 1.0], np.float32)
    traced = jax.jit(jax.vmap(_rate.fast_threshold))(jnp.asarray(rates))
    np.testing.assert_array_equal(traced, [_rate.fast_threshold(float(r)) for r in rates])


def test_nonfinite_inputs_at_traced_rate_one_have_finite_gradients():
    for op in (jaxreg.dropout, jaxreg.drop_connect, jaxreg.gaussian_dropout):
        g_x, g_r = jax.jit(
            jax.grad(lambda x, r, op=op: jnp.sum(op(jax.random.key(0), x, rate=r)), (0, 1))
        )(INF_X, 1.0)
        assert jnp.all(g_x == 0) and g_r == 0, op


X64_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    jax.config.update("jax_enable_x64", True)
    import jaxreg
    x = jnp.linspace(1.0, 2.0, 4096, dtype=jnp.float32).reshape(64, 64)
    for rate in (0.1, 0.5, 0.9, 1 - 1e-9):
        want = nn.Dropout(rate).apply({}, x, deterministic=False, rng=jax.random.key(11))
        got = jaxreg.dropout(jax.random.key(11), x, rate=rate)
        assert got.dtype == jnp.float32
        np.testing.assert_array_equal(got, want)
        r64 = jnp.float64(rate)
        mask = jax.jit(lambda k, r: jaxreg.bernoulli_mask(k, x.shape, rate=r))(
            jax.random.key(12), r64
        )
        want = jax.random.bernoulli(jax.random.key(12), 1 - r64, x.shape)
        np.testing.assert_array_equal(mask, want)
        y = jax.jit(lambda k, r: jaxreg.dropout(k, x, rate=r))(jax.random.key(12), r64)
        np.testing.assert_array_equal(y, jnp.where(mask, x / jnp.float32(1 - r64), 0))
    print("ok")
    """
)


def test_x64_masks_and_outputs_match_jax_and_flax():
    out = subprocess.run(
        [sys.executable, "-c", X64_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("dtype", sorted(SCALARS))
def test_bf16_f16_f64_scalar_rates_are_accepted_by_every_op(dtype):
    # bf16 used to fail with "rate must be a number in [0, 1] or a scalar array, got
    # 0.30078125 (a scalar array of dtype bfloat16)": NumPy's dtype kind of bfloat16 is
    # "V", not "f".
    make = SCALARS[dtype]
    for name, call in RATE_OPS.items():
        out = call(make(0.3))
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(out)), name
        with pytest.raises(ValueError, match=rf"jaxreg\.{name}: rate must be in \[0, 1\]"):
            call(make(1.5))
    y = jax.jit(lambda r: jaxreg.dropout(key(), X, rate=r))(make(0.3))
    np.testing.assert_array_equal(y, jaxreg.dropout(key(), X, rate=jnp.float32(make(0.3))))
    # A JAX array rate is never decided; a NumPy scalar is a number, as documented.
    assert jaxreg.needs_key(make(0.0)) is (dtype != "float64")
