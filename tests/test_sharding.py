"""Sharded inputs: bitwise equal to the unsharded result, no collectives (8 CPU devices)."""

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
    assert out.stdout.count("ok ") == 6, out.stdout
