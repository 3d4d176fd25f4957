"""Every Flax layer takes every keyword-only argument of its core op, same name and default.

The op-layer pairs are written out here, not read from ``_flax_specs.SPECS``, so a
layer that leaves the description, or a description that stops matching its op, fails.
"""

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxreg
from jaxreg import _flax_specs as specs
from jaxreg import linen as jnn
from jaxreg import nnx as jnnx

REQUIRED = inspect.Parameter.empty
OMIT = specs.OMITTED

# (linen name, nnx name, core ops, where the layer knowingly differs from the ops)
PAIRS = [
    ("Dropout", "Dropout", [jaxreg.dropout], {}),
    ("SpatialDropout", "SpatialDropout", [jaxreg.spatial_dropout], {}),
    ("VariationalDropout", "VariationalDropout", [jaxreg.variational_dropout], {}),
    ("GaussianDropout", "GaussianDropout", [jaxreg.gaussian_dropout], {}),
    ("AlphaDropout", "AlphaDropout", [jaxreg.alpha_dropout], {}),
    ("DropPath", "DropPath", [jaxreg.drop_path], {}),
    ("DropBlock", "DropBlock", [jaxreg.drop_block], {}),
    ("GaussianNoise", "GaussianNoise", [jaxreg.gaussian_noise], {}),
    (
        "DropConnectDense",
        "DropConnectLinear",
        [jaxreg.drop_connect_dense, jaxreg.drop_connect_inference],
        {"activation": None, "method": "scale", "inverted": OMIT},
    ),
]
# The host's conventions, and the flax layer whose arguments (and defaults) a layer keeps.
CONVENTIONS = {
    "linen": {"deterministic": None, "rng_collection": "dropout"},
    "nnx": {"deterministic": False, "rng_collection": "dropout", "rngs": None},
}
TWINS = {
    "linen": {"Dropout": nn.Dropout, "DropConnectDense": nn.Dense},
    "nnx": {"Dropout": nnx.Dropout, "DropConnectLinear": nnx.Linear},
}


def linen_arguments(cls):
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    return {f.name: REQUIRED if f.default is dataclasses.MISSING else f.default for f in fields}


def nnx_arguments(cls):
    init = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in init if p.name != "self"}


ARGUMENTS = {"linen": linen_arguments, "nnx": nnx_arguments}


def mismatches(host, layer, ops, differences):
    """How ``layer``'s arguments differ from its ops', conventions and flax twin."""
    want = {}
    for op in ops:
        for p in inspect.signature(op).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                want.setdefault(p.name, p.default)
    for name, default in differences.items():
        assert want[name] != default, f"{name}: not a difference, remove it"
        want.pop(name) if default is OMIT else want.update({name: default})
    want.update(CONVENTIONS[host])
    twin = TWINS[host].get(layer.__name__)
    if twin is not None:  # flax's arguments and defaults win (checkpoints, habits)
        want.update(ARGUMENTS[host](twin))
    got = ARGUMENTS[host](layer)
    problems = [f"missing {n}" for n in want.keys() - got.keys()]
    problems += [f"extra {n}" for n in got.keys() - want.keys()]
    problems += [
        f"{n}: default {got[n]!r}, want {want[n]!r}"
        for n in want.keys() & got.keys()
        if not (got[n] is want[n] or got[n] == want[n])
    ]
    return sorted(problems)


@pytest.mark.parametrize("host", ["linen", "nnx"])
@pytest.mark.parametrize("pair", PAIRS, ids=[p[0] for p in PAIRS])
def test_layer_takes_every_op_argument_with_the_same_default(host, pair):
    linen_name, nnx_name, ops, differences = pair
    module, name = (jnn, linen_name) if host == "linen" else (jnnx, nnx_name)
    layer = getattr(module, name)
    assert mismatches(host, layer, ops, differences) == []
    spec = layer.spec
    assert spec.ops == tuple(ops)
    assert {n: d for n, (d, _) in spec.differences.items()} == differences
    assert all(reason for _, reason in spec.differences.values())
    # The leading hyperparameter has no default and comes right after flax's sizes.
    params = inspect.signature(ops[0]).parameters.values()
    first = next(p.name for p in params if p.kind is p.KEYWORD_ONLY)
    positional = list(ARGUMENTS[host](layer))
    sizes = {"DropConnectDense": 1, "DropConnectLinear": 2}.get(name, 0)
    assert positional[sizes] == first and ARGUMENTS[host](layer)[first] is REQUIRED
    doc = inspect.getdoc(layer)
    for argument in ARGUMENTS[host](layer):  # every argument is documented
        assert f"\n  {argument}: " in doc, (name, argument)


# Layers that own parameters (learned rates, L0 gates): written by hand, not derived
# from an op, so they are checked host against host: (linen, nnx, host-only names).
LEARNED = [
    ("ConcreteDropout", "ConcreteDropout", {"loss_collection"}, {"rngs"}),
    (
        "L0Dense",
        "L0Linear",
        {"features", "loss_collection"},
        {"in_features", "out_features", "rngs"},
    ),
]
HELPERS = {"linen": set(), "nnx": {"total_penalty"}}  # nnx sums what linen collects in "losses"


def test_every_public_layer_is_paired():
    assert sorted([p[0] for p in PAIRS + LEARNED] + [*HELPERS["linen"]]) == jnn.__all__
    assert sorted([p[1] for p in PAIRS + LEARNED] + [*HELPERS["nnx"]]) == jnnx.__all__


@pytest.mark.parametrize("pair", LEARNED, ids=[p[0] for p in LEARNED])
def test_learned_layers_agree_across_hosts(pair):
    linen_name, nnx_name, linen_only, nnx_only = pair
    got = {"linen": linen_arguments(getattr(jnn, linen_name))}
    got["nnx"] = nnx_arguments(getattr(jnnx, nnx_name))
    for host, only in (("linen", linen_only), ("nnx", nnx_only)):
        for name in only:
            got[host].pop(name)
        got[host].pop("deterministic")  # None (linen) / False (nnx): the hosts' habits
    inits = ("kernel_init", "bias_init", "log_alpha_init")
    for name in inits:  # initializers are closures: compare what they draw
        if name in got["linen"]:
            draw = [got[h].pop(name)(jax.random.key(0), (3, 4)) for h in ("linen", "nnx")]
            np.testing.assert_array_equal(*draw)
    assert got["linen"] == got["nnx"]


def test_the_check_rejects_a_layer_that_forgot_an_argument():
    """Negative control: GaussianDropout checked against dropout lacks its arguments."""
    for host, module in (("linen", jnn), ("nnx", jnnx)):
        problems = mismatches(host, module.GaussianDropout, [jaxreg.dropout], {})
        missing = ["broadcast_dims", "inverted", "noise_shape", "sampler"]
        assert problems == [f"missing {n}" for n in missing], host


def test_a_new_op_argument_reaches_both_hosts_without_an_edit():
    def op(key, x, *, rate, new_knob=3, mode="a"):
        """A core op with an argument no layer knows.

        Args:
          key: a PRNG key.
          x: input.
          rate: drop probability.
          new_knob: something new.
          mode: another.

        References:
          None.
        """
        return jaxreg.dropout(key, x, rate=rate) * new_knob

    spec = specs.Spec("Knob", (op,), "A layer over a new op.")
    layers = {"linen": jnn._derive(spec), "nnx": jnnx._derive(spec)}
    for host, layer in layers.items():
        assert mismatches(host, layer, [op], {}) == [], host
        assert "new_knob: something new." in inspect.getdoc(layer)
    x = jnp.ones((4, 8))
    want = op(jax.random.key(0), x, rate=0.5, new_knob=2)
    got = layers["linen"](0.5, new_knob=2).apply({}, x, deterministic=False, rng=jax.random.key(0))
    np.testing.assert_array_equal(got, want)
    got = layers["nnx"](0.5, new_knob=2)(x, rngs=jax.random.key(0))
    np.testing.assert_array_equal(got, want)


X4 = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
REQUIRED_ARGS = {"DropBlock": {"block_size": 3}}


@pytest.mark.parametrize("host", ["linen", "nnx"])
@pytest.mark.parametrize("value", [0.4, np.float32(0.4), jnp.float32(0.4)], ids=str)
def test_every_layer_is_its_op_for_python_and_array_values(host, value):
    """One op call per layer: the same output as the op for the same key and arguments."""
    for name, _, ops, _ in PAIRS[:-1]:
        op, kwargs = ops[0], REQUIRED_ARGS.get(name, {})
        first = "stddev" if name == "GaussianNoise" else "rate"
        want = op(jax.random.key(3), X4, **{first: value}, **kwargs)
        if host == "linen":
            layer = getattr(jnn, name)(value, **kwargs)
            got = layer.apply({}, X4, deterministic=False, rng=jax.random.key(3))
        else:
            got = getattr(jnnx, name)(value, **kwargs)(X4, rngs=jax.random.key(3))
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.dtype == X4.dtype and not np.array_equal(got, X4), name
