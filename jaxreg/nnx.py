"""Flax NNX layers over jaxreg's core ops: ``from jaxreg import nnx as jnnx``.

``jnnx.Dropout`` follows ``flax.nnx.Dropout``: ``rngs=nnx.Rngs(dropout=...)`` at
construction (the layer forks its own stream, as flax's does), an optional call-time
``rngs=`` (an ``nnx.Rngs``, an ``RngStream`` or a key) that takes precedence,
``deterministic`` at construction or call, ``model.train()`` / ``model.eval()`` and
``nnx.view(model, deterministic=...)``. For the same ``Rngs`` it returns exactly what
``nnx.Dropout`` returns, also in a model with several dropout layers. ``rate`` may be a
JAX array or an ``nnx.Variable`` holding a number or an array: it is then model state,
read at every call, traced under ``nnx.jit`` and ``nnx.vmap`` (an ensemble whose
members have different rates).

Every layer is derived from its core op (``_flax_specs.SPECS``): the leading
hyperparameter is positional, then the op's other keyword-only arguments (same names
and defaults), then ``deterministic``, ``rng_collection`` and ``rngs``;
``DropConnectLinear`` leads with ``nnx.Linear``'s arguments. Every layer is called as
``layer(inputs, *, deterministic=None, rngs=None)``; True returns ``inputs`` unchanged
(``DropConnectLinear``: its inference output). Importing this module imports flax;
``import jaxreg`` does not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

from flax import nnx

from jaxreg import _flax_common as common
from jaxreg import _flax_specs as specs
from jaxreg._checks import errors_named, fail
from jaxreg._types import Array

__all__ = ["AlphaDropout", "DropBlock", "DropConnectLinear", "DropPath", "Dropout",
           "GaussianDropout", "GaussianNoise", "SpatialDropout", "VariationalDropout"]  # fmt: skip

RngsLike = nnx.Rngs | nnx.RngStream | Array | None

_HOST: Sequence[specs.Field] = (
    ("deterministic", "bool | None", False, "if True, the layer is in inference mode "
     "(``inputs`` returned as they are); ``model.eval()`` sets it, ``model.train()`` "
     "clears it"),
    ("rng_collection", "str", "dropout", "the stream forked from ``rngs``"),
    ("rngs", "nnx.Rngs | nnx.RngStream | None", None, "``nnx.Rngs`` or ``nnx.RngStream`` "
     "the layer forks its stream from, or None (then pass ``rngs=`` at call time)"),
)  # fmt: skip
_NOT_STORED = ("rngs", "kernel_metadata", "bias_metadata")


class _Layer(nnx.Module):
    """The NNX plumbing of every derived layer: arguments, rng stream, key, one op call."""

    spec: ClassVar[specs.Spec]

    def _init(self, arguments: dict[str, Any]) -> None:
        rngs = arguments["rngs"]
        for name, value in arguments.items():
            if name not in _NOT_STORED:
                setattr(self, name, value)
        common.draws(self._name(), self.spec, self._read(self.spec.first), False)  # validates
        if isinstance(rngs, nnx.Rngs):
            self.rngs = self._stream(rngs).fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise fail(
                self._name(),
                f"rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}.",
                exc=TypeError,
            )

    def _name(self) -> str:
        return f"nnx.{type(self).__name__}"

    def _read(self, name: str) -> Any:
        """An argument's value; a Variable's (a number or an array) is read now."""
        value = getattr(self, name)
        return value.get_value() if isinstance(value, nnx.Variable) else value

    def _options(self) -> dict[str, Any]:
        return {p.name: self._read(p.name) for p in self.spec.parameters}

    def _missing(self) -> Exception:
        how = f"rngs=nnx.Rngs({self.rng_collection}=seed) to the layer or to the call"
        return common.missing_rng(self._name(), self.rng_collection, how)

    def _stream(self, rngs: nnx.Rngs) -> nnx.RngStream:
        """The layer's stream in ``rngs`` (``'default'`` if absent, as in flax)."""
        if self.rng_collection not in rngs and "default" not in rngs:
            raise self._missing()
        return rngs[self.rng_collection]

    def _key(self, deterministic: bool | None, rngs: RngsLike, draw_anyway: bool = False):
        """``(deterministic, key)``; a key is taken from a stream only if the call draws."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise fail(
                self._name(),
                "deterministic is None both in the layer and in the call. Pass "
                "deterministic=True/False to either, or use model.train() / model.eval() "
                "or nnx.view(model, deterministic=...).",
            )
        value = self._read(self.spec.first)
        if not common.draws(self._name(), self.spec, value, not draw_anyway and deterministic):
            return deterministic, None
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, nnx.Rngs):
            return deterministic, self._stream(rngs)()
        if isinstance(rngs, nnx.RngStream):
            return deterministic, rngs()
        if rngs is None:
            raise self._missing()
        return deterministic, rngs  # a key (the core validates it)

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer unless deterministic.

        Args:
          inputs: the array to regularize.
          deterministic: overrides the attribute for this call.
          rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key for this call, taking
            precedence over the layer's stream; used only when the call draws.
        """
        deterministic, key = self._key(deterministic, rngs)
        if deterministic:
            return inputs
        with errors_named(self._name()):
            return self.spec.op(key, inputs, **self._options())

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the layer is in inference mode.
        """
        if deterministic is not None:
            self.deterministic = deterministic


class _Linear(_Layer):
    """The plumbing of ``DropConnectLinear``: ``nnx.Linear``'s parameters, then the op."""

    def _init(self, arguments: dict[str, Any]) -> None:
        a, rngs = arguments, arguments["rngs"]
        shape = (a["in_features"], a["out_features"])
        kernel = a["kernel_init"](rngs.params(), shape, a["param_dtype"])
        self.kernel = nnx.Param(kernel, **a["kernel_metadata"])
        self.bias = nnx.data(None)
        if a["use_bias"]:
            bias = a["bias_init"](rngs.params(), shape[1:], a["param_dtype"])
            self.bias = nnx.Param(bias, **a["bias_metadata"])
        common.check_dense(self._name(), a["use_bias"], a["method"], a["activation"])
        super()._init(arguments)

    def __call__(self, inputs: Array, *, deterministic=None, rngs: RngsLike = None) -> Array:
        """Applies the layer: DropConnect in training, else its inference output.

        Args:
          inputs: ``(..., in_features)`` features.
          deterministic: overrides the attribute for this call.
          rngs: an ``nnx.Rngs``, ``nnx.RngStream`` or key for this call; used only
            when the call draws (``method="moments"``: also at inference).
        """
        bias = None if self.bias is None else self.bias[...]
        arrays = (inputs, self.kernel[...], bias)
        inputs, kernel, bias = self.promote_dtype(arrays, dtype=self.dtype)
        moments = common.check_dense(self._name(), self.use_bias, self.method, self.activation)
        deterministic, key = self._key(deterministic, rngs, draw_anyway=moments)
        options = self._options()
        if self.preferred_element_type is not None:
            pet = self.preferred_element_type
            options["dot_general"] = functools.partial(self.dot_general, preferred_element_type=pet)
        with errors_named(self._name()):
            return common.dense(key, inputs, kernel, bias, deterministic=deterministic, **options)


def _derive(spec: specs.Spec, base: type = _Layer, before=(), host=()) -> type[_Layer]:
    """An NNX layer class from ``spec``, its arguments taken from the op's signature.

    Positional: ``before`` and the op's leading argument; keyword-only: the op's other
    required arguments, ``host`` (overriding op or NNX arguments of the same name), the
    op's other arguments, then ``deterministic``, ``rng_collection`` and ``rngs``.
    """
    name = spec.nnx_name or spec.name
    first, *keywords = specs.layer_fields(spec, host, _HOST)
    positional = [*before, first]
    signature = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a)
         for n, a, _, _ in positional]
        + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
           for n, a, d, _ in keywords]
    )  # fmt: skip

    def init(self: _Layer, *args: Any, **kwargs: Any) -> None:
        self._init(common.arguments(f"nnx.{name}", signature, args, kwargs))

    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    init.__signature__ = signature.replace(parameters=[self_, *signature.parameters.values()])
    fields = [(n, d) for n, _, _, d in [*positional, *keywords]]
    note = " Also an ``nnx.Variable`` holding one (model state, read at every call)."
    doc = specs.layer_doc(spec, "Args:", fields, note)
    namespace = {"__init__": init, "__doc__": doc, "__module__": __name__}
    namespace.update({"__qualname__": name, "__signature__": signature, "spec": spec})
    return type(base)(name, (base,), namespace)


(AlphaDropout, DropBlock, DropPath, Dropout, GaussianDropout, GaussianNoise,
 SpatialDropout, VariationalDropout) = map(_derive, specs.dropout_like())  # fmt: skip
_before, _linear = specs.dense_fields(
    [(p.name, p.annotation, p.default)
     for p in inspect.signature(nnx.Linear.__init__).parameters.values()]
)  # fmt: skip
DropConnectLinear = _derive(specs.SPECS["DropConnectDense"], _Linear, _before, _linear)


from jaxreg._nnx_learned import ConcreteDropout, L0Linear, total_penalty  # noqa: E402, F401

__all__ = sorted([*__all__, "ConcreteDropout", "L0Linear", "total_penalty"])
