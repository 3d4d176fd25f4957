"""Generic semantics that every stochastic op in ops.OPS must hold."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from ops import OPS
from stats import assert_binomial

ids = [op.name for op in OPS]
params = pytest.mark.parametrize("op", OPS, ids=ids)
# Promises about a rate in [0, 1] (rate 1 gives zeros, rates above 1 are errors): not
# for ops whose hyperparameter is a stddev (see Op.hyper).
rate_params = pytest.mark.parametrize("op", [op for op in OPS if op.hyper == "rate"], ids=str)


def _x(op, seed=1, dtype=jnp.float32):
    # Strictly positive inputs: an output of 0 then means "dropped".
    return jax.random.uniform(jax.random.key(seed), op.shape, jnp.float32, 0.5, 2.0).astype(dtype)


def assert_same(op, a, b):
    """Bitwise equal for mask ops; for Gaussian/alpha noise, equal to float rounding.

    The noise itself is bit-identical (test_bits.py); XLA may fuse the arithmetic that
    applies it differently inside and outside jit (jax.random.normal behaves the same).
    """
    if op.kind == "affine":
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(a, b)


@params
def test_same_key_same_output_jit_or_not(op):
    x = _x(op)
    k1, k2, k3 = jax.random.key(7), jax.random.key(7), jax.random.key(7)
    eager = op.call(k1, x, 0.4)
    again = op.call(k2, x, 0.4)
    jitted = jax.jit(op.call, static_argnums=2)(k3, x, 0.4)
    np.testing.assert_array_equal(eager, again)
    assert_same(op, eager, jitted)
    assert eager.shape == x.shape and eager.dtype == x.dtype


@params
def test_different_keys_different_outputs(op):
    x = _x(op)
    outs = [op.call(jax.random.key(s), x, 0.5) for s in range(8)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


@params
def test_vmap_over_keys_equals_loop(op):
    x = _x(op)
    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.vmap(lambda k: op.call(k, x, 0.3))(keys)
    loop = jnp.stack([op.call(k, x, 0.3) for k in jax.random.split(jax.random.key(3), 4)])
    assert_same(op, batched, loop)


@params
def test_vmap_over_rate_equals_loop(op):
    x = _x(op)
    rates = jnp.array([0.0, 0.2, 0.5, 0.9, 1.0], jnp.float32)
    batched = jax.jit(jax.vmap(lambda r: op.call(jax.random.key(4), x, r)))(rates)
    for i, r in enumerate(rates):
        single = jax.jit(op.call)(jax.random.key(4), x, r)
        assert_same(op, batched[i], single)


@params
def test_traced_rate_matches_python_rate(op):
    """Equal for rates exact in float32. Otherwise the keep probability 1 - rate is
    resolved in float64 then rounded (Python rate, as flax) or in float32 (array rate,
    as jax.random.bernoulli with an array): test_mask.py pins both."""
    x = _x(op)
    for rate in (0.25, 0.5):
        python = op.call(jax.random.key(5), x, rate)
        traced = jax.jit(op.call)(jax.random.key(5), x, jnp.float32(rate))
        assert_same(op, python, traced)


@params
def test_no_retrace_when_key_or_traced_rate_changes(op):
    traces = []

    @jax.jit
    def f(key, x, rate):
        traces.append(None)
        return op.call(key, x, rate)

    x = _x(op)
    for seed, rate in [(0, 0.1), (1, 0.1), (2, 0.7), (3, 0.0)]:
        f(jax.random.key(seed), x, jnp.float32(rate))
    assert len(traces) == 1


@params
def test_legacy_and_typed_keys_agree(op):
    x = _x(op)
    legacy = op.call(jax.random.PRNGKey(11), x, 0.5)
    typed = op.call(jax.random.wrap_key_data(jax.random.PRNGKey(11)), x, 0.5)
    assert_same(op, legacy, typed)


@params
@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_every_prng_impl(op, impl):
    # threefry2x32 (the default): test_same_key_same_output_jit_or_not and
    # test_different_keys_different_outputs check the same three things.
    x = _x(op)
    a = jax.jit(op.call, static_argnums=2)(jax.random.key(9, impl=impl), x, 0.5)
    b = op.call(jax.random.key(9, impl=impl), x, 0.5)
    assert_same(op, a, b)
    # Eight keys: even an op with a single draw (drop_path "batch") must vary.
    outs = [op.call(jax.random.key(s, impl=impl), x, 0.5) for s in range(8)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])
    assert a.shape == x.shape and a.dtype == x.dtype


@params
def test_python_rate_zero_is_identity_and_draws_nothing(op):
    x = _x(op)
    key = jax.random.key(12)
    y = op.call(key, x, 0.0)
    np.testing.assert_array_equal(y, x)
    if op.short_circuits:
        assert y is x
        assert not jax.make_jaxpr(lambda k, x: op.call(k, x, 0.0))(key, x).eqns
    # Nothing was drawn, so the key is still fresh for the key-reuse checker.
    op.call(key, x, 0.5)


@rate_params
def test_python_rate_zero_or_one_needs_no_key(op):
    # Layers ask jaxreg.needs_key before fetching a key (flax leaves its rng stream
    # untouched at rate 0 and 1), then call the op with key=None.
    x = _x(op)
    assert not jaxreg.needs_key(0.0) and not jaxreg.needs_key(1) and jaxreg.needs_key(0.5)
    assert jaxreg.needs_key(jnp.float32(0.0))  # an array's value is never inspected
    np.testing.assert_array_equal(op.call(None, x, 0.0), x)
    at_one = op.call(None, x, 1.0)  # drop_key: each row's maximum (test_attention.py)
    if op.rate_one_zeros:
        np.testing.assert_array_equal(at_one, jnp.zeros_like(x))
    for rate in (0.5, jnp.float32(0.0)):
        with pytest.raises(TypeError, match=r"jaxreg\.\w+: key is None, but rate=.*needs_key"):
            op.call(None, x, rate)


@params
def test_traced_rate_zero_is_identity(op):
    x = _x(op)
    y = jax.jit(op.call)(jax.random.key(13), x, jnp.float32(0.0))
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize(
    "op", [op for op in OPS if op.hyper == "rate" and op.rate_one_zeros], ids=str
)
@pytest.mark.parametrize("traced", [False, True], ids=["python", "traced"])
def test_rate_one_gives_zeros_and_finite_zero_gradients(op, traced):
    x = np.array(_x(op))
    x[(0,) * len(op.shape)], x[(1,) * len(op.shape)] = np.inf, np.nan
    x = jnp.asarray(x)
    rate = jnp.float32(1.0) if traced else 1.0

    def loss(x):
        return jnp.sum(op.call(jax.random.key(14), x, rate))

    y = op.call(jax.random.key(14), x, rate)
    np.testing.assert_array_equal(y, jnp.zeros_like(x))
    # One compiled program; the rate stays what it is eagerly (closed over, not traced).
    g = jax.jit(jax.grad(loss))(x)
    np.testing.assert_array_equal(g, jnp.zeros_like(x))


@params
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_preserved_with_python_and_traced_rate(op, dtype):
    x = _x(op, dtype=dtype)
    for seed, rate in enumerate((0.3, 1.0)):
        assert op.call(jax.random.key(15 + 10 * seed), x, rate).dtype == dtype
        assert jax.jit(op.call)(jax.random.key(16 + 10 * seed), x, jnp.float32(rate)).dtype == dtype
    g = jax.jit(
        jax.grad(lambda x: jnp.sum(op.call(jax.random.key(17), x, 0.3).astype(jnp.float32)))
    )(x)
    assert g.dtype == dtype


@params
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8])
def test_non_float_input_is_a_type_error(op, dtype):
    x = jnp.ones(op.shape, dtype)
    with pytest.raises(
        TypeError,
        match=r"jaxreg\.\w+: (x|w|log_alpha|logits|params leaf \S+) must be a floating-point array",
    ):
        op.call(jax.random.key(18), x, 0.5)


@rate_params
@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), np.float32(2.0)])
def test_bad_python_rate_is_a_clear_error(op, rate):
    with pytest.raises(ValueError, match=r"jaxreg\.\w+: rate must be in \[0, 1\], got"):
        op.call(jax.random.key(19), _x(op), rate)


@rate_params
def test_bad_concrete_array_rate_is_a_clear_error(op):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1\.5"):
        op.call(jax.random.key(19), _x(op), jnp.float32(1.5))
    with pytest.raises(ValueError, match=r"rate must be a scalar"):
        op.call(jax.random.key(19), _x(op), jnp.array([0.1, 0.2]))


@rate_params
@pytest.mark.parametrize("rate", [-0.5, 1.5, float("nan")])
def test_bad_traced_rate_gives_nan(op, rate):
    y = jax.jit(op.call)(jax.random.key(20), _x(op), jnp.float32(rate))
    assert bool(jnp.all(jnp.isnan(y)))


@params
@pytest.mark.parametrize(
    "key, exc, match",
    [
        (0, TypeError, "key must be a PRNG key"),
        (np.float32(1.0), TypeError, "key must be a PRNG key"),
        (
            np.zeros((3,), np.uint32),
            ValueError,
            "key must be a PRNG key: .* has shape \\(2,\\), got shape \\(3,\\)",
        ),
    ],
    ids=["int", "float", "wrong-shape"],
)
def test_bad_key_is_a_clear_error(op, key, exc, match):
    with pytest.raises(exc, match=r"jaxreg\.\w+: " + match):
        op.call(key, _x(op), 0.5)


@params
def test_key_array_is_rejected_with_vmap_hint(op):
    with pytest.raises(ValueError, match="jax.vmap over keys"):
        op.call(jax.random.split(jax.random.key(0), 2), _x(op), 0.5)


@params
def test_key_reuse_is_detected(op):
    x = _x(op)
    key = jax.random.key(21)
    op.call(key, x, 0.5)
    with pytest.raises(jax.errors.KeyReuseError):
        op.call(key, x, 0.5)


@params
def test_key_reuse_after_an_empty_draw_is_detected(op):
    # An empty input draws nothing, but the key counts as used, as in jax.random.
    x = _x(op)
    key = jax.random.key(25)
    op.call(key, jnp.zeros((0, *x.shape[1:]), x.dtype), 0.5)
    with pytest.raises(jax.errors.KeyReuseError):
        op.call(key, x, 0.5)


@params
def test_swapped_key_and_x_are_reported_as_swapped(op):
    with pytest.raises(TypeError, match=r"jaxreg\.\w+: .*swapped.*key comes first"):
        op.call(_x(op), jax.random.key(26), 0.5)


@params
def test_output_is_affine_in_x_and_gradient_flows_only_through_kept_units(op):
    x = _x(op)
    rate = 0.4

    def f(x):
        return op.call(jax.random.key(22), x, rate)

    @jax.jit  # one compiled program for the output, its slope and its offset
    def parts(x):
        y, vjp = jax.vjp(f, x)
        (slope,) = vjp(jnp.ones_like(y))
        return y, slope, f(jnp.zeros_like(x))

    # NumPy from here on: eager jnp ops and boolean indexing would compile per shape.
    y, slope, offset = map(np.asarray, parts(x))
    x = np.asarray(x)
    np.testing.assert_allclose(y, slope * x + offset, rtol=1e-6, atol=1e-6)
    if op.kind in ("mask", "classic", "block"):
        np.testing.assert_array_equal(offset, 0)
        dropped = y == 0
        np.testing.assert_array_equal(slope[dropped], 0)
        kept_slope = np.unique(slope[~dropped])
        assert kept_slope.size == 1  # one scale for every kept unit
        if op.kind == "mask":
            np.testing.assert_allclose(kept_slope, 1 / op.keep(rate), rtol=1e-6)
        if op.kind == "classic":
            np.testing.assert_array_equal(kept_slope, 1.0)


@pytest.mark.parametrize("op", [op for op in OPS if op.kind in ("mask", "classic")], ids=str)
def test_every_output_is_zero_or_scaled_input(op):
    x = _x(op)
    y = op.call(jax.random.key(23), x, 0.3)
    kept = x / op.keep(0.3) if op.kind == "mask" else x
    expected = np.where(np.asarray(y) == 0, 0.0, np.asarray(kept))
    np.testing.assert_array_equal(y, expected.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("op", [op for op in OPS if op.units is not None], ids=str)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.85])
def test_keep_fraction_within_5_sigma(op, rate):
    kept = np.asarray(jax.jit(op.units, static_argnums=1)(jax.random.key(24), rate))
    assert kept.size >= 1_000_000
    assert_binomial(int(kept.sum()), kept.size, op.keep(rate))


def test_table_lists_every_public_stochastic_op():
    """Every public function taking a key first appears in the table (or is mc_predict)."""
    in_table = " ".join(inspect.getsource(op.call) for op in OPS)
    for name in jaxreg.__all__:
        fn = getattr(jaxreg, name)
        first = next(iter(inspect.signature(fn).parameters), None)
        if first == "key" and name != "mc_predict":
            assert f"jaxreg.{name}(" in in_table, f"{name} is missing from tests/ops.py"
