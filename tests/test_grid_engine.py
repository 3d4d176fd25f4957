"""jaxreg.grid engine: K at once == K alone, map == vmap, resume, early stopping, NaN
isolation, subsets, evaluation, the automatic strategy (one CPU device; several devices
and processes: test_grid_devices.py).

One tiny MLP with dropout; the trainers are module-level so their compiled chunks are
shared between tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg
import jaxreg.grid as jg

N, D, C = 64, 8, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, D)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 1).astype(np.int32)
DATA = {"x": X, "y": Y}


def init(key, hp):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (D, 16)) / np.sqrt(D),
        "b1": jnp.zeros(16),
        "w2": jax.random.normal(k2, (16, C)) / 4.0,
        "b2": jnp.zeros(C),
    }


def logits(params, hp, x, key=None):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    if key is not None:
        h = jaxreg.dropout(key, h, rate=hp["rate"])
    return h @ params["w2"] + params["b2"]


def loss(params, hp, batch, key):
    out = logits(params, hp, batch["x"], key)
    value = optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).mean()
    return value, {"batch_error": jnp.mean(jnp.argmax(out, -1) != batch["y"])}


def error(params, hp, batch):
    return (jnp.argmax(logits(params, hp, batch["x"]), -1) != batch["y"]).astype(jnp.float32)


def xent(params, hp, batch):
    out = logits(params, hp, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(out, batch["y"])


def optimizer(hp):
    return optax.adamw(hp["lr"], weight_decay=hp["decay"])


def trainer(**kw):
    args = dict(init=init, loss=loss, optimizer=optimizer, batch_size=8, chunk_steps=3)
    return jg.Trainer(**{"strategy": "vmap", **args, **kw})


VMAP, MAP4 = trainer(), trainer(strategy="map", group_size=4)
GRID = jg.product(rate=[0.0, 0.5], lr=[0.01], decay=[0.0, 1e-2], seed=[0, 1])  # 8 models


def train(t, grid, steps=6, **kw):
    return t.train(t.init_state(grid, DATA), DATA, steps=steps, **kw)


@pytest.fixture(scope="module")
def reference():
    return train(VMAP, GRID)


def assert_close(a, b, rtol=1e-6):
    """Equal to ``rtol`` (0: bit for bit)."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if rtol == 0:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol / 10)


def row(tree, i):
    return jax.tree.map(lambda a: np.asarray(a)[i], tree)


def test_k_models_at_once_equal_each_trained_alone(reference):
    fresh = VMAP.init_state(GRID, DATA)
    seeds = GRID.hparams["seed"]
    for i in range(1, len(GRID)):  # common random numbers: one seed, one initialisation
        same = jax.tree.map(lambda a, i=i: np.array_equal(a[i], a[i % 2]), fresh.params)
        assert all(jax.tree.leaves(same)) == (seeds[i] == seeds[i % 2])
    # 1e-6 relative: XLA may lower a batch of 1 differently from a batch of 8 (bit for
    # bit on some CPUs, a last-bit difference on others).
    for i in range(len(GRID)):
        alone = train(VMAP, GRID.take([i]))
        assert_close(row(alone.params, 0), row(reference.params, i))
        assert_close(row(alone.opt_state, 0), row(reference.opt_state, i))
    assert np.asarray(reference.step).tolist() == [6] * 8
    assert np.all(np.isfinite(np.asarray(reference.loss)))
    assert reference.aux["batch_error"].shape == (8,)


def test_map_in_groups_equals_vmap_bit_for_bit(reference):
    got = train(MAP4, GRID)  # 2 groups of 4 (map one by one: test_grid_devices.py)
    assert_close(got.params, reference.params, rtol=0)
    assert_close((got.loss, got.aux), (reference.loss, reference.aux), rtol=0)


def test_resume_from_a_chunk_equals_uninterrupted_and_callback_counts_chunks(reference):
    seen = []
    half = VMAP.train(VMAP.init_state(GRID, DATA), DATA, steps=3)
    before = jax.tree.map(np.asarray, half)
    done = VMAP.train(
        half, DATA, steps=6, callback=lambda s, c: seen.append((c, s.to_host(s.step)))
    )
    assert [c for c, _ in seen] == [1] and seen[0][1].tolist() == [6] * 8
    for a, b in zip(jax.tree.leaves(done), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(half), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)  # train leaves its input alone


def test_invalid_traced_hyperparameter_turns_only_its_row_nan(reference):
    bad = train(VMAP, jg.product(rate=[0.0, 1.5], lr=[0.01], decay=[0.0, 1e-2], seed=[0, 1]))
    loss = np.asarray(bad.loss)
    assert np.all(np.isnan(loss[4:])) and np.all(np.isfinite(loss[:4]))
    for a, b in zip(jax.tree.leaves(bad.params), jax.tree.leaves(reference.params), strict=True):
        assert np.all(np.isnan(np.asarray(a)[4:]))
        np.testing.assert_array_equal(np.asarray(a)[:4], np.asarray(b)[:4])
    # A NaN placed in a traced hyperparameter of the state: only model 1 is poisoned.
    state = VMAP.init_state(GRID, DATA)
    state = state._replace(hparams={**state.hparams, "lr": state.hparams["lr"].at[1].set(jnp.nan)})
    got = VMAP.train(state, DATA, steps=6)
    p = np.asarray(got.params["w1"])
    assert np.all(np.isnan(p[1])) and np.all(np.isfinite(np.delete(p, 1, 0)))
    np.testing.assert_array_equal(
        np.delete(p, 1, 0), np.delete(np.asarray(reference.params["w1"]), 1, 0)
    )


def test_early_stopping_freezes_exactly_at_its_step():
    # Model 0's validation value never improves after its first evaluation (lr 0.01 but
    # a constant value); model 1's is its validation loss, which falls.
    def validation(params, hp, batch):
        return jnp.where(hp["flat"], 1.0, jnp.mean(xent(params, hp, batch)))

    t = trainer(validation=validation, patience=2)
    grid = jg.product(flat=[True, False], rate=[0.0], lr=[0.01], decay=[0.0])
    seen = {}
    state = t.init_state(grid, DATA)
    state = t.train(state, DATA, steps=18, validation_data=DATA,
                    callback=lambda s, c: seen.setdefault(c, s.to_host()))  # fmt: skip
    host = state.to_host()
    # Evaluations after steps 3 (best), 6, 9: two without improvement -> stops at step 9.
    assert host.active.tolist() == [False, True]
    assert host.stop_step.tolist() == [9, -1] and host.best_step[0] == 3
    assert host.bad_evals[0] == 2 and host.step.tolist() == [18, 18]
    for a, b, c in zip(jax.tree.leaves(host.params), jax.tree.leaves(seen[2].params),
                       jax.tree.leaves(seen[1].params), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a[0], b[0])  # frozen since step 9
        assert not np.array_equal(b[0], c[0])  # it still trained up to step 9
        assert not np.array_equal(a[1], b[1])  # model 1 trains on
    for a, b in zip(
        jax.tree.leaves(host.opt_state), jax.tree.leaves(seen[2].opt_state), strict=True
    ):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(
        jax.tree.leaves(host.best_params), jax.tree.leaves(seen[0].params), strict=True
    ):
        np.testing.assert_array_equal(a[0], b[0])  # best = step 3
    assert host.best_step[1] == 18 and host.best_metric[1] < seen[0].best_metric[1]
    best = t.evaluate(state, DATA, {"loss": xent}, best=True)["loss"]
    np.testing.assert_allclose(best[1], host.best_metric[1], rtol=1e-6)


def test_subsets_and_evaluation_in_batches():
    poisoned = {"x": X.copy(), "y": Y}
    poisoned["x"][N // 2 :] = np.nan
    halves = [np.arange(N), np.arange(N // 2)]
    grid = jg.product(subset=[0, 1], rate=[0.3], lr=[0.01], decay=[0.0])
    state = VMAP.train(VMAP.init_state(grid, DATA), poisoned, steps=6, subsets=halves)
    w = np.asarray(state.params["w1"])
    assert np.all(np.isnan(w[0])) and np.all(np.isfinite(w[1]))  # model 1 never saw NaN
    # Evaluation in batches of 24 (24 + 24 + 16), and on per-model subsets, against numpy.
    metrics = {"error": error, "xent": xent}
    params = state.to_host(state.params)
    hp = {"rate": 0.0}
    want = {
        k: np.array([np.mean(f(row(params, i), hp, DATA)) for i in range(2)])
        for k, f in metrics.items()
    }
    batched = VMAP.evaluate(state, DATA, metrics, batch_size=24)
    for k in metrics:
        np.testing.assert_allclose(batched[k], want[k], rtol=1e-6)
    parts = [np.arange(N // 2, N), np.arange(5)]
    on_parts = VMAP.evaluate(state, DATA, {"xent": xent}, subsets=parts)["xent"]
    for i, part in enumerate(parts):
        sub = {k: v[part] for k, v in DATA.items()}
        np.testing.assert_allclose(on_parts[i], np.mean(xent(row(params, i), hp, sub)), rtol=1e-6)


def test_auto_measures_each_strategy_records_its_choice_and_a_resume_keeps_it(reference):
    t = trainer(strategy="auto")
    state = t.init_state(GRID, DATA)
    plan = t.plan(state, DATA)
    assert set(plan.timings) == {"vmap", "map(group_size=1)"}
    assert all(v > 0 for v in plan.timings.values())
    half = t.train(state, DATA, steps=3)
    assert np.asarray(half.plan).tolist() == [plan.code] * 8
    # A resumed state keeps its plan (no new probe), even in another trainer.
    again = trainer(strategy="auto")
    assert again.plan(half, DATA) == plan._replace(timings={})
    done = again.train(half, DATA, steps=6)
    # vmap is the reference; map one by one rounds differently (no model axis).
    assert_close(done.params, reference.params, rtol=0 if plan.strategy == "vmap" else 1e-4)


def loss_with_step(params, hp, batch, key):
    # The rate follows the step (a schedule inside the loss); aux records the step seen.
    rate = hp["rate"] * jnp.minimum(hp["step"].astype(jnp.float32) / 4.0, 1.0)
    out = logits(params, {"rate": rate}, batch["x"], key)
    value = optax.softmax_cross_entropy_with_integer_labels(out, batch["y"]).mean()
    return value, {"step": hp["step"].astype(jnp.float32), "rate": rate}


def test_loss_sees_the_step_and_step_is_a_reserved_name():
    t = trainer(loss=loss_with_step)
    grid = jg.product(rate=[0.5], lr=[0.01], decay=[0.0])
    state = train(t, grid, steps=6)  # chunks of 3: the last chunk runs steps 3, 4, 5
    np.testing.assert_array_equal(state.to_host(state.aux["step"]), [4.0])
    np.testing.assert_allclose(state.to_host(state.aux["rate"]), [0.5 * (0.75 + 1 + 1) / 3])
    with pytest.raises(ValueError, match="must not be 'step'"):
        jg.product(step=[0, 1])
    with pytest.raises(ValueError, match="must not be 'step'"):
        jg.rows([{"step": 1}])
