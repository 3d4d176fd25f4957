"""A flax.nnx MLP ensemble on MNIST-1D: one vmapped model per dropout rate.

``jnnx.Dropout`` takes its rate as model state (an ``nnx.Variable``), so members with
different rates are one ``nnx.vmap``-ed model, trained by one compiled step
(``nnx.split_rngs`` gives each member its own dropout masks). The loss adds an L2
penalty over the kernels only (``jaxreg.kernels_only``); the optimizer chains Adam with
decoupled weight decay (``jaxreg.optax.decoupled_weight_decay``). Prints a table of
test accuracy per rate.

Run: python examples/nnx_mlp.py  (``--smoke``: a few seconds)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from mnist1d.data import get_dataset_args, make_dataset

import jaxreg
import jaxreg.optax
from jaxreg import nnx as jnnx


class MLP(nnx.Module):
    def __init__(self, rate, rngs: nnx.Rngs, hidden: int = 256):
        self.rate = nnx.Variable(rate)  # shared by both dropout layers; traced state
        self.layers = nnx.List(
            [nnx.Linear(40, hidden, rngs=rngs), nnx.Linear(hidden, hidden, rngs=rngs)]
        )
        self.drops = nnx.List([jnnx.Dropout(self.rate, rngs=rngs) for _ in range(2)])
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        for layer, drop in zip(self.layers, self.drops, strict=True):
            x = drop(jax.nn.relu(layer(x)))
        return self.out(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5])
    parser.add_argument("--smoke", action="store_true", help="tiny data and 20 steps")
    args = parser.parse_args()
    data_args = get_dataset_args()
    if args.smoke:
        data_args.num_samples, args.steps = 400, 20
    data = make_dataset(data_args)  # generated locally, no download
    x, y = jnp.asarray(data["x"], jnp.float32), jnp.asarray(data["y"])
    rates = jnp.asarray(args.rates, jnp.float32)

    @nnx.split_rngs(splits=len(args.rates))
    @nnx.vmap(in_axes=(0, 0))
    def create(rate, rngs):
        return MLP(rate, rngs)

    model = create(rates, nnx.Rngs(params=0, dropout=1))
    tx = optax.chain(optax.adam(1e-3), jaxreg.optax.decoupled_weight_decay(1e-4))
    opt = nnx.vmap(lambda m: nnx.Optimizer(m, tx, wrt=nnx.Param))(model)

    @nnx.jit
    @nnx.vmap(in_axes=(0, 0, None, None))
    def step(model, opt, xb, yb):
        def loss_fn(model):
            logits = model(xb)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            params = nnx.state(model, nnx.Param)
            return loss + jaxreg.l2_penalty(params, strength=1e-5, where=jaxreg.kernels_only)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    for k in jax.random.split(jax.random.key(2), args.steps):
        idx = jax.random.randint(k, (128,), 0, x.shape[0])
        losses = step(model, opt, x[idx], y[idx])

    model.eval()
    logits = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(
        model, jnp.asarray(data["x_test"], jnp.float32)
    )
    acc = jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data["y_test"]), axis=-1)
    print(
        f"MNIST-1D, nnx MLP ensemble of {len(args.rates)} (one vmapped model), {args.steps} steps"
    )
    print("| dropout rate | final train loss | test acc |")
    print("|---|---|---|")
    for r, loss, a in zip(args.rates, losses, acc, strict=True):
        print(f"| {r:.1f} | {float(loss):.3f} | {float(a):.3f} |")


if __name__ == "__main__":
    main()
