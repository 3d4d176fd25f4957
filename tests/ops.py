"""The conformance table: every public stochastic op of the core, with what it promises.

A new op joins every generic test in test_conformance.py by being added to OPS: write
its ``call(key, x, rate)`` as a named function below (the table test reads its source
for ``jaxreg.<name>(``), then add one ``Op(...)`` row. A call passes ``key`` and ``x``
through to the op as they are (the swapped-arguments test calls ``call(x, key, rate)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxreg


def inverted_keep(rate: float) -> float:
    """Kept units of an inverted op are divided by 1 - rate."""
    return 1.0 - rate


def fast_keep(rate: float) -> float:
    """``sampler="fast"`` rounds the keep probability to k / 256."""
    return min(max(np.floor((1 - rate) * 256 + 0.5), 0), 256) / 256


def all_units(y: jax.Array) -> jax.Array:
    """Every output element is an independent unit."""
    return y


@dataclasses.dataclass(frozen=True)
class Op:
    """One stochastic op as the generic tests see it.

    Attributes:
      name: test id.
      call: ``call(key, x, rate) -> y``.
      shape: a small input shape for the exact tests.
      kind: ``"mask"`` (every output is 0 or x / keep), ``"classic"`` (0 or x),
        ``"affine"`` (y = A * x + B with random A, B; Gaussian and alpha dropout),
        ``"block"`` (0 or x * data-dependent scale; DropBlock).
      units: ``units(key, rate) -> bool array`` of independent keep draws (at least
        1e6 of them) for the keep-fraction test, or None if the op has its own.
        ``ones_units`` and ``batch_units`` build one.
      short_circuits: a Python rate of 0 returns the input object itself.
      keep: the keep probability for a rate (what kept units are divided by).
      hyper: what the third argument of ``call`` is. ``"rate"``: a probability in
        [0, 1] (every generic test). ``"stddev"``: a scale in [0, inf) that has no
        "rate 1 gives zeros" and no upper bound (gaussian_noise); the tests of those
        two rate-only promises skip it and tests/test_gaussian_noise.py checks the
        stddev counterparts. ``"gate"``: the rate maps to a gate parameter
        (hard_concrete_gate's log_alpha, see ``hard_concrete_gate`` below); the op has no
        rate argument to validate, so the rate-only promises skip it and
        tests/test_l0.py checks its own arguments.
      rate_one_zeros: rate 1 gives zeros (with zero gradients). False for drop_key,
        whose rate 1 keeps each row's maximum (tests/test_attention.py checks it).
    """

    name: str
    call: Callable
    shape: tuple[int, ...]
    kind: str
    units: Callable | None = None
    short_circuits: bool = True
    keep: Callable[[float], float] = inverted_keep
    hyper: str = "rate"
    rate_one_zeros: bool = True

    def __str__(self) -> str:
        return self.name


def ones_units(call: Callable, shape: tuple[int, ...], view: Callable = all_units) -> Callable:
    """Keep draws of ``call`` on ones of ``shape``; ``view`` picks one element per draw."""

    def units(key, rate):
        return view(call(key, jnp.ones(shape), rate)) != 0

    return units


def batch_units(call: Callable, n: int) -> Callable:
    """Keep draws of an op that draws once per call: ``n`` calls under vmap."""

    def units(key, rate):
        def one(k):
            return call(k, jnp.ones((2, 3)), rate)[0, 0]

        return jax.vmap(one)(jax.random.split(key, n)) != 0

    return units


# Views: one element per independent draw of a broadcast mask.
def first_row(y):
    return y[0]


def second_axis_first(y):
    return y[:, 0]


def first_spatial(y):
    return y[:, 0, 0]


def last_axis_first(y):
    return y[:, :, 0]


# Dropout family.
def dropout(k, x, r):
    return jaxreg.dropout(k, x, rate=r)


def dropout_fast(k, x, r):
    return jaxreg.dropout(k, x, rate=r, sampler="fast")


def dropout_classic(k, x, r):
    return jaxreg.dropout(k, x, rate=r, inverted=False)


def dropout_broadcast(k, x, r):
    return jaxreg.dropout(k, x, rate=r, broadcast_dims=(0,))


def dropout_noise_shape(k, x, r):
    return jaxreg.dropout(k, x, rate=r, noise_shape=(None, 1, None))


def gaussian_noise(k, x, r):
    """Additive noise: the generic tests' third argument is the stddev."""
    return jaxreg.gaussian_noise(k, x, stddev=r)


def mask_then_apply(k, x, r):
    """bernoulli_mask + apply_mask, the two halves of dropout."""
    return jaxreg.apply_mask(x, jaxreg.bernoulli_mask(k, x.shape, rate=r), rate=r)


def spatial_dropout(k, x, r):
    return jaxreg.spatial_dropout(k, x, rate=r)


def spatial_dropout_channels_first(k, x, r):
    return jaxreg.spatial_dropout(k, x, rate=r, channel_axis=1)


def spatial_dropout_fast(k, x, r):
    return jaxreg.spatial_dropout(k, x, rate=r, sampler="fast")


def variational_dropout(k, x, r):
    return jaxreg.variational_dropout(k, x, rate=r)


def gaussian_dropout(k, x, r):
    return jaxreg.gaussian_dropout(k, x, rate=r)


def alpha_dropout(k, x, r):
    return jaxreg.alpha_dropout(k, x, rate=r)


def drop_path_row(k, x, r):
    return jaxreg.drop_path(k, x, rate=r)


def drop_path_batch(k, x, r):
    return jaxreg.drop_path(k, x, rate=r, per_example=False)


def drop_block(k, x, r):
    return jaxreg.drop_block(k, x, rate=r, block_size=3)


# DropConnect. The dense ops use an identity kernel, so y[b, j] = x[b, j] * mask / keep
# (the affine check then holds elementwise); the input is named x, as the tests expect.
def _eye(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):  # a swapped call: let jaxreg say so
        return jnp.eye(1)
    return jnp.eye(x.shape[-1], dtype=x.dtype)


def drop_connect(k, x, r):
    return jaxreg.drop_connect(k, x, rate=r)


def drop_connect_classic(k, x, r):
    return jaxreg.drop_connect(k, x, rate=r, inverted=False)


def drop_connect_dense(k, x, r):
    return jaxreg.drop_connect_dense(k, x, _eye(x), rate=r)


def drop_connect_dense_per_example(k, x, r):
    return jaxreg.drop_connect_dense(k, x, _eye(x), rate=r, per_example=True)


def drop_connect_tree(k, x, r):
    return jaxreg.drop_connect_tree(k, {"w": x}, rate=r, where={"w": True})["w"]


def drop_connect_inference(k, x, r):
    return jaxreg.drop_connect_inference(
        k, x, _eye(x), rate=r, activation=lambda u: u, num_samples=1
    )


# Scalar hyperparameters (rates, strengths) of the other float dtypes, by name; float64
# without jax_enable_x64 is a NumPy float64 scalar (a JAX float64 array needs x64).
SCALARS = {
    "bfloat16": lambda v: jnp.asarray(v, jnp.bfloat16),
    "float16": lambda v: jnp.asarray(v, jnp.float16),
    "float64": np.float64,
}


# Learned regularization.
def concrete_dropout(k, x, r):
    return jaxreg.concrete_dropout(k, x, rate=r)


def concrete_units(key, rate):
    """The relaxed drop indicator exceeds 1/2 with probability rate, at any temperature."""
    y = jaxreg.concrete_dropout(key, jnp.ones(M), rate=rate)
    return y * (1.0 - rate) > 0.5


# P(gate == 0) = sigmoid(beta * log(-gamma / zeta) - log_alpha) with the default beta
# and limits: log_alpha = SHIFT - logit(rate) makes exact zeros happen with prob. rate.
SHIFT = 2 / 3 * np.log(0.1 / 1.1)


def hard_concrete_gate(k, x, r):
    """``x`` times hard-concrete gates that are exactly 0 with probability ``r``.

    Rate 0 is log_alpha = +inf (gates exactly 1), rate 1 is -inf (exactly 0). A Python
    rate 0 returns ``x`` without drawing, as the rate ops do (glue, not the op).
    """
    if isinstance(r, float) and r == 0.0:
        return x
    if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):  # swapped arguments
        return jaxreg.hard_concrete_gate(k, x)  # the op must name the mistake
    log_alpha = jnp.broadcast_to(SHIFT + jnp.log1p(-r) - jnp.log(r), x.shape).astype(x.dtype)
    gate = jaxreg.hard_concrete_gate(k, log_alpha)
    return jnp.where(gate > 0, x * gate, 0)


# Attention. drop_key's dropped logits (-inf) are shown as 0, so that the generic
# "every output is 0 or x" tests apply; kept logits pass through drop_key unchanged.
def drop_head(k, x, r):
    return jaxreg.drop_head(k, x, rate=r, head_axis=1)


def drop_head_shared(k, x, r):
    return jaxreg.drop_head(k, x, rate=r, head_axis=-1, per_example=False)


def drop_key(k, x, r):
    y = jaxreg.drop_key(k, x, rate=r)
    return jnp.where(jnp.isneginf(y), jnp.zeros((), y.dtype), y)


M = (1000, 1000)  # 1e6 independent units

OPS: tuple[Op, ...] = (
    Op("dropout", dropout, (8, 16), "mask", ones_units(dropout, M)),
    Op("dropout_classic", dropout_classic, (8, 16), "classic", ones_units(dropout_classic, M)),
    Op(
        "dropout_broadcast",
        dropout_broadcast,
        (4, 16),
        "mask",
        ones_units(dropout_broadcast, (3, 1_000_000), first_row),
    ),
    Op(
        "dropout_noise_shape",
        dropout_noise_shape,
        (4, 5, 6),
        "mask",
        ones_units(dropout_noise_shape, (1000, 2, 1000), second_axis_first),
    ),
    Op(
        "mask_then_apply",
        mask_then_apply,
        (8, 16),
        "mask",
        ones_units(mask_then_apply, M),
        short_circuits=False,
    ),
    Op(
        "spatial_dropout",
        spatial_dropout,
        (4, 3, 5, 6),
        "mask",
        ones_units(spatial_dropout, (1000, 2, 2, 1000), first_spatial),
    ),
    Op(
        "spatial_dropout_channels_first",
        spatial_dropout_channels_first,
        (4, 6, 3, 5),
        "mask",
        ones_units(spatial_dropout_channels_first, (1000, 1000, 3), last_axis_first),
    ),
    Op(
        "variational_dropout",
        variational_dropout,
        (4, 7, 6),
        "mask",
        ones_units(variational_dropout, (1000, 3, 1000), second_axis_first),
    ),
    Op("dropout_fast", dropout_fast, (8, 21), "mask", ones_units(dropout_fast, M), keep=fast_keep),
    Op(
        "spatial_dropout_fast",
        spatial_dropout_fast,
        (4, 3, 5, 6),
        "mask",
        ones_units(spatial_dropout_fast, (1000, 2, 2, 1000), first_spatial),
        keep=fast_keep,
    ),
    Op("gaussian_dropout", gaussian_dropout, (8, 16), "affine"),
    Op("alpha_dropout", alpha_dropout, (8, 16), "affine"),
    Op("gaussian_noise", gaussian_noise, (8, 16), "affine", hyper="stddev"),
    Op(
        "drop_path_row",
        drop_path_row,
        (8, 3, 4),
        "mask",
        ones_units(drop_path_row, (1_000_000, 2), second_axis_first),
    ),
    Op("drop_path_batch", drop_path_batch, (8, 3), "mask", batch_units(drop_path_batch, 1_000_000)),
    Op("drop_block", drop_block, (2, 9, 9, 3), "block"),
    # DropConnect
    Op("drop_connect", drop_connect, (8, 16), "mask", ones_units(drop_connect, M)),
    Op("drop_connect_classic", drop_connect_classic, (8, 16), "classic"),
    Op("drop_connect_dense", drop_connect_dense, (8, 16), "affine", short_circuits=False),
    Op(
        "drop_connect_dense_per_example",
        drop_connect_dense_per_example,
        (8, 16),
        "affine",
        short_circuits=False,
    ),
    Op("drop_connect_tree", drop_connect_tree, (8, 16), "mask", ones_units(drop_connect_tree, M)),
    Op(
        "drop_connect_inference",
        drop_connect_inference,
        (8, 16),
        "affine",
        short_circuits=False,
    ),
    # Learned regularization
    Op("concrete_dropout", concrete_dropout, (8, 16), "affine", concrete_units),
    Op(
        "hard_concrete_gate",
        hard_concrete_gate,
        (8, 16),
        "affine",
        ones_units(hard_concrete_gate, M),
        short_circuits=False,
        hyper="gate",
    ),
    # Attention
    Op(
        "drop_head",
        drop_head,
        (4, 3, 5),
        "mask",
        ones_units(drop_head, (500_000, 2, 3), last_axis_first),
    ),
    Op(
        "drop_head_shared",
        drop_head_shared,
        (4, 3),
        "mask",
        batch_units(drop_head_shared, 1_000_000),
    ),
    Op(
        "drop_key",
        drop_key,
        (4, 2, 3, 8),
        "classic",
        ones_units(drop_key, M),
        short_circuits=False,
        rate_one_zeros=False,
    ),
)
