"""The one description of the Flax layers, and the plumbing both hosts share.

Every layer of ``jaxreg.linen`` and ``jaxreg.nnx`` is derived from a ``Spec`` below: a
name, the public core op(s) it calls and a summary line. Its fields (linen) or
constructor arguments (NNX) are the op's keyword-only arguments, read from the op's
signature with the same names and defaults, and documented with the op's own ``Args``
lines, so an argument added to an op appears in both hosts' layers without an edit.
Each host adds its conventions (``deterministic``, ``rng_collection``, NNX's ``rngs``);
``differences`` lists, with its reason, every place a layer knowingly departs from
its op. No mask logic lives here: a layer resolves ``deterministic`` and its key the
host's way and calls the op (``draws`` decides, before any key is fetched, whether a
call draws at all, so the rng stream is consumed exactly as flax consumes it).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from jax import lax

from jaxreg import _dropblock, _dropconnect, _dropout, _droppath, _noise
from jaxreg._checks import (
    check_bool,
    check_choice,
    check_scalar_nonnegative,
    errors_named,
    fail,
)
from jaxreg._rate import needs_key

REQUIRED = inspect.Parameter.empty
OMITTED = object()  # a ``differences`` default: the layer does not take the argument


def _stddev_draws(stddev: Any) -> bool:
    """``needs_key`` for ``gaussian_noise``: only a Python stddev of 0 draws nothing."""
    stddev = check_scalar_nonnegative("gaussian_noise", "stddev", stddev, finite=True)
    return not (isinstance(stddev, float) and stddev == 0.0)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One layer, described once for both hosts.

    Attributes:
      name: the class name (in both hosts unless ``nnx_name`` is given).
      ops: the public core ops the layer calls; the layer takes the union of their
        keyword-only arguments (the first op's first one, e.g. ``rate``, leads).
      summary: the first line of the layer's docstring.
      draws: whether a value of the leading argument draws random numbers.
      differences: argument -> (the layer's default, or ``OMITTED``; the reason).
      nnx_name: the NNX class name where flax's differs (``Dense`` / ``Linear``).
    """

    name: str
    ops: tuple[Callable[..., Any], ...]
    summary: str
    draws: Callable[[Any], bool] = needs_key
    differences: Mapping[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)
    nnx_name: str | None = None

    @property
    def op(self) -> Callable[..., Any]:
        return self.ops[0]

    @functools.cached_property
    def parameters(self) -> list[inspect.Parameter]:
        """The layer's op arguments: required ones first, each in the ops' order."""
        found: dict[str, inspect.Parameter] = {}
        for op in self.ops:
            for p in inspect.signature(op).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.name not in found:
                    default, _ = self.differences.get(p.name, (p.default, ""))
                    if default is not OMITTED:
                        found[p.name] = p.replace(default=default)
        params = list(found.values())
        return [p for p in params if p.default is REQUIRED] + [
            p for p in params if p.default is not REQUIRED
        ]

    @property
    def first(self) -> str:
        """The leading hyperparameter: ``rate``, or ``stddev`` for ``GaussianNoise``."""
        return self.parameters[0].name


_DROP_CONNECT = {
    "activation": (
        None,
        "optional here: applied to the output in every mode; required only for "
        "method='moments', which averages it over samples",
    ),
    "method": (
        "scale",
        "the layer's default is the plain dense layer at inference (exact for the "
        "inverted masks it trains with); the op exists for the paper's 'moments'",
    ),
    "inverted": (OMITTED, "the layer trains inverted masks (drop_connect_dense) only"),
}

SPECS = {
    s.name: s
    for s in (
        Spec("Dropout", (_dropout.dropout,), "Dropout as flax's, same masks; rate may be traced."),
        Spec("SpatialDropout", (_dropout.spatial_dropout,), "Drops whole feature maps."),
        Spec(
            "VariationalDropout",
            (_dropout.variational_dropout,),
            "One dropout mask per sequence, shared over time.",
        ),
        Spec(
            "GaussianDropout",
            (_noise.gaussian_dropout,),
            "Multiplicative N(1, rate / (1 - rate)) noise.",
        ),
        Spec(
            "AlphaDropout",
            (_noise.alpha_dropout,),
            "Dropout for SELU networks, keeping zero mean and unit variance.",
        ),
        Spec(
            "DropPath",
            (_droppath.drop_path,),
            "Stochastic depth: use it on a residual branch, ``x + DropPath(r)(f(x))``.",
        ),
        Spec("DropBlock", (_dropblock.drop_block,), "Drops contiguous blocks of feature maps."),
        Spec(
            "GaussianNoise",
            (_noise.gaussian_noise,),
            "Additive zero-mean Gaussian noise (Keras ``GaussianNoise``).",
            draws=_stddev_draws,
        ),
        Spec(
            "DropConnectDense",
            (_dropconnect.drop_connect_dense, _dropconnect.drop_connect_inference),
            "A dense layer with DropConnect on its kernel, parameters as flax's.",
            differences=_DROP_CONNECT,
            nnx_name="DropConnectLinear",
        ),
    )
}


def _sections(op: Callable[..., Any]) -> tuple[dict[str, str], list[str]]:
    """An op's ``Args`` entries (name -> one-line text) and its ``References`` lines."""
    args: dict[str, str] = {}
    refs: list[str] = []
    section, name = "", ""
    for line in (inspect.getdoc(op) or "").splitlines():
        if line and not line.startswith(" "):
            section = line.strip()
        elif section == "Args:" and line.startswith("    "):
            args[name] += " " + line.strip()
        elif section == "Args:" and line.strip():
            name, _, text = line.strip().partition(": ")
            args[name] = text
        elif section == "References:" and line.strip():
            refs.append(line[2:])
    return args, refs


def _entry(name: str, text: str) -> str:
    text = text if text.endswith(".") else text + "."
    return textwrap.fill(f"{name}: {text}", 86, initial_indent="  ", subsequent_indent="    ")


def layer_doc(
    spec: Spec, intro: str, header: str, fields: Sequence[tuple[str, str]], rate_note: str = ""
) -> str:
    """A layer's docstring, with its ``Args`` (or ``Attributes``) from the op's.

    The spec's summary, ``intro``, the ``fields`` under ``header`` (``(name, text)``;
    an empty text takes the op's own ``Args`` line and the reason of a difference),
    then the op's references. ``rate_note`` is appended to the leading argument.
    """
    texts: dict[str, str] = {}
    refs: list[str] = []
    for op in reversed(spec.ops):
        args, op_refs = _sections(op)
        texts.update(args)
        refs = op_refs or refs
    defaults = {p.name: p.default for p in spec.parameters}
    lines = [spec.summary, "", intro, "", header]
    for name, text in fields:
        if not text:
            text = texts[name]
            if name in spec.differences:
                text += f" Layer default {defaults[name]!r}: {spec.differences[name][1]}."
        if name == spec.first:
            text += rate_note
        lines.append(_entry(name, text))
    return "\n".join([*lines, "", "References:", *(f"  {r}" for r in refs)]) + "\n"


def draws(layer: str, spec: Spec, value: Any, deterministic: Any) -> bool:
    """Whether a layer call needs a key: not deterministic and a value that draws.

    Validates the leading hyperparameter (named after the layer) and ``deterministic``
    (a bool: a traced flag cannot choose between returning the input and drawing).
    """
    with errors_named(layer):
        need = spec.draws(value)
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
    check_bool(layer, "use_bias", use_bias)
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
