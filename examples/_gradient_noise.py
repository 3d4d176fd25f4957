"""Gradient-noise scale of an MLP from per-example gradient moments (findings helper).

``gradient_moments`` gives, per model of a grid, the moments of the per-example
gradients of ``_common.mlp``'s cross-entropy with and without dropout masks, from one
backward pass per model: a dense layer's per-example gradient is the outer product of
its input and the loss gradient at its pre-activation, so squared norms and inner
products need no per-example gradient in memory. ``noise_stats`` turns them into
``tr(Sigma)`` and ``|G|^2`` for the simple noise scale ``B_simple = tr(Sigma) / |G|^2``
(McCandlish et al. 2018, "An empirical model of large-batch training").
``tests/test_findings_new_a.py`` checks the moments against ``jax.vmap(jax.grad)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxreg


def _forward(params, x, key, rate, eps):
    """One example through ``mlp`` (same layers, key split and dropout calls), with an
    additive ``eps`` on every pre-activation; returns the logits and each layer's input."""
    hidden = params[:-1]
    keys = jax.random.split(key, len(hidden)) if key is not None else [None] * len(hidden)
    inputs = []
    for layer, k, e in zip(hidden, keys, eps[:-1], strict=True):
        inputs.append(x)
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"] + e)
        if k is not None:
            x = jaxreg.dropout(k, x, rate=rate)
    inputs.append(x)
    return x @ params[-1]["kernel"] + params[-1]["bias"] + eps[-1], inputs


def _factors(params, rate, x, y, keys):
    """Per-example gradient factors: each dense layer's gradient for example i is
    ``outer(a[i], d[i])`` (kernel) and ``d[i]`` (bias), with ``a`` the layer's input
    and ``d`` the loss gradient at its pre-activation (the loss's gradient with
    respect to ``eps``); one backward pass gives them for every example."""
    eps = [jnp.zeros((x.shape[0], layer["bias"].shape[0])) for layer in params]

    def total(eps):
        def one(xi, yi, ki, ei):
            logits, inputs = _forward(params, xi, ki, rate, ei)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yi), inputs

        losses, inputs = jax.vmap(one, (0, 0, None if keys is None else 0, 0))(x, y, keys, eps)
        return losses.sum(), inputs

    deltas, inputs = jax.grad(total, has_aux=True)(eps)
    return inputs, deltas


@functools.partial(jax.jit, static_argnames="repeats")
def gradient_moments(params, rates, x, y, draw_seed, *, repeats):
    """Per model, moments of the per-example gradients ``g[i, r]`` (example i of ``x``,
    mask draw r), without forming them.

    Returns ``(mean2, s2, w, det_mean2, det_s2)`` per model: with masks, the squared
    norm of the mean gradient over the ``n * repeats`` draws, ``s2 = sum |g|^2`` and
    ``w = sum_i sum_r |g[i, r] - mean_r g[i]|^2`` (the masks' own variance); without
    masks, the squared norm of the mean gradient and ``sum |g|^2``. Uses
    ``|g|^2 = sum over layers (|a|^2 + 1) |d|^2`` and inner products likewise.
    """
    n = x.shape[0]
    xr, yr = jnp.repeat(x, repeats, 0), jnp.repeat(y, repeats, 0)

    def moments(inputs, deltas, groups):
        total = sum(
            jnp.sum((a.T @ d) ** 2) + jnp.sum(d.sum(0) ** 2)
            for a, d in zip(inputs, deltas, strict=True)
        )
        s2 = sum(
            jnp.sum((jnp.sum(a**2, 1) + 1) * jnp.sum(d**2, 1))
            for a, d in zip(inputs, deltas, strict=True)
        )
        m = inputs[0].shape[0]
        if groups == 1:
            return total / m**2, s2, 0.0
        gram = sum(  # (n, r, r): inner products of one example's gradients over draws
            (jnp.einsum("ira,isa->irs", a.reshape(n, groups, -1), a.reshape(n, groups, -1)) + 1)
            * jnp.einsum("ira,isa->irs", d.reshape(n, groups, -1), d.reshape(n, groups, -1))
            for a, d in zip(inputs, deltas, strict=True)
        )
        w = s2 - jnp.sum(gram) / groups  # sum_i [sum_r |g_ir|^2 - R |mean_r g_ir|^2]
        return total / m**2, s2, w

    def model(args):
        p, rate = args
        key = jax.random.key(draw_seed)  # every model the same masks (paired)
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), repeats))(
            jnp.arange(n)
        ).reshape(n * repeats)
        mean2, s2, w = moments(*_factors(p, rate, xr, yr, keys), repeats)
        det_mean2, det_s2, _ = moments(*_factors(p, rate, x, y, None), 1)
        return mean2, s2, w, det_mean2, det_s2

    return jax.lax.map(model, (params, rates))


def noise_stats(moments, n, repeats):
    """Per model: tr Sigma and |G|^2 with masks, the masks' share of tr Sigma, and
    tr Sigma and |G|^2 without masks.

    ``G`` is the expected gradient of one (example, mask) draw over the training set
    and the masks; ``Sigma`` the covariance of that draw. Without masks every
    training example is used once, so ``|G|^2`` is exact and ``tr Sigma`` is the
    population variance. With masks the mean of the ``n * repeats`` draws still holds
    mask noise: ``|mean|^2`` overestimates ``|G|^2`` by (masks' variance) / (n repeats),
    which is subtracted (unbiased, so it can come out negative when the noise swamps
    the signal); ``tr Sigma = E|g|^2 - |G|^2``. At rate 0 both versions agree.
    """
    mean2, s2, w, det_g2, det_s2 = (np.asarray(a, np.float64) for a in moments)
    m = n * repeats
    mask_var = np.maximum(w, 0.0) / (n * (repeats - 1))
    g2 = mean2 - mask_var / m
    trace = s2 / m - g2  # E|g|^2 - |G|^2 over one (example, mask) draw
    det_trace = det_s2 / n - det_g2
    return trace, g2, mask_var / trace, det_trace, det_g2
