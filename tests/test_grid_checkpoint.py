"""jaxreg.grid.Checkpointer: bitwise round trips, one grid per folder, atomic writes,
damaged checkpoints skipped (never resumed), and resume after SIGKILL equal to an
uninterrupted run (a subprocess on 4 simulated devices)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from subproc import child_env

from jaxreg.grid import Checkpointer, fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = child_env()


class Opt(NamedTuple):
    mu: jax.Array
    count: jax.Array


MESH = Mesh(np.array(jax.devices()[:1]), ("model",))
MODELS = NamedSharding(MESH, P("model"))


def make_state(scale=1.0):
    """Every kind of leaf: sharded and replicated arrays, bf16, a NamedTuple, a step
    counter (array and Python int), NumPy arrays and scalars, a PRNG key."""
    w = jnp.arange(12, dtype=jnp.float32).reshape(4, 3) * scale
    return {
        "params": {"w": jax.device_put(w, MODELS), "b": jnp.full((4,), scale, jnp.bfloat16)},
        "opt": Opt(jax.device_put(w * 0.5, MODELS), jnp.int32(3)),
        "step": jnp.int32(30),
        "epoch": 2,
        "best": np.linspace(0.0, 1.0, 4),
        "lr": np.float32(0.1),
        "key": jax.random.key(7),
    }


def fresh():
    """A state of the same grid with other values (what a fresh run initialises)."""
    return jax.tree.map(
        lambda x: (
            x if jax.dtypes.issubdtype(getattr(x, "dtype", int), jax.dtypes.prng_key) else x * 0
        ),
        make_state(2.0),
    )


def leaves_bytes(tree):
    out = []
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append((type(x).__name__, str(np.asarray(x).dtype), np.asarray(x).tobytes()))
    return out


def files_of(path):
    return sorted(
        os.path.join(d, f) for d, _, fs in os.walk(os.path.join(path, "state")) for f in fs
    )


def test_import_does_not_import_orbax(tmp_path):
    code = (
        "import sys, jaxreg.grid\n"
        f"c = jaxreg.grid.Checkpointer({str(tmp_path)!r}, fingerprint='x')\n"
        "assert c.latest_step() is None and c.restore({'a': 1}) is None\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('orbax', 'tqdm', 'matplotlib')]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_round_trip_bitwise_onto_like_state_shardings(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path, fingerprint="grid-a", keep=2)
    assert ckpt.restore(fresh()) is None and ckpt.latest_step() is None
    ckpt.save(state, 30)
    restored, step = ckpt.restore(fresh())
    assert step == 30
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert leaves_bytes(restored) == leaves_bytes(state)
    assert restored["params"]["w"].sharding == MODELS and restored["opt"].mu.sharding == MODELS
    assert type(restored["epoch"]) is int and isinstance(restored["lr"], np.float32)
    # Abstract leaves (no initialisation needed) restore the same bytes.
    abstract = jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
            if isinstance(x, jax.Array)
            else x
        ),
        fresh(),
    )
    assert leaves_bytes(ckpt.restore(abstract)[0]) == leaves_bytes(state)
    # keep=2 keeps the newest two; saving an earlier step drops the later (stale) ones.
    for s in (40, 50):
        ckpt.save(make_state(s), s)
    assert ckpt.steps() == [50, 40]
    ckpt.save(make_state(45), 45)
    assert ckpt.steps() == [45, 40] and ckpt.latest_step() == 45
    ckpt.save(make_state(46), 45)  # the same step again: replaced
    assert leaves_bytes(ckpt.restore(fresh())[0]) == leaves_bytes(make_state(46))
    assert sorted(os.listdir(tmp_path)) == ["step_40", "step_45"]


def test_another_grid_is_refused(tmp_path):
    Checkpointer(tmp_path, fingerprint="grid-a").save(make_state(), 1)
    with pytest.raises(ValueError, match=r"jaxreg\.grid\.Checkpointer: .*'grid-a'.*'grid-b'"):
        Checkpointer(tmp_path, fingerprint="grid-b")
    other = Checkpointer(tmp_path / "b", fingerprint="grid-b")
    Checkpointer(tmp_path / "b", fingerprint="grid-a").save(make_state(), 2)  # after `other`
    with pytest.raises(ValueError, match=r"Checkpointer\.restore: .*'grid-a'.*'grid-b'"):
        other.restore(fresh())
    # fingerprint(): stable, order-free, sensitive to values and array bytes.
    config = {"rate": np.array([0.1, 0.5], np.float32), "seed": [0, 1], "steps": 100}
    assert fingerprint(config) == fingerprint(dict(reversed(config.items())))
    assert len(fingerprint(config)) == 16
    assert fingerprint(config) != fingerprint({**config, "steps": 101})
    assert fingerprint(config) != fingerprint({**config, "rate": np.array([0.1, 0.6])})
    with pytest.raises(TypeError, match=r"jaxreg\.grid\.fingerprint: config must"):
        fingerprint({"f": print})


def test_like_state_must_match_structure_shapes_dtypes(tmp_path):
    ckpt = Checkpointer(tmp_path, fingerprint="g")
    ckpt.save(make_state(), 5)
    cases = [
        ({**fresh(), "extra": jnp.zeros(1)}, r"with leaves \['extra'\] not in the checkpoint\."),
        ({k: v for k, v in fresh().items() if k != "lr"}, r"without the saved leaves \['lr'\]\."),
        ({**fresh(), "best": np.zeros(5)}, r"like_state\['best'\] must have shape \(4,\)"),
        ({**fresh(), "step": jnp.float32(0)}, r"like_state\['step'\] .*dtype int32"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=r"jaxreg\.grid\.Checkpointer\.restore: .*" + message):
            ckpt.restore(bad)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"Checkpointer: fingerprint must be a non-empty str"):
        Checkpointer(tmp_path, fingerprint="")
    with pytest.raises(ValueError, match=r"Checkpointer: keep must be >= 1, got 0"):
        Checkpointer(tmp_path, fingerprint="g", keep=0)
    ckpt = Checkpointer(tmp_path, fingerprint="g")
    with pytest.raises(ValueError, match=r"Checkpointer\.save: step must be >= 0, got -1"):
        ckpt.save(make_state(), -1)
    for step in (True, 1.5):
        with pytest.raises(TypeError, match=r"Checkpointer\.save: step must be a Python int"):
            ckpt.save(make_state(), step)
    with pytest.raises(TypeError, match=r"save: state\['a'\] must be an array or a Python"):
        ckpt.save({"a": "text"}, 1)
    assert os.listdir(tmp_path) == []


def damage(path, how):
    """Truncates the largest file of a checkpoint, or flips bytes in its smallest."""
    files = sorted(files_of(path), key=os.path.getsize)
    target = files[-1] if how == "truncate" else files[0]
    with open(target, "r+b") as f:
        data = bytearray(f.read())
        if how == "truncate":
            f.truncate(len(data) // 2)
        else:
            data[len(data) // 2] ^= 0xFF
            f.seek(0)
            f.write(data)


def test_damaged_checkpoints_are_skipped_never_resumed(tmp_path):
    ckpt = Checkpointer(tmp_path, fingerprint="g", keep=4)
    for s in (1, 2, 3, 4):
        ckpt.save(make_state(s), s)
    damage(tmp_path / "step_4", "truncate")
    damage(tmp_path / "step_3", "flip")
    # A manifest edited consistently (its own sha256 recomputed) but describing other
    # bytes: the restored leaves' sha256 catches it.
    manifest_path = tmp_path / "step_2" / "manifest.json"
    stored = json.loads(manifest_path.read_text())
    stored["body"]["leaves"][0]["sha256"] = "0" * 64
    text = json.dumps(stored["body"], sort_keys=True, separators=(",", ":"))
    stored["sha256"] = __import__("hashlib").sha256(text.encode()).hexdigest()
    manifest_path.write_text(json.dumps(stored))
    with pytest.warns(RuntimeWarning) as caught:
        restored, step = ckpt.restore(fresh())
    assert step == 1 and leaves_bytes(restored) == leaves_bytes(make_state(1))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3, messages
    assert "step_4 (" in messages[0] and "bytes" in messages[0]  # size differs
    assert "step_3 (" in messages[1] and "fails its sha256" in messages[1]
    assert "step_2 (" in messages[2] and "restored with other bytes" in messages[2]
    # The manifest of the last one damaged: nothing intact, a clear error.
    raw = bytearray((tmp_path / "step_1" / "manifest.json").read_bytes())
    raw[40] ^= 0x01
    (tmp_path / "step_1" / "manifest.json").write_bytes(raw)
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(RuntimeError, match=r"Checkpointer\.restore: no intact checkpoint in "),
    ):
        ckpt.restore(fresh())


def test_killed_write_is_ignored_and_cleaned(tmp_path):
    ckpt = Checkpointer(tmp_path, fingerprint="g")
    ckpt.save(make_state(1), 1)
    # What a SIGKILL leaves: a temporary folder (here, a full copy with one file cut
    # short and no manifest) and a deletion that did not finish.
    shutil.copytree(tmp_path / "step_1", tmp_path / ".tmp-step_2")
    os.remove(tmp_path / ".tmp-step_2" / "manifest.json")
    damage(tmp_path / ".tmp-step_2", "truncate")
    shutil.copytree(tmp_path / "step_1", tmp_path / ".del-step_0")
    assert ckpt.steps() == [1]  # ignored
    restored, step = Checkpointer(tmp_path, fingerprint="g").restore(fresh())  # cleaned
    assert step == 1 and leaves_bytes(restored) == leaves_bytes(make_state(1))
    assert sorted(os.listdir(tmp_path)) == ["step_1"]


# A small grid loop: a jitted pure update over a pytree (8 models sharded over 4
# devices, a NamedTuple optimizer state, a step counter, per-model keys derived from
# the step), saved every 3 steps. argv: folder, steps, die_at (SIGKILL itself inside
# the die_at-th commit: temporary folder written, not yet renamed), pause after saves.
LOOP = textwrap.dedent(
    """
    import os, signal, sys, time
    from typing import NamedTuple
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxreg.grid import Checkpointer

    folder, total, die_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = float(sys.argv[4])
    if die_at:
        replace, commits = os.replace, []
        def dying_replace(src, dst):
            if os.path.basename(src).startswith(".tmp-"):
                commits.append(src)
                if len(commits) == die_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            replace(src, dst)
        os.replace = dying_replace

    class Opt(NamedTuple):
        mu: jax.Array
        count: jax.Array

    K = 8
    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("model",))
    models, replicated = NamedSharding(mesh, P("model")), NamedSharding(mesh, P())
    state0 = {
        "params": {"w": jax.random.normal(jax.random.key(0), (K, 16)), "b": jnp.zeros((K, 4))},
        "opt": Opt(jnp.zeros((K, 16)), jnp.zeros(K, jnp.int32)),
        "step": jnp.int32(0),
    }
    shardings = jax.tree.map(lambda x: models if x.ndim else replicated, state0)
    state0 = jax.device_put(state0, shardings)

    @jax.jit
    def update(state):
        step = state["step"]
        keys = jax.vmap(lambda m: jax.random.fold_in(jax.random.key(1), m * 1000 + step))(
            jnp.arange(K)
        )
        noise = jax.vmap(lambda k: jax.random.normal(k, (16,)))(keys)
        w = state["params"]["w"]
        mu = 0.9 * state["opt"].mu + jnp.tanh(w) + noise
        w = w - 0.01 * mu
        b = state["params"]["b"] + jnp.sum(w * w, axis=1, keepdims=True) * 1e-3
        new = {"params": {"w": w, "b": b}, "opt": Opt(mu, state["opt"].count + 1),
               "step": step + 1}
        return jax.lax.with_sharding_constraint(new, shardings)

    ckpt = Checkpointer(folder, fingerprint="sigkill-loop", keep=2)
    resumed = ckpt.restore(state0)
    state, done = resumed if resumed is not None else (state0, 0)
    assert int(state["step"]) == done
    assert jax.tree.map(lambda x: x.sharding, state) == shardings
    print("start", done, flush=True)
    for step in range(done, total):
        state = update(state)
        if (step + 1) % 3 == 0:
            ckpt.save(state, step + 1)
            print("saved", step + 1, flush=True)
            time.sleep(pause)
    reference = state0
    for _ in range(total):  # the same run, uninterrupted and without checkpoints
        reference = update(reference)
    flat = lambda t: {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                      jax.tree_util.tree_leaves_with_path(t)}
    np.savez(folder + ".final.npz", **flat(state))
    np.savez(folder + ".reference.npz", **flat(reference))
    print("done", flush=True)
    """
)


def run_loop(folder, *, die_at=0, pause=0.0, kill_after=None):
    env = child_env(devices=4)
    args = [sys.executable, "-c", LOOP, str(folder), "12", str(die_at), str(pause)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    if kill_after is not None:  # SIGKILL from outside, mid-run, once this line is seen
        for raw in proc.stdout:
            lines.append(raw.decode().strip())
            if lines[-1] == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, lines + out.decode().split(), err.decode()


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    folder = tmp_path / "ckpt"
    # Killed from outside after the checkpoint of step 6, during the pause that follows.
    rc, out, err = run_loop(folder, pause=5.0, kill_after="saved 6")
    assert rc == -signal.SIGKILL, (rc, out, err[-3000:])
    assert not os.path.exists(f"{folder}.final.npz")
    # Resumed at 6, saves 9, killed inside the commit of 12: its temporary folder stays.
    rc, out, err = run_loop(folder, die_at=2)
    assert rc == -signal.SIGKILL, (rc, out, err[-3000:])
    assert out[:2] == ["start", "6"] and "9" in out and "12" not in out, out
    assert sorted(os.listdir(folder)) == [".tmp-step_12", "step_6", "step_9"]
    # Resumed at 9: the temporary folder is ignored and removed, the result is bitwise
    # the uninterrupted run's.
    rc, out, err = run_loop(folder)
    assert rc == 0, err[-3000:]
    assert out[:2] == ["start", "9"] and out[-1] == "done", out
    assert sorted(os.listdir(folder)) == ["step_12", "step_9"]
    final, reference = np.load(f"{folder}.final.npz"), np.load(f"{folder}.reference.npz")
    assert sorted(final.files) == sorted(reference.files) and len(final.files) == 5
    for name in final.files:
        assert final[name].tobytes() == reference[name].tobytes(), name
    assert int(final["['step']"]) == 12


# Two processes of one jax.distributed job (2 CPU devices each), the model axis sharded
# over all 4: every process saves its shards, process 0 commits, both restore onto the
# global sharding and both skip the same damaged checkpoint.
MULTI = textwrap.dedent(
    """
    import os, sys, warnings
    import jax
    pid, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", 2, pid)
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxreg.grid import Checkpointer

    mesh = Mesh(np.array(jax.devices()), ("model",))
    models, replicated = NamedSharding(mesh, P("model")), NamedSharding(mesh, P())
    host = lambda s: np.arange(32, dtype=np.float32).reshape(8, 4) * s
    def make(s):
        return {"w": jax.make_array_from_callback((8, 4), models, lambda i: host(s)[i]),
                "step": jax.make_array_from_callback((), replicated, lambda i: np.int32(s))}

    ckpt = Checkpointer(folder, fingerprint="two-processes")
    assert ckpt.restore(make(0)) is None
    for s in (1, 2, 3):
        ckpt.save(make(s), s)
    assert ckpt.steps() == [3, 2]
    state, step = ckpt.restore(make(0))
    assert step == 3 and state["w"].sharding == models
    assert np.array_equal(multihost_utils.process_allgather(state["w"], tiled=True), host(3))
    multihost_utils.sync_global_devices("restored")
    if pid == 0:
        with open(os.path.join(folder, "step_3", "state", "_sharding"), "r+b") as f:
            f.truncate(10)
    multihost_utils.sync_global_devices("damaged")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, step = ckpt.restore(make(0))
    assert step == 2 and len(caught) == 1 and "step_3" in str(caught[0].message)
    assert np.array_equal(multihost_utils.process_allgather(state["w"], tiled=True), host(2))
    print("ok", pid, flush=True)
    """
)


def test_two_processes_save_and_restore_their_shards(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = child_env(devices=2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI, str(i), str(port), str(tmp_path / "ckpt")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in results]
    assert [f"ok {i}" in out for i, (out, _) in enumerate(results)] == [True, True], results
