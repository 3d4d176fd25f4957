"""A flax.linen MLP on MNIST-1D with jaxreg's layers: the one-import migration.

``from jaxreg import linen as jnn`` and ``jnn.Dropout(rate)`` where the model had
``nn.Dropout(rate)``; the training masks are flax's. The loss adds an L2 penalty over
the kernels only (``jaxreg.kernels_only``) and the optimizer chains Adam with decoupled
weight decay (``jaxreg.optax.decoupled_weight_decay``). Prints a table of test accuracy
with and without dropout.

Run: python examples/linen_mlp.py  (``--smoke``: a few seconds)
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from mnist1d.data import get_dataset_args, make_dataset

import jaxreg
import jaxreg.optax
from jaxreg import linen as jnn


class MLP(nn.Module):
    rate: float | jax.Array  # a traced rate: every rate shares one compiled step
    hidden: int = 256

    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(2):
            x = nn.relu(nn.Dense(self.hidden)(x))
            x = jnn.Dropout(self.rate)(x, deterministic=not train)
        return nn.Dense(10)(x)


def make_step(data, batch, opt):
    x, y = jnp.asarray(data["x"], jnp.float32), jnp.asarray(data["y"])

    def loss_fn(p, xb, yb, key, rate):
        logits = MLP(rate).apply({"params": p}, xb, train=True, rngs={"dropout": key})
        data_loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return data_loss + jaxreg.l2_penalty(p, strength=1e-5, where=jaxreg.kernels_only)

    @jax.jit
    def step(p, s, key, rate):
        k_batch, k_drop = jax.random.split(key)
        idx = jax.random.randint(k_batch, (batch,), 0, x.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx], k_drop, rate)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    return step


def train(step, opt, rate, data, steps, seed=0):
    model = MLP(rate)
    params = model.init(jax.random.key(seed), data["x"][:1], train=False)["params"]
    state = opt.init(params)
    for key in jax.random.split(jax.random.key(seed + 1), steps):
        params, state, loss = step(params, state, key, jnp.float32(rate))
    logits = model.apply({"params": params}, jnp.asarray(data["x_test"], jnp.float32), train=False)
    return float(loss), float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data["y_test"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny data and 20 steps")
    args = parser.parse_args()
    data_args = get_dataset_args()
    if args.smoke:
        data_args.num_samples, args.steps = 400, 20
    data = make_dataset(data_args)  # generated locally, no download
    print(f"MNIST-1D, linen MLP 40-256-256-10 with jnn.Dropout, Adam + decay, {args.steps} steps")
    print("| dropout rate | final train loss | test acc |")
    print("|---|---|---|")
    opt = optax.chain(optax.adam(1e-3), jaxreg.optax.decoupled_weight_decay(1e-4))
    step = make_step(data, 128, opt)
    for rate in (0.0, 0.3):
        loss, acc = train(step, opt, rate, data, args.steps)
        print(f"| {rate:.1f} | {loss:.3f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
