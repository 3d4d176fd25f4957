"""jaxreg.grid: grids (product, rows, reshape, CSV rows), bad input, lean imports."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxreg.grid as jg


def test_product_is_row_major_with_typed_columns():
    g = jg.product(rate=[0.0, 0.5], decay=[0, 1e-3, 1e-2], seed=[0, 1])
    assert (len(g), g.shape, g.axes, g.names) == (12, (2, 3, 2), ("rate", "decay", "seed"), g.axes)
    hp = g.hparams
    assert hp["rate"].dtype == np.float32 and hp["seed"].dtype == np.int32
    assert hp["rate"].tolist() == [0.0] * 6 + [0.5] * 6
    assert hp["seed"].tolist() == [0, 1] * 6
    np.testing.assert_array_equal(hp["decay"][:4], np.float32([0, 0, 1e-3, 1e-3]))
    cube = g.reshape(np.arange(12))
    assert cube.shape == (2, 3, 2) and cube[1, 2, 0] == 10
    assert g.reshape(np.zeros((12, 5))).shape == (2, 3, 2, 5)
    assert g.values("decay") == [0, 1e-3, 1e-2]


def test_rows_times_axes_rows_for_csv_take_and_fingerprint():
    paired = jg.rows([{"rate": 0.1, "lr": 1e-3}, {"rate": 0.5, "lr": 3e-4}], name="setting")
    g = jg.product(paired, seed=range(3), flag=[True, False])
    assert g.shape == (2, 3, 2) and g.axes == ("setting", "seed", "flag")
    assert g.hparams["flag"].dtype == bool and g.hparams["lr"].tolist()[-1] == np.float32(3e-4)
    table = g.rows(error=np.arange(12) / 10)
    assert list(table[0]) == ["rate", "lr", "seed", "flag", "error"]
    assert table[7] == {"rate": pytest.approx(0.5), "lr": pytest.approx(3e-4), "seed": 0,
                        "flag": False, "error": 0.7}  # fmt: skip
    sub = g.take([7, 0])
    assert len(sub) == 2 and sub.hparams["seed"].tolist() == [0, 0]
    for k in g.names:
        np.testing.assert_array_equal(sub.hparams[k], g.hparams[k][[7, 0]])
    assert g.fingerprint() == jg.product(paired, seed=[0, 1, 2], flag=[True, False]).fingerprint()
    assert g.fingerprint() != jg.product(paired, seed=[0, 1, 3], flag=[True, False]).fingerprint()
    assert g.values("setting")[1] == {"rate": 0.5, "lr": 3e-4}


BAD_GRIDS = [
    (lambda: jg.product(rate=[]), ValueError, "jaxreg.grid.product: rate must have at least one"),
    (lambda: jg.product(rate=[0.1, float("nan")]), ValueError, "grid.product: rate must be finite"),
    (lambda: jg.product(rate=[np.inf]), ValueError, "rate must be finite, got inf"),
    (lambda: jg.product(opt=["adam"]), TypeError, "grid.product: opt values must be Python num"),
    (lambda: jg.product(rate=0.5), TypeError, "grid.product: rate must be a sequence"),
    (lambda: jg.product(), ValueError, "grid.product: needs at least one axis"),
    (lambda: jg.product(jg.product(seed=[0]), seed=[1]), ValueError, "'seed' twice"),
    (lambda: jg.rows([{"a": 1}, {"b": 2}]), ValueError, "grid.rows: rows[1] must have the keys"),
    (lambda: jg.rows([]), ValueError, "jaxreg.grid.rows: rows must be a non-empty"),
    (lambda: jg.rows([{"a": float("nan")}]), ValueError, "must be finite"),
]


@pytest.mark.parametrize(("make", "exc", "message"), BAD_GRIDS)
def test_bad_grids_name_the_function_and_argument(make, exc, message):
    with pytest.raises(exc, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()


def _init(key, hp):
    return {"w": jax.random.normal(key, (3, 2))}


def _loss(params, hp, batch, key):
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)


DATA = {"x": np.ones((10, 3), np.float32), "y": np.zeros((10, 2), np.float32)}


def _trainer(**kw):
    args = dict(init=_init, loss=_loss, optimizer=lambda hp: optax.sgd(0.1), batch_size=4)
    return jg.Trainer(**{"strategy": "vmap", "chunk_steps": 1, **args, **kw})


def test_bad_trainer_input():
    grid = jg.product(seed=[0, 1])
    per_example = lambda p, hp, b, k: (b["x"] @ p["w"] - b["y"]) ** 2  # noqa: E731
    with pytest.raises(ValueError, match=r"jaxreg.grid.Trainer.init_state: loss must return a "
                       r"scalar or \(scalar, aux\), got shape \(4, 2\)"):  # fmt: skip
        _trainer(loss=per_example).init_state(grid, DATA)
    state = _trainer().init_state(grid, DATA)
    folds = jg.product(subset=[0, 1])
    with pytest.raises(
        ValueError, match=r"Trainer.train: batch_size 4 is larger than subsets\[1\]"
    ):
        _trainer().train(
            _trainer().init_state(folds, DATA), DATA, steps=1, subsets=[np.arange(10), [1, 2, 3]]
        )
    with pytest.raises(ValueError, match="Trainer.train: subsets needs a grid with an integer"):
        _trainer().train(state, DATA, steps=1, subsets=[np.arange(10)])
    with pytest.raises(ValueError, match="Trainer.train: batch_size 40 is larger than the 10"):
        _trainer(batch_size=40).train(state, DATA, steps=1)
    with pytest.raises(ValueError, match="Trainer.train: data must be arrays with one common"):
        _trainer().train(state, {"x": np.ones((10, 3)), "y": np.ones((9, 2))}, steps=1)
    with pytest.raises(ValueError, match="Trainer.train: steps must be a multiple"):
        _trainer(chunk_steps=2).train(state, DATA, steps=3)
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="jaxreg.grid.Trainer: mesh must have one axis"):
        _trainer(mesh=mesh)
    with pytest.raises(ValueError, match="jaxreg.grid.Trainer: strategy must be one of"):
        jg.Trainer(_init, _loss, lambda hp: optax.sgd(0.1), 4, strategy="pmap")
    with pytest.raises(ValueError, match="Trainer: patience needs a validation function"):
        _trainer(patience=3)


def test_import_is_lean_and_jaxreg_does_not_import_grid():
    code = (
        "import sys, jaxreg; assert 'jaxreg.grid' not in sys.modules; import jaxreg.grid; "
        "bad = [m for m in ('orbax', 'tqdm', 'matplotlib', 'flax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_trainer_fingerprint_follows_what_decides_the_results():
    grid = jg.product(rate=[0.0, 0.5], seed=[0, 1])
    a = _trainer().fingerprint(grid, DATA, extra={"lr": 1e-3})
    assert a == _trainer().fingerprint(grid, DATA, extra={"lr": 1e-3})  # a new trainer
    assert a == _trainer(strategy="map").fingerprint(grid, DATA, extra={"lr": 1e-3})
    others = [
        _trainer(batch_size=5).fingerprint(grid, DATA, extra={"lr": 1e-3}),
        _trainer(chunk_steps=2).fingerprint(grid, DATA, extra={"lr": 1e-3}),
        _trainer().fingerprint(grid.take([0, 1, 2]), DATA, extra={"lr": 1e-3}),
        _trainer().fingerprint(grid, {"x": DATA["x"][:5], "y": DATA["y"][:5]}, extra={"lr": 1e-3}),
        _trainer().fingerprint(grid, DATA, extra={"lr": 1e-2}),
        _trainer(loss=lambda p, hp, b, k: _loss(p, hp, b, k)).fingerprint(
            grid, DATA, extra={"lr": 1e-3}
        ),
    ]
    assert len({a, *others}) == 1 + len(others)
