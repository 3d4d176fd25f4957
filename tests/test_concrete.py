"""concrete_dropout and concrete_dropout_penalty (Gal, Hron & Kendall 2017).

The generic promises (keys, jit, vmap over keys and rates, dtypes, rate 0 and 1, bad
rates and keys) are the conformance table's (tests/ops.py); here: the relaxation's
limits, the gradient with respect to the rate, per-feature rates and the penalty.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg
from stats import assert_mean

M = (1000, 1000)
P = 0.3


@functools.partial(jax.jit, static_argnames="temperature")
def keep_factors(key, rate, temperature):
    """The relaxed keep factor 1 - d of 1e6 units: the output on ones times 1 - rate."""
    return jaxreg.concrete_dropout(key, jnp.ones(M), rate=rate, temperature=temperature) * (
        1 - rate
    )


@pytest.mark.slow
def test_small_temperature_keeps_1_minus_rate_with_values_0_or_x_over_keep():
    fractions = {}
    for t in (1e-2, 1e-4):
        keep = np.asarray(keep_factors(jax.random.key(0), jnp.float32(P), t), np.float64)
        assert_mean(keep, 1 - P)  # n = 1e6, 5 sigma
        # Distance of each value from {0, x / (1 - p)}, relative to x / (1 - p).
        off = np.minimum(keep, np.abs(keep - 1.0)) > 1e-3
        fractions[t] = off.mean()
        # |logit(p) + n| < t * log(1e3) is needed for an off value: ~ 2.9 t for p = 0.3.
        assert fractions[t] < 5 * t, (t, fractions[t])
    assert fractions[1e-4] < fractions[1e-2] / 20
    # Negative control: the same sample is rejected as keeping 1 - 0.31.
    with pytest.raises(AssertionError):
        assert_mean(keep, 1 - 0.31)


def relaxed_expected_loss(p, t, cells=2**23):
    """E[(keep / (1 - p))**2] under the sampler's exact law: u at the 2**23 midpoints."""
    u = (np.arange(cells, dtype=np.float64) + 0.5) / cells
    noise = np.log(u) - np.log1p(-u)
    keep = 1.0 / (1.0 + np.exp((np.log(p) - np.log1p(-p) + noise) / t))
    return np.mean((keep / (1 - p)) ** 2)


@jax.jit
def per_unit_rate_gradient(key):
    """d/dp of y**2 per unit: a rate per unit (all P), so each unit has its own gradient."""
    x = jnp.ones(M)
    rate = jnp.full(M, P)
    return jax.grad(lambda r: jnp.sum(jaxreg.concrete_dropout(key, x, rate=r) ** 2))(rate)


@pytest.mark.slow
def test_rate_gradient_matches_finite_difference_of_expected_loss():
    h, t = 1e-4, 0.1
    reference = (relaxed_expected_loss(P + h, t) - relaxed_expected_loss(P - h, t)) / (2 * h)
    grads = np.asarray(per_unit_rate_gradient(jax.random.key(3)), np.float64)
    assert np.isfinite(grads).all()
    assert_mean(grads, reference)  # n = 1e6 units, 5 sigma
    # Negative controls: a 5% wrong scale, the wrong sign, and the gradient of hard
    # Bernoulli dropout's expected loss 1 / (1 - p) are all rejected.
    for wrong in (1.05 * reference, -reference, 1 / (1 - P) ** 2):
        with pytest.raises(AssertionError):
            assert_mean(grads, wrong)


@jax.jit
def columns(key, x, rates):
    """Per-feature rates, and each column recomputed with its scalar rate."""
    per_feature = jaxreg.concrete_dropout(key, x, rate=rates)
    scalar = jnp.stack(
        [jaxreg.concrete_dropout(key, x, rate=r)[:, j] for j, r in enumerate(rates)], axis=1
    )
    grad = jax.grad(
        lambda r: jnp.sum(jaxreg.concrete_dropout(key, x, rate=r).astype(jnp.float32) ** 2)
    )(rates)
    return per_feature, scalar, grad


def test_per_feature_rates_equal_scalar_rates_column_by_column():
    jax.config.update("jax_debug_key_reuse", False)  # the scalar calls reuse the key
    try:
        x = jax.random.normal(jax.random.key(1), (6, 4)).astype(jnp.bfloat16)
        rates = jnp.array([0.0, 0.2, 0.7, 1.0])
        per_feature, scalar, grad = columns(jax.random.key(2), x, rates)
    finally:
        jax.config.update("jax_debug_key_reuse", True)
    assert per_feature.dtype == jnp.bfloat16  # bf16 in, bf16 out
    np.testing.assert_array_equal(per_feature, scalar)
    np.testing.assert_array_equal(per_feature[:, 0], x[:, 0])  # rate 0: identity
    np.testing.assert_array_equal(per_feature[:, 3], 0)  # rate 1: zeros
    assert grad.shape == (4,) and np.isfinite(grad).all()


def test_broadcast_dims_share_one_relaxed_mask():
    x = jnp.ones((3, 5, 4))
    y = jaxreg.concrete_dropout(jax.random.key(4), x, rate=0.5, broadcast_dims=(1,))
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:, :1], y.shape))
    assert len(np.unique(np.asarray(y))) > 3  # still relaxed, not 0 / 2 only


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"temperature": 0.0}, ValueError, "temperature must be > 0 and finite, got 0.0"),
        ({"temperature": float("inf")}, ValueError, "temperature must be > 0"),
        ({"temperature": "0.1"}, TypeError, "temperature must be a number > 0"),
        ({"temperature": jnp.ones(2)}, ValueError, "temperature must be a scalar"),
        (
            {"rate": jnp.full((3,), 0.1)},
            ValueError,
            r"rate must be a scalar or an array that broadcasts to x's shape \(2, 4\)",
        ),
        ({"rate": jnp.array([0.1, 1.2, 0.3, 0.4])}, ValueError, r"rate must be in \[0, 1\]"),
        ({"broadcast_dims": (5,)}, ValueError, "broadcast_dims holds axis 5"),
    ],
)
def test_bad_arguments_name_the_function_and_argument(kwargs, exc, match):
    args = {"rate": 0.5, **kwargs}
    with pytest.raises(exc, match=r"^jaxreg\.concrete_dropout: " + match):
        jaxreg.concrete_dropout(jax.random.key(5), jnp.ones((2, 4)), **args)


def test_traced_invalid_temperature_gives_nan():
    f = jax.jit(
        lambda t: jaxreg.concrete_dropout(jax.random.key(6), jnp.ones(3), rate=0.5, temperature=t)
    )
    assert np.isnan(f(jnp.float32(0.0))).all() and np.isfinite(f(jnp.float32(0.5))).all()


# The penalty.
def reference_penalty(w, p, n, length, tau):
    """The authors' Keras/PyTorch formula, transcribed: regularizers from (l, tau, N)."""
    weight_regularizer = length**2 / (tau * n)
    dropout_regularizer = 2.0 / (tau * n)
    kernel_term = weight_regularizer * np.sum(np.square(w)) / (1.0 - p)
    entropy_term = p * np.log(p) + (1.0 - p) * np.log(1.0 - p)
    return kernel_term + dropout_regularizer * w.shape[0] * entropy_term


KERNEL = np.random.default_rng(0).normal(size=(5, 3))


def test_penalty_equals_the_reference_implementation_formula():
    for p, tau in [(0.1, 1.0), (0.5, 0.25), (0.9, 4.0)]:
        got = jaxreg.concrete_dropout_penalty(
            KERNEL, rate=p, num_examples=1000, length_scale=0.3, precision=tau
        )
        np.testing.assert_allclose(got, reference_penalty(KERNEL, p, 1000, 0.3, tau), rtol=1e-5)
    # Without precision (a log-likelihood loss): half the MSE form at tau = 1.
    nll = jaxreg.concrete_dropout_penalty(KERNEL, rate=0.2, num_examples=50, length_scale=2.0)
    np.testing.assert_allclose(nll, reference_penalty(KERNEL, 0.2, 50, 2.0, 1.0) / 2, rtol=1e-5)


def test_penalty_per_unit_rates_sum_row_by_row_and_conv_kernels_use_axis_minus_2():
    rates = jnp.array([0.1, 0.2, 0.3, 0.4, 0.5])
    whole = jaxreg.concrete_dropout_penalty(KERNEL, rate=rates, num_examples=10, length_scale=1)
    rows = sum(
        jaxreg.concrete_dropout_penalty(KERNEL[k : k + 1], rate=r, num_examples=10, length_scale=1)
        for k, r in enumerate(rates)
    )
    np.testing.assert_allclose(whole, rows, rtol=1e-5)
    conv = np.random.default_rng(1).normal(size=(2, 2, 5, 3))  # (h, w, in, out)
    flat = conv.transpose(2, 0, 1, 3).reshape(5, -1)  # rows = input channels
    np.testing.assert_allclose(
        jaxreg.concrete_dropout_penalty(conv, rate=rates, num_examples=10, length_scale=1),
        jaxreg.concrete_dropout_penalty(flat, rate=rates, num_examples=10, length_scale=1),
        rtol=1e-5,
    )


@jax.jit
def penalty_gradient(rate, n, length_scale):
    def f(r):
        return jaxreg.concrete_dropout_penalty(
            KERNEL, rate=r, num_examples=n, length_scale=length_scale
        )

    return jax.grad(f)(rate)


def test_penalty_gradient_with_traced_hyperparameters():
    p, n, length = 0.3, 100.0, 0.5
    got = penalty_gradient(jnp.float32(p), jnp.float32(n), jnp.float32(length))
    analytic = (length**2 / 2 * np.sum(KERNEL**2) / (1 - p) ** 2 - 5 * np.log((1 - p) / p)) / n
    np.testing.assert_allclose(got, analytic, rtol=1e-5)
    assert np.isnan(penalty_gradient(jnp.float32(p), jnp.float32(-1.0), jnp.float32(length)))
    # Rates 0 and 1 (a saturated logit): finite gradients that point back inside.
    at_ends = [
        penalty_gradient(jnp.float32(r), jnp.float32(n), jnp.float32(length)) for r in (0, 1)
    ]
    assert np.isfinite(at_ends).all() and at_ends[0] < 0 < at_ends[1]
    # A traced rate outside [0, 1] gives NaN (not a clipped, plausible value).
    invalid = jax.jit(
        lambda r: jaxreg.concrete_dropout_penalty(KERNEL, rate=r, num_examples=1, length_scale=1)
    )
    assert np.isnan(invalid(jnp.array([0.1, 0.2, 1.5, 0.3, 0.4])))


@pytest.mark.parametrize(
    "kernel, kwargs, exc, match",
    [
        (KERNEL[0], {}, ValueError, r"kernel must have rank >= 2"),
        (KERNEL, {"rate": 1.0}, ValueError, "rate must be below 1"),
        (
            KERNEL,
            {"rate": jnp.ones(3) * 0.1},
            ValueError,
            r"rate must be a scalar or an array that broadcasts to \(5,\)",
        ),
        (KERNEL, {"num_examples": 0}, ValueError, "num_examples must be > 0"),
        (KERNEL, {"length_scale": -1.0}, ValueError, "length_scale must be > 0"),
        (KERNEL, {"precision": 0.0}, ValueError, "precision must be > 0"),
        (KERNEL.astype(np.int32), {}, TypeError, "kernel must be a floating-point array"),
    ],
)
def test_penalty_bad_arguments_name_the_function_and_argument(kernel, kwargs, exc, match):
    args = {"rate": 0.1, "num_examples": 10, "length_scale": 1.0, **kwargs}
    with pytest.raises(exc, match=r"^jaxreg\.concrete_dropout_penalty: " + match):
        jaxreg.concrete_dropout_penalty(kernel, **args)
