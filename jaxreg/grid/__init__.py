"""Train a regularization grid as one compiled, sharded program.

``import jaxreg.grid as jg``. Every model of a hyperparameter grid lies on one leading
axis, its hyperparameters are traced per-model scalars (one compile for the whole grid),
steps run in compiled chunks (one XLA loop each), and the model axis is split over every
device of every process with no communication in the training step. Depends on jax,
numpy and optax only; ``import jaxreg`` does not import it.

The user gives one model's pure functions::

    init(key, hparams) -> params                       # any pytree
    loss(params, hparams, batch, key) -> loss | (loss, aux)   # a scalar on a minibatch
    optimizer(hparams) -> optax.GradientTransformation # from traced values

and the engine does the rest::

    grid = jg.product(rate=[0.0, 0.3], weight_decay=[0.0, 1e-3], seed=[0, 1, 2])
    trainer = jg.Trainer(init=init, loss=loss, optimizer=optimizer, batch_size=128)
    state = trainer.train(trainer.init_state(grid, data), data, steps=2000)
    error = trainer.evaluate(state, test_data, {"error": error_fn})["error"]
    table = grid.reshape(error).mean(axis=grid.axes.index("seed"))

Key rule: model ``i`` draws everything from ``jax.random.key(seed_i)`` and the step
(``fold_in(key, 0)`` initialises; ``fold_in(fold_in(key, 1), step)`` splits into the
minibatch key and the key ``loss`` gets), so models sharing a seed share their
initialisation, data order and masks, and a model trained alone equals its grid row.

Recipes (a plain function of a params pytree, a ``flax.linen`` Module applied with
``rngs``, an NNX Module through ``nnx.split``/``nnx.merge``), each taking its dropout
rate from ``hparams``: ``docs/grid.md``, whose code runs in the tests.
"""

from jaxreg.grid._engine import Plan as Plan
from jaxreg.grid._grids import Grid as Grid
from jaxreg.grid._grids import product as product
from jaxreg.grid._grids import rows as rows
from jaxreg.grid._state import GridState as GridState
from jaxreg.grid._trainer import Trainer as Trainer

__all__ = ["Grid", "GridState", "Plan", "Trainer", "product", "rows"]
