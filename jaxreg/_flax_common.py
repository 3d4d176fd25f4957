"""Plumbing shared by the Flax adapters ``jaxreg.linen`` and ``jaxreg.nnx``.

No mask logic lives here or in the layers: a layer resolves ``deterministic`` and its
key the host's way and calls one public core op. This module holds what both hosts
share: the decision whether a call draws at all (asked before any key is fetched, so
the rng stream is consumed exactly as flax consumes it), core errors renamed after the
layer, and the missing-rng message.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from jax import lax

from jaxreg._checks import check_choice, fail
from jaxreg._dropconnect import drop_connect_dense, drop_connect_inference
from jaxreg._rate import needs_key

_CORE_PREFIX = re.compile(r"^jaxreg\.[\w.]+: ")


@contextlib.contextmanager
def named_errors(layer: str) -> Iterator[None]:
    """Re-raises a core error ``jaxreg.<op>: ...`` as ``jaxreg.<layer>: ...``.

    ``layer`` is the adapter's name for itself, e.g. ``"linen.Dropout"``. Errors that
    do not come from jaxreg (flax's, the user's) pass through unchanged.
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        message = str(err)
        match = _CORE_PREFIX.match(message)
        if match is None or message.startswith(f"jaxreg.{layer}: "):
            raise
        raise type(err)(f"jaxreg.{layer}: {message[match.end() :]}") from None


def draws(layer: str, rate: Any, deterministic: Any) -> bool:
    """Whether a layer call needs a key: not deterministic and a rate that draws.

    Validates ``rate`` (named after the layer) and ``deterministic`` (a bool: a traced
    flag cannot choose between returning the input and drawing a mask).
    """
    with named_errors(layer):
        need = needs_key(rate)
    if not isinstance(deterministic, (bool, np.bool_)):
        raise fail(
            layer,
            f"deterministic must be a Python bool, got {deterministic!r} "
            f"(a {type(deterministic).__name__}). It decides whether a mask is drawn, so "
            "it cannot be traced; to vary the amount of dropout under jit or vmap, trace "
            "the rate instead.",
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


INFERENCE = ("scale", "moments")


def check_inference(layer: str, inference: Any, activation: Any) -> bool:
    """Validates a DropConnect layer's inference mode; True for moment matching."""
    check_choice(layer, "inference", inference, INFERENCE)
    moments = inference == "moments"
    if moments and activation is None:
        raise fail(
            layer,
            "activation must be set for inference='moments', got None: moment matching "
            "averages activation(u) over Gaussian samples of the pre-activation u. Pass "
            "e.g. activation=jax.nn.relu (the layer then applies it in every mode).",
        )
    return moments


def dense(
    key: Any,
    x: Any,
    kernel: Any,
    bias: Any,
    *,
    rate: Any,
    deterministic: bool,
    moments: bool,
    activation: Callable[[Any], Any] | None,
    num_samples: int,
    per_example: bool,
    precision: Any,
    dot_general: Any,
) -> Any:
    """The DropConnect dense layers: one core op per mode, then ``activation``.

    Training: ``drop_connect_dense``. Inference: the same op at rate 0 (the plain
    dense layer, exact for inverted masks), or ``drop_connect_inference``.
    ``jax.lax.dot_general`` (nnx.Linear's default) is passed to the core as None.
    """
    matmul = {
        "precision": precision,
        "dot_general": None if dot_general is lax.dot_general else dot_general,
    }
    if deterministic and moments:
        return drop_connect_inference(
            key,
            x,
            kernel,
            bias,
            rate=rate,
            activation=activation,
            num_samples=num_samples,
            **matmul,
        )
    if deterministic:
        y = drop_connect_dense(None, x, kernel, bias, rate=0.0, **matmul)
    else:
        y = drop_connect_dense(key, x, kernel, bias, rate=rate, per_example=per_example, **matmul)
    return y if activation is None else activation(y)
