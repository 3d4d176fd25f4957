"""Flax linen layers over jaxreg's core ops: ``from jaxreg import linen as jnn``.

``jnn.Dropout`` has ``flax.linen.Dropout``'s constructor and call signature and returns
exactly what it returns for the same ``rngs``, also inside a model with several dropout
layers (the rng stream is consumed call for call as flax does: nothing is drawn when
deterministic or at a Python rate of 0 or 1). Unlike flax's, ``rate`` may be a JAX
array, so a model's ``apply`` vmapped over rates is one compiled program.

Every layer is derived from its core op (``_flax_specs.SPECS``): its fields are the
op's keyword-only arguments, same names and defaults, then ``deterministic`` and
``rng_collection``; ``DropConnectDense`` leads with ``nn.Dense``'s fields. Every layer
is called as ``layer(inputs, deterministic=None, rng=None)``: ``deterministic``
overrides the attribute (``nn.merge_param``: exactly one of the two is set) and True
returns ``inputs`` unchanged (``DropConnectDense``: its inference output); ``rng`` is
an optional key, by default ``make_rng(rng_collection)``. Importing this module imports
flax; ``import jaxreg`` does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxreg import _flax_common as common
from jaxreg import _flax_specs as specs
from jaxreg._checks import errors_named
from jaxreg._types import Array

__all__ = ["AlphaDropout", "DropBlock", "DropConnectDense", "DropPath", "Dropout",
           "GaussianDropout", "GaussianNoise", "SpatialDropout", "VariationalDropout"]  # fmt: skip


_HOST: Sequence[specs.Field] = (
    ("deterministic", "bool | None", None, "if True, the layer returns ``inputs`` as they "
     "are (DropConnect: its inference output); or pass it to the call"),
    ("rng_collection", "str", "dropout", "the rng stream the key comes from"),
)  # fmt: skip


class _Layer(nn.Module):
    """The linen plumbing of every derived layer: ``deterministic``, key, one op call."""

    spec: ClassVar[specs.Spec]

    def _name(self) -> str:
        return f"linen.{type(self).__name__}"

    def _options(self) -> dict[str, Any]:
        return {p.name: getattr(self, p.name) for p in self.spec.parameters}

    def _key(self, deterministic: bool | None, rng: Any, draw_anyway: bool = False):
        """``(deterministic, key)``; the key is None where nothing is drawn.

        ``deterministic`` is merged flax's way; ``make_rng`` is called only when the
        layer draws (or ``draw_anyway``, for a sampled inference), so later layers get
        the keys they get under flax.
        """
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        value = getattr(self, self.spec.first)
        if not common.draws(self._name(), self.spec, value, not draw_anyway and deterministic):
            return deterministic, None
        if rng is not None:
            return deterministic, rng
        collection = self.rng_collection
        if not (self.has_rng(collection) or self.has_rng("params")):
            how = f"rngs={{{collection!r}: key}} to apply (or init)"
            raise common.missing_rng(self._name(), collection, how)
        return deterministic, self.make_rng(collection)

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer unless deterministic.

        Args:
          inputs: the array to regularize.
          deterministic: overrides the attribute (exactly one of the two is set).
          rng: an optional PRNG key; by default ``make_rng(rng_collection)``, asked
            for only when the call draws.
        """
        deterministic, key = self._key(deterministic, rng)
        if deterministic:
            return inputs
        with errors_named(self._name()):
            return self.spec.op(key, inputs, **self._options())


class _Dense(_Layer):
    """The plumbing of ``DropConnectDense``: ``nn.Dense``'s parameters, then the op."""

    def __post_init__(self) -> None:
        super().__post_init__()
        common.check_dense(self._name(), self.use_bias, self.method, self.activation)

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool | None = None, rng: Any = None):
        """Applies the layer: DropConnect in training, else its inference output.

        Args:
          inputs: ``(..., in)`` features.
          deterministic: overrides the attribute (exactly one of the two is set).
          rng: an optional PRNG key; by default ``make_rng(rng_collection)``, asked
            for only when the call draws (``method="moments"``: also at inference).
        """
        shape = (jnp.shape(inputs)[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        moments = self.method == "moments"
        deterministic, key = self._key(deterministic, rng, draw_anyway=moments)
        options = self._options()
        if self.dot_general_cls is not None:
            options["dot_general"] = self.dot_general_cls()
        with errors_named(self._name()):
            return common.dense(key, inputs, kernel, bias, deterministic=deterministic, **options)


def _derive(spec: specs.Spec, base: type = _Layer, before=(), host=()) -> type[_Layer]:
    """A linen layer class from ``spec``, its fields taken from the op's signature.

    Fields: ``before``, the op's required arguments, ``host`` (overriding op arguments
    of the same name), the op's other arguments, ``deterministic``, ``rng_collection``.
    """
    fields = [*before, *specs.layer_fields(spec, host, _HOST)]
    doc = specs.layer_doc(spec, "Attributes:", [(n, d) for n, _, _, d in fields])
    namespace: dict[str, Any] = {
        "__annotations__": {n: a for n, a, _, _ in fields},
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": spec.name,
        "spec": spec,
    }
    namespace.update({n: d for n, _, d, _ in fields if d is not specs.REQUIRED})
    return type(base)(spec.name, (base,), namespace)


(AlphaDropout, DropBlock, DropPath, Dropout, GaussianDropout, GaussianNoise,
 SpatialDropout, VariationalDropout) = map(_derive, specs.dropout_like())  # fmt: skip
_MISSING = dataclasses.MISSING
_before, _dense = specs.dense_fields(
    [(f.name, f.type, specs.REQUIRED if f.default is _MISSING else f.default)
     for f in dataclasses.fields(nn.Dense)]
)  # fmt: skip
DropConnectDense = _derive(specs.SPECS["DropConnectDense"], _Dense, _before, _dense)


from jaxreg._linen_learned import ConcreteDropout, L0Dense  # noqa: E402, F401

__all__ = sorted([*__all__, "ConcreteDropout", "L0Dense"])
