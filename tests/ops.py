"""The conformance table: every public stochastic op of the core, with what it promises.

A new op joins every generic test in test_conformance.py by being added to OPS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxreg


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
      short_circuits: a Python rate of 0 returns the input object itself.
      keep: the keep probability for a rate (what kept units are divided by).
      hyper: what the third argument of ``call`` is. ``"rate"``: a probability in
        [0, 1] (every generic test). ``"stddev"``: a scale in [0, inf) that has no
        "rate 1 gives zeros" and no upper bound (gaussian_noise); the tests of those
        two rate-only promises skip it and tests/test_gaussian_noise.py checks the
        stddev counterparts.
    """

    name: str
    call: Callable
    shape: tuple[int, ...]
    kind: str
    units: Callable | None = None
    short_circuits: bool = True
    keep: Callable[[float], float] = lambda rate: 1.0 - rate
    hyper: str = "rate"

    def __str__(self) -> str:
        return self.name


def _ones_units(call, shape, view):
    return lambda key, rate: view(call(key, jnp.ones(shape), rate)) != 0


def _batch_units(call, n):
    keys = lambda key: jax.random.split(key, n)  # noqa: E731
    return lambda key, rate: (
        jax.vmap(lambda k: call(k, jnp.ones((2, 3)), rate)[0, 0])(keys(key)) != 0
    )


_dropout = lambda k, x, r: jaxreg.dropout(k, x, rate=r)  # noqa: E731
_fast = lambda k, x, r: jaxreg.dropout(k, x, rate=r, sampler="fast")  # noqa: E731
_fast_spatial = lambda k, x, r: jaxreg.spatial_dropout(k, x, rate=r, sampler="fast")  # noqa: E731
_classic = lambda k, x, r: jaxreg.dropout(k, x, rate=r, inverted=False)  # noqa: E731
_shared = lambda k, x, r: jaxreg.dropout(k, x, rate=r, broadcast_dims=(0,))  # noqa: E731
_noise = lambda k, x, r: jaxreg.dropout(k, x, rate=r, noise_shape=(None, 1, None))  # noqa: E731
_spatial = lambda k, x, r: jaxreg.spatial_dropout(k, x, rate=r)  # noqa: E731
_spatial_cf = lambda k, x, r: jaxreg.spatial_dropout(k, x, rate=r, channel_axis=1)  # noqa: E731
_variational = lambda k, x, r: jaxreg.variational_dropout(k, x, rate=r)  # noqa: E731
_gaussian = lambda k, x, r: jaxreg.gaussian_dropout(k, x, rate=r)  # noqa: E731
_alpha = lambda k, x, r: jaxreg.alpha_dropout(k, x, rate=r)  # noqa: E731
_row = lambda k, x, r: jaxreg.drop_path(k, x, rate=r)  # noqa: E731
_batch = lambda k, x, r: jaxreg.drop_path(k, x, rate=r, mode="batch")  # noqa: E731
_block = lambda k, x, r: jaxreg.dropblock(k, x, rate=r, block_size=3)  # noqa: E731


# DropConnect. The dense ops use an identity kernel, so y[b, j] = x[b, j] * mask / keep
# (the affine check then holds elementwise); the input is named x, as the tests expect.
_eye = lambda x: jnp.eye(x.shape[-1], dtype=x.dtype)  # noqa: E731
_dc = lambda k, x, r: jaxreg.drop_connect(k, x, rate=r)  # noqa: E731
_dc_classic = lambda k, x, r: jaxreg.drop_connect(k, x, rate=r, inverted=False)  # noqa: E731
_dc_dense = lambda k, x, r: jaxreg.drop_connect_dense(k, x, _eye(x), rate=r)  # noqa: E731
_dc_per_example = lambda k, x, r: jaxreg.drop_connect_dense(  # noqa: E731
    k, x, _eye(x), rate=r, per_example=True
)
_dc_tree = lambda k, x, r: jaxreg.drop_connect_tree(k, {"w": x}, rate=r, where={"w": True})["w"]  # noqa: E731
_dc_inference = lambda k, x, r: jaxreg.drop_connect_inference(  # noqa: E731
    k, x, _eye(x), rate=r, activation=lambda u: u, num_samples=1
)


def _gaussian_noise(k, x, r):
    """Additive noise: the generic tests' third argument is the stddev."""
    return jaxreg.gaussian_noise(k, x, stddev=r)


def _dropconnect_like_mask(k, x, r):
    """bernoulli_mask + apply_mask, the two halves of dropout."""
    return jaxreg.apply_mask(x, jaxreg.bernoulli_mask(k, x.shape, rate=r), rate=r)


def _fast_keep(rate: float) -> float:
    return min(max(np.floor((1 - rate) * 256 + 0.5), 0), 256) / 256


OPS: tuple[Op, ...] = (
    Op("dropout", _dropout, (8, 16), "mask", _ones_units(_dropout, (1000, 1000), lambda y: y)),
    Op(
        "dropout_classic",
        _classic,
        (8, 16),
        "classic",
        _ones_units(_classic, (1000, 1000), lambda y: y),
    ),
    Op(
        "dropout_broadcast",
        _shared,
        (4, 16),
        "mask",
        _ones_units(_shared, (3, 1_000_000), lambda y: y[0]),
    ),
    Op(
        "dropout_noise_shape",
        _noise,
        (4, 5, 6),
        "mask",
        _ones_units(_noise, (1000, 2, 1000), lambda y: y[:, 0]),
    ),
    Op(
        "mask_then_apply",
        _dropconnect_like_mask,
        (8, 16),
        "mask",
        _ones_units(_dropconnect_like_mask, (1000, 1000), lambda y: y),
        short_circuits=False,
    ),
    Op(
        "spatial_dropout",
        _spatial,
        (4, 3, 5, 6),
        "mask",
        _ones_units(_spatial, (1000, 2, 2, 1000), lambda y: y[:, 0, 0]),
    ),
    Op(
        "spatial_dropout_channels_first",
        _spatial_cf,
        (4, 6, 3, 5),
        "mask",
        _ones_units(_spatial_cf, (1000, 1000, 3), lambda y: y[:, :, 0]),
    ),
    Op(
        "variational_dropout",
        _variational,
        (4, 7, 6),
        "mask",
        _ones_units(_variational, (1000, 3, 1000), lambda y: y[:, 0]),
    ),
    Op(
        "dropout_fast",
        _fast,
        (8, 21),
        "mask",
        _ones_units(_fast, (1000, 1000), lambda y: y),
        keep=_fast_keep,
    ),
    Op(
        "spatial_dropout_fast",
        _fast_spatial,
        (4, 3, 5, 6),
        "mask",
        _ones_units(_fast_spatial, (1000, 2, 2, 1000), lambda y: y[:, 0, 0]),
        keep=_fast_keep,
    ),
    Op("gaussian_dropout", _gaussian, (8, 16), "affine"),
    Op("alpha_dropout", _alpha, (8, 16), "affine"),
    Op("gaussian_noise", _gaussian_noise, (8, 16), "affine", hyper="stddev"),
    Op(
        "drop_path_row",
        _row,
        (8, 3, 4),
        "mask",
        _ones_units(_row, (1_000_000, 2), lambda y: y[:, 0]),
    ),
    Op("drop_path_batch", _batch, (8, 3), "mask", _batch_units(_batch, 1_000_000)),
    Op("dropblock", _block, (2, 9, 9, 3), "block"),
    # DropConnect
    Op("drop_connect", _dc, (8, 16), "mask", _ones_units(_dc, (1000, 1000), lambda y: y)),
    Op("drop_connect_classic", _dc_classic, (8, 16), "classic"),
    Op("drop_connect_dense", _dc_dense, (8, 16), "affine", short_circuits=False),
    Op("drop_connect_dense_per_example", _dc_per_example, (8, 16), "affine", short_circuits=False),
    Op(
        "drop_connect_tree",
        _dc_tree,
        (8, 16),
        "mask",
        _ones_units(_dc_tree, (1000, 1000), lambda y: y),
    ),
    Op("drop_connect_inference", _dc_inference, (8, 16), "affine", short_circuits=False),
)
