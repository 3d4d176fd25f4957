"""Sharded inputs: bitwise equal to the unsharded result, no collectives (8 CPU devices).

Rows of one array sharded, and a model axis (vmap over keys) sharded.
"""

import subprocess
import sys
import textwrap

from subproc import child_env

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
        "concrete": lambda k, x, r: jaxreg.concrete_dropout(k, x, rate=r),
        "hard_concrete_gate": lambda k, x, r: x * jaxreg.hard_concrete_gate(k, x),
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
        # Learned rates: d/d(rate) per model (an all-reduce only within a model's rows).
        "vmap_keys_concrete_d_rate": lambda k, x, r: x * jax.grad(
            lambda r: jnp.sum(jaxreg.concrete_dropout(k, x, rate=r) * x)
        )(r),
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
    env = child_env(devices=8)  # LLVM -O0: the claims are about HLO, not machine code
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("ok ") == 12, out.stdout


# Which ops are collective-free under which sharding (the README's table), checked on
# the compiled HLO; the ops that must communicate are checked to do so (negative
# controls for the HLO check). Every sharded result equals the unsharded one.
CLAIMS = textwrap.dedent(
    """
    import re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jaxreg

    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("d",))
    grid = Mesh(devices.reshape(4, 2), ("data", "model"))
    pattern = re.compile(r"all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter")
    key, r = jax.random.key(1), jnp.float32(0.3)


    def run(f, sharded, plain):
        compiled = jax.jit(f).lower(*sharded).compile()
        out = compiled(*sharded)
        ref = jax.jit(f)(*plain)
        found = sorted(set(pattern.findall(compiled.as_text())))
        return out, ref, found


    def check(name, f, x, spec, *, collectives=(), mesh=mesh, extra=()):
        sharding = NamedSharding(mesh, spec)
        sharded = (key, jax.device_put(x, sharding), r, *extra)
        plain = (key, jax.device_put(x, jax.devices()[0]), r, *extra)
        y, ref, found = run(f, sharded, plain)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(ref), err_msg=name)
        if collectives:
            assert set(collectives) <= set(found), (name, found)
        else:
            assert not found, (name, found)
            assert y.sharding.is_equivalent_to(sharding, y.ndim), (name, y.sharding)
        print("ok", name, found)


    kernel = jax.random.normal(jax.random.key(2), (32, 16))
    x2 = jax.random.normal(jax.random.key(0), (64, 32))
    x3 = jax.random.normal(jax.random.key(0), (64, 8, 32))
    maps = jax.random.normal(jax.random.key(0), (16, 12, 12, 4))
    tall = jax.random.normal(jax.random.key(0), (2, 64, 8, 4))
    check("dropout_columns", lambda k, x, r: jaxreg.dropout(k, x, rate=r), x2, P(None, "d"))
    check(
        "alpha_dropout_noise_shape",
        lambda k, x, r: jaxreg.alpha_dropout(k, x, rate=0.3, noise_shape=(None, 1, None)),
        x3,
        P("d"),
    )
    check("spatial_dropout", lambda k, x, r: jaxreg.spatial_dropout(k, x, rate=r), maps, P("d"))
    block = lambda per: lambda k, x, r: jaxreg.drop_block(  # noqa: E731
        k, x, rate=r, block_size=3, normalize_per_example=per
    )
    check("drop_block_per_example", block(True), maps, P("d"))
    check("drop_block_batch_all_reduce", block(False), maps, P("d"), collectives=["all-reduce"])
    check(
        "drop_block_spatial_halo",
        block(True),
        tall,
        P(None, "d"),
        collectives=["collective-permute"],
    )
    dense = lambda per: lambda k, x, r, w: jaxreg.drop_connect_dense(  # noqa: E731
        k, x, w, rate=r, per_example=per
    )
    check("drop_connect_dense", dense(False), x2, P("d"), extra=(kernel,))
    check("drop_connect_per_example", dense(True), x2, P("d"), extra=(kernel,))
    check(
        "drop_connect_per_example_4_of_8",
        dense(True),
        x2,
        P("data"),
        mesh=grid,
        extra=(kernel,),
    )

    # Gradients. Dropout with a traced rate: d/dx is bit-identical; d/drate is a sum
    # over every unit, an all-reduce under sharding, so its rounding differs by a few
    # ulp (plain jnp dropout does the same).
    rows = NamedSharding(mesh, P("d"))
    wide = jax.random.normal(jax.random.key(0), (64, 1024))
    w = jax.random.normal(jax.random.key(5), wide.shape)

    def ulps(a, b):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        a, b = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
        return int(np.abs(a - b).max())

    drops = {
        "jaxreg": lambda k, x, r: jaxreg.dropout(k, x, rate=r),
        "jnp": lambda k, x, r: jnp.where(jax.random.bernoulli(k, 1 - r, x.shape), x / (1 - r), 0.0),
    }
    for name, drop in drops.items():
        grad = jax.grad(lambda x, r, k: jnp.sum(drop(k, x, r) * w), (0, 1))
        f = lambda k, x, r: grad(x, r, k)  # noqa: E731
        (dx, dr), (dx0, dr0), found = run(
            f,
            (key, jax.device_put(wide, rows), r),
            (key, jax.device_put(wide, jax.devices()[0]), r),
        )
        np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx0))
        assert "all-reduce" in found, (name, found)
        assert ulps(dr, dr0) <= 4, (name, float(dr), float(dr0))
        print("ok grad", name, ulps(dr, dr0))

    # Per-example DropConnect: d/dx stays sharded and bit-identical; d/dkernel is a sum
    # over the batch (an all-reduce, as any data-parallel gradient), equal to rounding.
    grad = jax.grad(lambda x, w, k: jnp.sum(jnp.sin(dense(True)(k, x, r, w))), (0, 1))
    f = lambda k, x, r, w: grad(x, w, k)  # noqa: E731
    (dx, dw), (dx0, dw0), found = run(
        f,
        (key, jax.device_put(x2, rows), r, kernel),
        (key, jax.device_put(x2, jax.devices()[0]), r, kernel),
    )
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(dx0))
    np.testing.assert_allclose(np.asarray(dw), np.asarray(dw0), rtol=1e-5, atol=1e-5)
    assert found == ["all-reduce"], found
    print("ok grad per_example")
    """
)


def test_collective_free_claims_per_op_and_sharding():
    env = child_env(devices=8)  # LLVM -O0: the claims are about HLO, not machine code
    out = subprocess.run(
        [sys.executable, "-c", CLAIMS], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("ok ") == 12, out.stdout
