"""jaxreg.grid on several devices and processes (CPU devices simulated by XLA_FLAGS).

4 devices equal 1 (a grid of 6 models padded to 8: the padding changes nothing), vmap and
map alike, with no collectives in the compiled chunk; 2 processes x 2 devices equal 1
device. The models and data are test_grid_engine's.
"""

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from subproc import child_env
from test_grid_engine import reference  # noqa: F401  (the 1-device run, a fixture)

# ruff: noqa: F811

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import re, sys
    import jax, numpy as np
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "processes":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(sys.argv[3], 2, int(sys.argv[4]))
    else:  # the HLO check's compile and train's are then one
        jax.config.update("jax_compilation_cache_dir", out + "/xla_cache")
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    sys.path.insert(0, "tests")
    from jax.sharding import Mesh
    from test_grid_engine import DATA, GRID, trainer

    COLLECTIVES = re.compile(r"all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter")
    assert jax.device_count() == 4, jax.devices()
    grid = GRID.take(range(6))  # padded to 8 models


    def run(t, check_hlo):
        state = t.init_state(grid, DATA)
        if check_hlo:
            found = COLLECTIVES.findall(t.lower(state, DATA).compile().as_text())
            assert not found, sorted(set(found))
        state = t.train(state, DATA, steps=6)
        assert state.num_models == 8 and state.to_host(state.valid).tolist() == [True] * 6
        params = jax.tree.leaves(state.to_host(state.params))  # every process takes part
        if jax.process_index() == 0:
            np.savez(f"{out}/{mode}_{t.strategy}.npz", *params)
        return state


    if mode == "devices":
        state = run(trainer(), True)
        run(trainer(strategy="map"), True)  # one model after the other on each device
        three = trainer(mesh=Mesh(np.array(jax.devices()[:3]), ("models",)))
        try:
            three.train(state, DATA, steps=6)
        except ValueError as err:
            assert str(err).startswith("jaxreg.grid.Trainer.train: mesh of 3 devices cannot "
                                       "hold the 8 models of state"), err
        else:
            raise AssertionError("no error")
        # The HLO check finds a collective where there is one (negative control).
        sharded = jax.device_put(np.ones(8), state.valid.sharding)
        hlo = jax.jit(lambda a: a.sum()).lower(sharded).compile().as_text()
        assert COLLECTIVES.findall(hlo), hlo
    else:
        run(trainer(), False)
        assert jax.process_count() == 2
    print("ok", mode)
    """
)


def env(devices):
    # LLVM at -O0: the tiny programs compile in 2/3 of the time and compute the same.
    return child_env(devices=devices)


def load(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def assert_same(got, ref, rtol=1e-5):
    """Equal to float32 rounding: XLA compiles a device's block of 2 models differently
    than 8 models on one device (2e-6 relative after 6 Adam steps here)."""
    for a, b in zip(got, ref, strict=True):
        assert a.shape[0] == 6
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol / 10)


def launch(mode, out, *extra, devices=4):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode, str(out), *map(str, extra)],
        cwd=ROOT, env=env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(procs, mode):
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), [e[-3000:] for _, e in results]
    assert all(f"ok {mode}" in o for o, _ in results)


def rows(reference):
    return [np.asarray(a)[:6] for a in jax.tree.leaves(reference.params)]


def test_four_devices_equal_one_with_padding_and_no_collectives(reference, tmp_path):
    finish([launch("devices", tmp_path)], "devices")
    assert_same(load(tmp_path / "devices_vmap.npz"), rows(reference))
    # map in groups of 1 runs each model without a model axis: XLA rounds differently.
    assert_same(load(tmp_path / "devices_map.npz"), rows(reference), rtol=1e-4)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(reference, tmp_path):
    port = free_port()
    procs = [launch("processes", tmp_path, f"localhost:{port}", i, devices=2) for i in range(2)]
    finish(procs, "processes")
    assert_same(load(tmp_path / "processes_vmap.npz"), rows(reference))
