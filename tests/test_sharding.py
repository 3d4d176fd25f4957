"""Sharded inputs: bitwise equal to the unsharded result, no collectives (8 CPU devices).

Rows of one array sharded, and a model axis (vmap over keys) sharded.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxreg

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("rows",))
    rows = NamedSharding(mesh, P("rows"))
    x = jax.random.normal(jax.random.key(0), (64, 1024))
    ops = {
        "dropout": lambda k, x, r: jaxreg.dropout(k, x, rate=0.3),
        "dropout_traced_rate": lambda k, x, r: jaxreg.dropout(k, x, rate=r),
        "broadcast": lambda k, x, r: jaxreg.dropout(k, x, rate=0.3, broadcast_dims=(1,)),
        "drop_path": lambda k, x, r: jaxreg.drop_path(k, x, rate=r),
        "gaussian": lambda k, x, r: jaxreg.gaussian_dropout(k, x, rate=0.3),
        "fast": lambda k, x, r: jaxreg.dropout(k, x, rate=r, sampler="fast"),
    }
    collectives = re.compile(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter")
    for name, op in ops.items():
        f = jax.jit(op, out_shardings=rows)
        xs = jax.device_put(x, rows)
        r = jnp.float32(0.3)
        y = f(jax.random.key(1), xs, r)
        ref = jax.jit(op)(jax.random.key(1), jax.device_put(x, jax.devices()[0]), r)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))
        hlo = f.lower(jax.random.key(1), xs, r).compile().as_text()
        found = collectives.findall(hlo)
        assert not found, (name, sorted(set(found)))
        assert y.sharding.is_equivalent_to(rows, 2), name
        # Each device holds (and computed) only its 8 rows.
        assert {s.data.shape for s in y.addressable_shards} == {(8, 1024)}
        print("ok", name)

    # One model per key: vmap over keys with the model axis sharded (a sweep's training
    # step). The stored mask under grad and the fast sampler's hash words go through
    # _bits.keep_in_memory, whose loop must not make XLA all-reduce its predicate.
    models = NamedSharding(mesh, P("rows"))
    keys = jax.random.split(jax.random.key(2), 8)
    xm = jax.random.normal(jax.random.key(3), (8, 16, 256))
    rates = jnp.linspace(0.0, 0.7, 8)
    per_model = {
        "vmap_keys_mask": lambda k, x, r: jaxreg.bernoulli_mask(k, x.shape, rate=r).astype(x.dtype),
        "vmap_keys_grad": lambda k, x, r: jax.grad(
            lambda x: jnp.sum(jaxreg.dropout(k, x, rate=r) * x)
        )(x),
        "vmap_keys_fast_grad": lambda k, x, r: jax.grad(
            lambda x: jnp.sum(jaxreg.dropout(k, x, rate=r, sampler="fast") * x)
        )(x),
    }
    for name, op in per_model.items():
        f = jax.jit(jax.vmap(op), out_shardings=models)
        args = (jax.device_put(keys, models), jax.device_put(xm, models), rates)
        y = f(*args)
        ref = np.asarray(jax.jit(jax.vmap(op))(keys, xm, rates))
        # The same masks (exactly the same zeros); values to float32 rounding (XLA may
        # fuse x / keep differently once the model axis is split).
        np.testing.assert_array_equal(np.asarray(y) == 0, ref == 0)
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-6, atol=0)
        hlo = f.lower(*args).compile().as_text()
        found = collectives.findall(hlo)
        assert not found, (name, sorted(set(found)))
        if "grad" in name:  # the mask is still stored once (a fusion boundary)
            assert "while" in hlo, name
        assert {s.data.shape for s in y.addressable_shards} == {(1, 16, 256)}
        print("ok", name)
    """
)


def test_sharded_dropout_equals_unsharded_without_collectives():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("ok ") == 9, out.stdout
