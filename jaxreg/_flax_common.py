"""Plumbing shared by the Flax adapters ``jaxreg.linen`` and ``jaxreg.nnx``.

No mask logic lives here or in the layers (described in ``_flax_specs``): a layer
resolves ``deterministic`` and its key the host's way and calls its core op. ``draws``
decides, before any key is fetched, whether a call draws at all, so the rng stream is
consumed exactly as flax consumes it; the DropConnect layers route their arguments to
``drop_connect_dense`` or ``drop_connect_inference`` (``dense``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from jax import lax

from jaxreg import _dropconnect
from jaxreg._checks import check_choice, describe, errors_named, fail
from jaxreg._flax_specs import Spec


def draws(layer: str, spec: Spec, value: Any, deterministic: Any) -> bool:
    """Whether a layer call needs a key: not deterministic and a value that draws.

    Validates the leading hyperparameter (named after the layer) and ``deterministic``
    (a bool: a traced flag cannot choose between returning the input and drawing).
    """
    with errors_named(layer):
        need = spec.draws(spec.op.__name__, value)
    if not isinstance(deterministic, (bool, np.bool_)):
        raise fail(
            layer,
            f"deterministic must be a Python bool, got {deterministic!r} "
            f"(a {type(deterministic).__name__}). It decides whether a mask is drawn, so "
            "it cannot be traced; to vary the amount of dropout under jit or vmap, trace "
            f"the {spec.first} instead.",
            exc=TypeError,
        )
    return need and not bool(deterministic)


def missing_rng(layer: str, collection: str, how: str) -> Exception:
    """The error for a training-mode call that has no key: says what to pass."""
    return fail(
        layer,
        f"needs a PRNG key from the {collection!r} rng stream when deterministic is "
        f"False, and none was given. Pass {how}, or deterministic=True for inference.",
    )


def check_dense(layer: str, use_bias: Any, method: Any, activation: Any) -> bool:
    """Validates a DropConnect layer's ``use_bias`` and ``method``; True for moments."""
    if not isinstance(use_bias, (bool, np.bool_)):
        raise fail(
            layer,
            f"use_bias must be a bool, got {describe(use_bias)}. Only the sizes and the "
            "rate are positional: pass the others by keyword (use_bias=..., dtype=...).",
            exc=TypeError,
        )
    check_choice(layer, "method", method, ("scale", "moments"))
    if method == "moments" and activation is None:
        raise fail(
            layer,
            "activation must be set for method='moments', got None: moment matching "
            "averages activation(u) over Gaussian samples of the pre-activation u. Pass "
            "e.g. activation=jax.nn.relu (the layer then applies it in every mode).",
        )
    return method == "moments"


def _call(op: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """``op(*args, **options)`` with only the keywords ``op`` takes."""
    names = inspect.signature(op).parameters
    return op(*args, **{k: v for k, v in options.items() if k in names})


def dense(key: Any, x: Any, kernel: Any, bias: Any, *, deterministic: bool, **options: Any) -> Any:
    """The DropConnect dense layers: one core op per mode, then ``activation``.

    ``options`` are the layer's op arguments; each op gets those it takes. Training:
    ``drop_connect_dense``. Inference: the same op at rate 0 (the plain dense layer,
    exact for inverted masks) for ``method="scale"``, else ``drop_connect_inference``.
    ``jax.lax.dot_general`` (nnx.Linear's default) is passed to the core as None.
    """
    if options["dot_general"] is lax.dot_general:
        options["dot_general"] = None
    if deterministic and options["method"] == "moments":
        return _call(_dropconnect.drop_connect_inference, key, x, kernel, bias, **options)
    if deterministic:
        key, options = None, {**options, "rate": 0.0, "per_example": False}
    y = _call(_dropconnect.drop_connect_dense, key, x, kernel, bias, **options)
    return y if options["activation"] is None else options["activation"](y)


def arguments(layer: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> dict:
    """``signature.bind`` with defaults applied; a mismatch is a TypeError naming ``layer``."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise fail(layer, f"{err}; see help(jaxreg.{layer}).", exc=TypeError) from None
    bound.apply_defaults()
    return dict(bound.arguments)
