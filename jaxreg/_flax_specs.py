"""The one description of the Flax layers: a ``Spec`` per layer, and its docstring.

Every layer of ``jaxreg.linen`` and ``jaxreg.nnx`` is derived from a ``Spec`` in
``SPECS``: a name, the public core op(s) it calls and a summary line. Its fields
(linen) or constructor arguments (NNX) are the op's keyword-only arguments, read from
the op's signature with the same names and defaults, and documented with the op's own
``Args`` lines, so an argument added to an op appears in both hosts' layers without an
edit. Each host adds its conventions (``deterministic``, ``rng_collection``, NNX's
``rngs``); ``differences`` lists, with its reason, every place a layer knowingly
departs from its op. The hosts' plumbing is in ``_flax_common``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxreg import _dropblock, _dropconnect, _dropout, _droppath, _noise
from jaxreg._checks import check_probability, check_scalar_nonnegative
from jaxreg._rate import decided

REQUIRED = inspect.Parameter.empty
Field = tuple[str, Any, Any, str]  # name, annotation, default (or REQUIRED), doc line
OMITTED = object()  # a ``differences`` default: the layer does not take the argument


def _rate_draws(fn: str, rate: Any) -> bool:
    """``jaxreg.needs_key``, validating ``rate`` under the op's name ``fn``."""
    return not decided(check_probability(fn, "rate", rate))


def _stddev_draws(fn: str, stddev: Any) -> bool:
    """``needs_key`` for ``gaussian_noise``: only a Python stddev of 0 draws nothing."""
    stddev = check_scalar_nonnegative(fn, "stddev", stddev, finite=True)
    return not (isinstance(stddev, float) and stddev == 0.0)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One layer, described once for both hosts.

    Attributes:
      name: the class name (in both hosts unless ``nnx_name`` is given).
      ops: the public core ops the layer calls; the layer takes the union of their
        keyword-only arguments (the first op's first one, e.g. ``rate``, leads).
      summary: the first line of the layer's docstring.
      draws: ``draws(op_name, value)``: whether a value of the leading argument draws
        random numbers (validating it).
      differences: argument -> (the layer's default, or ``OMITTED``; the reason).
      nnx_name: the NNX class name where flax's differs (``Dense`` / ``Linear``).
      note: a paragraph of the docstring after the summary, if any.
    """

    name: str
    ops: tuple[Callable[..., Any], ...]
    summary: str
    draws: Callable[[str, Any], bool] = _rate_draws
    differences: Mapping[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)
    nnx_name: str | None = None
    note: str = ""

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
        "optional: the layer applies it to its output in every mode; required only "
        "for method='moments'",
    ),
    "method": (
        "scale",
        "the plain dense layer at inference, exact for the inverted masks it trains "
        "with; 'moments' evaluates activation num_samples times per unit",
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
            "Stochastic depth: drops a residual branch per example or per batch.",
            note="Use it on the branch: ``x + drop_path_layer(branch(x))``.",
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
            "A dense layer with DropConnect on its kernel.",
            differences=_DROP_CONNECT,
            nnx_name="DropConnectLinear",
            note="Same arguments, parameters (``kernel``, ``bias``), shapes and "
            "initialisers as flax's dense layer (``nn.Dense``, ``nnx.Linear``), so its "
            "checkpoints load (linen names modules after their class: pass "
            '``name="Dense_0"`` to reuse an auto-named one). Deterministic, it is that '
            'dense layer (``method="scale"``) or the paper\'s Gaussian moment matching '
            '(``method="moments"``), which averages ``activation`` over samples and so '
            "needs ``activation`` and a key.",
        ),
    )
}


# nn.Dense's and nnx.Linear's arguments that the DropConnect layers take, in flax's
# order and with flax's defaults (read from flax by each host). A flax argument not
# listed here is not taken; the parity test names any that flax adds.
DENSE_ARGS = {
    "features": "number of output features",
    "in_features": "number of input features",
    "out_features": "number of output features",
    "use_bias": "whether to add a bias (never dropped); a bool",
    "dtype": "computation dtype (default: inferred from inputs and params)",
    "param_dtype": "dtype of the parameters",
    "precision": "matmul precision (``jax.lax.Precision``)",
    "kernel_init": "kernel initializer",
    "bias_init": "bias initializer",
    "promote_dtype": "flax's dtype promotion of inputs, kernel and bias",
    "dot_general": "``jax.lax.dot_general`` or a replacement (None: ``jnp.matmul``); "
    "with shared masks only (``per_example=False``)",
    "dot_general_cls": "builds ``dot_general`` at each call (shared masks only)",
    "preferred_element_type": "passed to ``dot_general`` (shared masks only)",
    "rngs": "``nnx.Rngs`` with a ``params`` (or ``default``) stream for the "
    "initialisers and a ``dropout`` (or ``default``) stream the layer forks for the masks",
    "kernel_metadata": "metadata of the kernel ``nnx.Param``",
    "bias_metadata": "metadata of the bias ``nnx.Param``",
}
POSITIONAL = ("features", "in_features", "out_features")


def dense_fields(params: Sequence[tuple[str, Any, Any]]) -> tuple[list[Field], list[Field]]:
    """``(before, host)`` field lists from flax's ``(name, annotation, default)``."""
    fields = [(n, a, d, DENSE_ARGS[n]) for n, a, d in params if n in DENSE_ARGS]
    return [f for f in fields if f[0] in POSITIONAL], [f for f in fields if f[0] not in POSITIONAL]


def layer_fields(spec: Spec, host: Sequence[Field], conventions: Sequence[Field]) -> list:
    """A layer's fields after any leading host ones (``features``), in order.

    The op's required arguments (the leading hyperparameter first), ``host`` (flax's
    dense arguments, overriding op arguments and ``conventions`` of the same name),
    the op's other arguments, then the host's ``conventions`` (``deterministic``...).
    """
    named = {f[0] for f in host}
    ops = [(p.name, p.annotation, p.default, "") for p in spec.parameters]
    required = [f for f in ops if f[2] is REQUIRED]
    rest = [f for f in ops if f[2] is not REQUIRED and f[0] not in named]
    return [*required, *host, *rest, *(f for f in conventions if f[0] not in named)]


def dropout_like() -> list[Spec]:
    """The specs of the layers that take ``inputs`` only, in ``__all__`` order."""
    return [s for n, s in sorted(SPECS.items()) if n != "DropConnectDense"]


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
    spec: Spec, header: str, fields: Sequence[tuple[str, str]], rate_note: str = ""
) -> str:
    """A layer's docstring, with its ``Args`` (or ``Attributes``) from the op's.

    The spec's summary and note, the ops it calls, the ``fields`` under ``header``
    (``(name, text)``; an empty text takes the op's own ``Args`` line and the reason
    of a difference), then the op's references. ``rate_note`` is appended to the
    leading argument's line.
    """
    texts: dict[str, str] = {}
    refs: list[str] = []
    for op in reversed(spec.ops):
        args, op_refs = _sections(op)
        texts.update(args)
        refs = op_refs or refs
    defaults = {p.name: p.default for p in spec.parameters}
    ops = " or ".join(f"``jaxreg.{op.__name__}``" for op in spec.ops)
    intro = f"Calls {ops}: the same output for the same key and arguments."
    lines = [spec.summary, "", *textwrap.wrap(f"{spec.note} {intro}".strip(), 88), "", header]
    for name, text in fields:
        if not text:
            text = texts[name]
            if name in spec.differences:
                text += f" The layer's default is {defaults[name]!r} ({spec.differences[name][1]})."
        if name == spec.first:
            text += rate_note
        lines.append(_entry(name, text))
    return "\n".join([*lines, "", "References:", *(f"  {r}" for r in refs)]) + "\n"
