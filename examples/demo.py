"""Demo: one compiled program trains an MLP on MNIST-1D at several dropout rates at once.

The dropout rate is a traced array, so ``jax.vmap`` over rates turns a grid of
regularization settings into a single jit-compiled training loop (flax's Dropout cannot
take a traced rate). Prints a table of test accuracy per rate, and checks that jaxreg's
mask equals flax's for the same key.

Run: python examples/demo.py  (about a minute on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import itertools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from mnist1d.data import get_dataset_args, make_dataset

import jaxreg


def init_mlp(key, sizes):
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=False
    ):
        w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)
        params.append({"kernel": w, "bias": jnp.zeros(n_out)})
    return params


def mlp(params, x, key, rate):
    keys = jax.random.split(key, len(params) - 1)
    for layer, k in zip(params[:-1], keys, strict=False):
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
        x = jaxreg.dropout(k, x, rate=rate)
    return x @ params[-1]["kernel"] + params[-1]["bias"]


def train(rate, key, data, steps, batch):
    init_key, loop_key = jax.random.split(key)
    params = init_mlp(init_key, (40, 256, 256, 10))
    opt = optax.adam(1e-3)
    x, y = jnp.asarray(data["x"], jnp.float32), jnp.asarray(data["y"])

    def loss_fn(p, xb, yb, k):
        logits = mlp(p, xb, k, rate)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, k):
        p, s = carry
        k_batch, k_drop = jax.random.split(k)
        idx = jax.random.randint(k_batch, (batch,), 0, x.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx], k_drop)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(
        step, (params, opt.init(params)), jax.random.split(loop_key, steps)
    )
    return params, losses


def accuracy(params, x, y):
    logits = mlp(params, jnp.asarray(x, jnp.float32), jax.random.key(0), 0.0)
    return jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5])
    args = parser.parse_args()

    data = make_dataset(get_dataset_args())  # generated locally, no download
    rates = jnp.asarray(args.rates, jnp.float32)

    run = jax.jit(
        jax.vmap(lambda r: train(r, jax.random.key(0), data, args.steps, args.batch)),
    )
    start = time.perf_counter()
    params, losses = jax.block_until_ready(run(rates))
    elapsed = time.perf_counter() - start
    evaluate = jax.vmap(accuracy, in_axes=(0, None, None))
    train_acc = evaluate(params, data["x"], data["y"])
    test_acc = evaluate(params, data["x_test"], data["y_test"])

    print(f"MNIST-1D, MLP 40-256-256-10, Adam 1e-3, {args.steps} steps, batch {args.batch}")
    print(f"{len(args.rates)} dropout rates trained as one vmapped program in {elapsed:.1f} s\n")
    print("| dropout rate | final train loss | train acc | test acc |")
    print("|---|---|---|---|")
    for i, r in enumerate(args.rates):
        final = float(losses[i, -100:].mean())
        print(f"| {r:.2f} | {final:.3f} | {float(train_acc[i]):.3f} | {float(test_acc[i]):.3f} |")

    x = jax.random.normal(jax.random.key(1), (4, 256))
    ours = jaxreg.dropout(jax.random.key(2), x, rate=0.3)
    theirs = nn.Dropout(0.3, deterministic=False).apply({}, x, rng=jax.random.key(2))
    same = bool(np.array_equal(np.asarray(ours), np.asarray(theirs)))
    print(f"\njaxreg.dropout == flax.linen.Dropout for the same key: {same}")


if __name__ == "__main__":
    main()
