"""mc_predict: exact moments over split keys, chunking, pytrees, bounded memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg


def model(key, x):
    w = jnp.linspace(-1.0, 1.0, x.shape[-1] * 3).reshape(x.shape[-1], 3)
    return jaxreg.dropout(key, x, rate=0.5) @ w


def reference(fn, key, x, n):
    @jax.jit  # the reference as one compiled program
    def moments(key, x):
        samples = jax.vmap(lambda k: fn(k, x))(jax.random.split(key, n))
        return samples.mean(0), samples.var(0)

    return moments(key, x)


@pytest.mark.parametrize(
    "num_samples, chunk_size", [(1, None), (10, None), (10, 3), (64, 16), (100, 7)]
)
def test_moments_equal_direct_computation(num_samples, chunk_size):
    x = jax.random.normal(jax.random.key(0), (5, 8))
    mean, var = jaxreg.mc_predict(
        jax.random.key(1), model, x, num_samples=num_samples, chunk_size=chunk_size
    )
    ref_mean, ref_var = reference(model, jax.random.key(1), x, num_samples)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, ref_var, rtol=1e-4, atol=1e-6)


def test_pytree_outputs_dtypes_and_jit():
    def fn(key, x):
        y = jaxreg.dropout(key, x, rate=0.3)
        return {"y": y.astype(jnp.bfloat16), "s": jnp.sum(y)}

    x = jnp.ones(6)
    mean, var = jax.jit(lambda k: jaxreg.mc_predict(k, fn, x, num_samples=50, chunk_size=8))(
        jax.random.key(2)
    )
    assert mean["y"].dtype == jnp.bfloat16 and mean["s"].shape == ()
    samples = jax.vmap(lambda k: fn(k, x))(jax.random.split(jax.random.key(2), 56)[:50])
    ys = samples["y"].astype(jnp.float32)
    np.testing.assert_allclose(mean["y"].astype(jnp.float32), ys.mean(0), rtol=1e-2)
    np.testing.assert_allclose(var["y"].astype(jnp.float32), ys.var(0), rtol=2e-2)
    np.testing.assert_allclose(mean["s"], samples["s"].mean(), rtol=1e-5)
    np.testing.assert_allclose(var["s"], samples["s"].var(), rtol=1e-4)


def test_chunking_bounds_memory():
    x = jnp.ones((64, 512))

    def temp_bytes(chunk):
        f = jax.jit(lambda k: jaxreg.mc_predict(k, model, x, num_samples=2048, chunk_size=chunk))
        return f.lower(jax.random.key(0)).compile().memory_analysis().temp_size_in_bytes

    chunked, whole = temp_bytes(32), temp_bytes(None)
    assert chunked * 16 < whole, (chunked, whole)


def test_mc_predict_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"jaxreg\.mc_predict: num_samples must be >= 1, got 0"):
        jaxreg.mc_predict(key, model, jnp.ones((1, 2)), num_samples=0)
    with pytest.raises(TypeError, match="num_samples must be a Python int"):
        jaxreg.mc_predict(key, model, jnp.ones((1, 2)), num_samples=2.5)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        jaxreg.mc_predict(key, model, jnp.ones((1, 2)), num_samples=4, chunk_size=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        jaxreg.mc_predict(key, 3, num_samples=4)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        jaxreg.mc_predict(0, model, jnp.ones((1, 2)), num_samples=4)
    with pytest.raises(TypeError, match=r"look swapped\. The key comes first: jaxreg\.mc_pre"):
        jaxreg.mc_predict(model, key, jnp.ones((1, 2)), num_samples=4)
