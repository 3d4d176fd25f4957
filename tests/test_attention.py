"""dot_product_attention (flax parity, traced rates, remat-safe masks), drop_head, drop_key.

The generic promises of drop_head and drop_key (keys, dtypes, rates, keep fractions)
are in the conformance table (ops.py); this file checks what is specific to attention.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxreg
from stats import assert_binomial


def rng(seed=42):
    """A fresh key (the suite runs JAX's key-reuse checker); same seed, same key value."""
    return jax.random.key(seed)


Q, K, V = (jax.random.normal(k, (2, 3, 16, 4, 8)) for k in jax.random.split(jax.random.key(0), 3))


def _qkv(dtype, batch=(2, 3)):
    """Query, key and value ``[*batch, 16, 4, 8]`` (batch (2, 3) or (2,))."""
    return tuple(
        a.reshape(-1, 16, 4, 8)[: int(np.prod(batch))].reshape((*batch, 16, 4, 8)).astype(dtype)
        for a in (Q, K, V)
    )


# --- bit for bit with flax -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_function_is_flax_bit_for_bit_under_jit(dtype):
    q, k, v = _qkv(dtype)

    @jax.jit
    def both(q, k, v, seed):
        out = {}
        for name, ref in (("linen", nn.dot_product_attention), ("nnx", nnx.dot_product_attention)):
            for bd in (True, False):
                kw = dict(dropout_rate=0.1, broadcast_dropout=bd)
                theirs = ref(q, k, v, dropout_rng=jax.random.key(seed), **kw)
                ours = jaxreg.dot_product_attention(q, k, v, dropout_rng=jax.random.key(seed), **kw)
                out[name, bd] = (theirs, ours)
        kw = dict(dropout_rate=0.1, force_fp32_for_softmax=True)  # a linen-only keyword
        theirs = nn.dot_product_attention(q, k, v, dropout_rng=jax.random.key(seed), **kw)
        ours = jaxreg.dot_product_attention(q, k, v, dropout_rng=jax.random.key(seed), **kw)
        out["linen fp32 softmax", True] = (theirs, ours)
        return out

    out = both(q, k, v, 42)
    for (name, bd), (theirs, ours) in out.items():
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} broadcast={bd}")
    assert not np.array_equal(out["linen", True][1], out["linen", False][1])


def test_without_dropout_linen_and_nnx_paths_are_flax_bit_for_bit():
    q, k, v = _qkv(jnp.float32, batch=(2,))
    mask = nn.make_causal_mask(jnp.ones((2, 16)))

    @jax.jit
    def pairs(q, k, v):
        out = [
            (
                jaxreg.dot_product_attention(q, k, v, mask=mask),
                nn.dot_product_attention(q, k, v, mask=mask),
            )
        ]
        # is_causal given: flax.nnx's path (jax.nn.dot_product_attention), and GQA.
        for kw in ({"is_causal": True}, {"is_causal": False, "mask": mask}):
            out.append(
                (
                    jaxreg.dot_product_attention(q, k, v, **kw),
                    nnx.dot_product_attention(q, k, v, **kw),
                )
            )
        kw = dict(dropout_rate=0.2, is_causal=True)
        k2, v2 = k[..., :2, :], v[..., :2, :]
        out.append(
            (
                jaxreg.dot_product_attention(q, k2, v2, dropout_rng=rng(), **kw),
                nnx.dot_product_attention(q, k2, v2, dropout_rng=rng(), **kw),
            )
        )
        return out

    for ours, theirs in pairs(q, k, v):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", [jnp.bfloat16], ids=["bf16"])  # f32: the function test
def test_linen_multi_head_attention_is_flax_bit_for_bit(dtype):
    x = jax.random.normal(jax.random.key(1), (2, 16, 32))
    kw = dict(num_heads=4, dropout_rate=0.1, dtype=dtype, broadcast_dropout=False)
    ref = nn.MultiHeadDotProductAttention(**kw)
    ours = nn.MultiHeadDotProductAttention(**kw, attention_fn=jaxreg.dot_product_attention)
    params = ref.init(jax.random.key(2), x, deterministic=True)

    @jax.jit
    def run(params):
        def apply(layer, det):
            return layer.apply(
                params, x, deterministic=det, rngs={"dropout": rng()}, sow_weights=True,
                mutable=["intermediates"],
            )  # fmt: skip

        return [(apply(ref, det), apply(ours, det)) for det in (False, True)]

    for theirs, ours_ in run(params):
        jax.tree.map(np.testing.assert_array_equal, ours_, theirs)  # outputs and sown weights


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_nnx_multi_head_attention_is_flax_bit_for_bit(dtype):
    x = jax.random.normal(jax.random.key(1), (2, 16, 32))

    def layer(**kw):
        return nnx.MultiHeadAttention(
            num_heads=4, in_features=32, dropout_rate=0.1, dtype=dtype, decode=False,
            rngs=nnx.Rngs(0, dropout=5), **kw,
        )  # fmt: skip

    ref, ours = layer(), layer(attention_fn=jaxreg.dot_product_attention)
    for det in (False, True, False):
        np.testing.assert_array_equal(ours(x, deterministic=det), ref(x, deterministic=det))

    def sow(module):
        return module(x, deterministic=False, sow_weights=True)

    captured = [nnx.capture(sow, nnx.Intermediate)(m) for m in (ours, ref)]
    jax.tree.map(np.testing.assert_array_equal, *captured)


# --- rates ---------------------------------------------------------------------------


@jax.jit
def _attend(q, k, v, rng, rate, head_rate=0.0, key_rate=0.0):
    return jaxreg.dot_product_attention(
        q, k, v, dropout_rng=rng, dropout_rate=rate, head_drop_rate=head_rate,
        key_drop_rate=key_rate,
    )  # fmt: skip


def test_traced_rate_works_where_flax_cannot():
    q, k, v = _qkv(jnp.float32, batch=(2,))
    for rate in (0.25, 0.5):  # exact in float32: equal to the Python rate's output
        np.testing.assert_array_equal(
            _attend(q, k, v, rng(), jnp.float32(rate)),
            jaxreg.dot_product_attention(q, k, v, dropout_rng=rng(), dropout_rate=rate),
        )
    rates = jnp.array([0.0, 0.5, 1.0])
    outs = jax.vmap(lambda r: _attend(q, k, v, rng(), r))(rates)
    np.testing.assert_allclose(outs[0], nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outs[2], 0.0)  # rate 1: every weight dropped
    with pytest.raises(jax.errors.TracerBoolConversionError):  # flax cannot
        jax.jit(lambda r: nn.dot_product_attention(q, k, v, dropout_rng=rng(), dropout_rate=r))(0.5)


def test_rate_one_gives_zeros_with_finite_gradients():
    q, k, v = _qkv(jnp.float32, batch=(2,))
    for rate in (1.0, jnp.float32(1.0)):
        grads = jax.grad(lambda q, r: jnp.sum(_attend(q, k, v, rng(), r)))(q, rate)
        np.testing.assert_array_equal(grads, 0.0)


def test_errors_are_clear():
    q, k, v = _qkv(jnp.float32, batch=(2,))
    with pytest.raises(TypeError, match=r"dot_product_attention: dropout_rng is None, but "):
        jaxreg.dot_product_attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match=r"dot_product_attention: head_drop_rate must be in"):
        jaxreg.dot_product_attention(q, k, v, head_drop_rate=1.5)
    with pytest.raises(ValueError, match="same depth"):
        jaxreg.dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="together"):
        jaxreg.dot_product_attention(q, k, v, qk_attn_weights_einsum=jnp.einsum)
    # Deterministic: no key needed, nothing dropped.
    np.testing.assert_array_equal(
        jaxreg.dot_product_attention(q, k, v, dropout_rate=0.5, head_drop_rate=0.5,
                                     deterministic=True),
        nn.dot_product_attention(q, k, v),
    )  # fmt: skip


# --- masks in the backward pass ------------------------------------------------------


def test_backward_variants_give_the_same_values_and_gradients():
    """low_memory (custom_vjp, the default) or autodiff's residuals, the mask stored or
    hashed again: one mask, the same values, the same gradients (rate included)."""
    q, k, v = _qkv(jnp.float32, batch=(2,))
    flags = [(True, False), (True, True), (False, False), (False, True)]
    variants = [dict(low_memory=lm, recompute_masks=rc) for lm, rc in flags]

    def loss(q, k, v, rate, kw):
        out = jaxreg.dot_product_attention(
            q, k, v, dropout_rng=rng(), dropout_rate=rate, broadcast_dropout=False, **kw
        )
        return jnp.sum(out**2)

    @jax.jit
    def grads(q, k, v, rate):
        return [jax.value_and_grad(loss, (0, 1, 2, 3))(q, k, v, rate, kw) for kw in variants]

    (value, grad), *others = grads(q, k, v, jnp.float32(0.3))
    for value_r, grad_r in others:
        np.testing.assert_array_equal(value, value_r)  # the same mask
        for g, g_r in zip(grad, grad_r, strict=True):  # up to XLA's fusion choices
            np.testing.assert_allclose(g, g_r, rtol=1e-5, atol=1e-5)
    assert float(grad[3]) != 0.0  # the rate's gradient (through 1 / (1 - rate))
    # Forward mode needs low_memory=False (custom_jvp, not custom_vjp).
    kw = dict(low_memory=False, recompute_masks=True)
    tangent = jax.jvp(lambda q: loss(q, k, v, 0.3, kw), (q,), (jnp.ones_like(q),))[1]
    assert np.isfinite(tangent)


def test_stored_mask_uses_less_memory_than_flax():
    """value_and_grad temp memory (XLA's compiled memory_analysis): one byte per mask
    element against flax's float multiplier and dropped weights (bench/attention_memory.py)."""
    q, k, v = (jax.random.normal(kk, (2, 128, 4, 16)) for kk in jax.random.split(rng(), 3))

    def temp(fn):
        def loss(q, k, v):
            return jnp.sum(
                fn(q, k, v, dropout_rng=rng(), dropout_rate=0.1, broadcast_dropout=False)
            )

        compiled = jax.jit(jax.value_and_grad(loss, (0, 1, 2))).lower(q, k, v).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp(jaxreg.dot_product_attention) < temp(nn.dot_product_attention)


# --- DropHead ------------------------------------------------------------------------


def test_attention_head_drop_is_drop_head_on_the_output():
    q, k, v = _qkv(jnp.float32, batch=(2, 3))
    out = _attend(q, k, v, rng(), 0.0, 0.5)
    plain = nn.dot_product_attention(q, k, v)
    key = jax.random.split(rng(), 3)[1]
    expected = jaxreg.drop_head(key, plain.reshape(6, 16, 4, 8), rate=0.5, head_axis=-2)
    np.testing.assert_array_equal(out != 0, expected.reshape(out.shape) != 0)
    np.testing.assert_allclose(out, expected.reshape(out.shape), rtol=1e-5, atol=1e-6)
    # Whole (example, head) slices: all kept (scaled by 2) or all zero; both occur.
    kept = np.asarray(out != 0).reshape(6, 16, 4, 8)
    per_head = kept.all(axis=(1, 3)) | ~kept.any(axis=(1, 3))
    assert per_head.all() and 0 < kept[:, 0, :, 0].mean() < 1
    np.testing.assert_allclose(
        np.asarray(out)[out != 0], 2 * np.asarray(plain)[out != 0], 1e-5, 1e-6
    )


def test_drop_head_validates_axes():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"drop_head: head_axis must not be 0"):
        jaxreg.drop_head(rng(), x, rate=0.5, head_axis=0)
    with pytest.raises(ValueError, match=r"drop_head: head_axis"):
        jaxreg.drop_head(rng(), x, rate=0.5, head_axis=2)


@pytest.mark.slow
def test_drop_head_heads_are_independent_within_an_example():
    """P(head 0 and head 1 both kept) = (1 - r)^2, 5 sigma over 2e5 examples; a sampler
    drawing once per example (all heads together) gives 1 - r and is rejected."""
    rate, n = 0.3, 200_000
    kept = np.asarray(jaxreg.drop_head(rng(), jnp.ones((n, 4, 2)), rate=rate, head_axis=1) != 0)
    kept = kept[:, :, 0]
    both = int((kept[:, 0] & kept[:, 1]).sum())
    assert_binomial(both, n, (1 - rate) ** 2)
    assert_binomial(int(kept.sum()), kept.size, 1 - rate)
    shared = np.asarray(jaxreg.dropout(rng(), jnp.ones((n, 1)), rate=rate) != 0)[:, 0]
    with pytest.raises(AssertionError, match="z ="):  # negative control
        assert_binomial(int((shared & shared).sum()), n, (1 - rate) ** 2)


# --- DropKey -------------------------------------------------------------------------


def test_drop_key_masks_to_minus_inf_and_keeps_row_maxima():
    logits = jax.random.normal(rng(), (3, 4, 5, 6))
    y = np.asarray(jaxreg.drop_key(jax.random.key(1), logits, rate=0.5))
    dropped = np.isneginf(y)
    np.testing.assert_array_equal(y[~dropped], np.asarray(logits)[~dropped])
    assert 0.3 < dropped.mean() < 0.7
    # Rate 1 (Python or traced): exactly each row's (first) maximum is kept.
    best = np.argmax(np.asarray(logits), axis=-1)
    for rate in (1.0, jnp.float32(1.0)):
        y = np.asarray(jax.jit(jaxreg.drop_key)(jax.random.key(2), logits, rate=rate))
        np.testing.assert_array_equal(np.argmax(np.isfinite(y), -1), best)
        assert (np.isfinite(y).sum(-1) == 1).all()
    # Ties keep only the first maximum; a traced invalid rate gives NaN.
    y = jaxreg.drop_key(None, jnp.zeros((2, 3)), rate=1.0)
    np.testing.assert_array_equal(y, [[0, -np.inf, -np.inf]] * 2)
    bad = jax.jit(jaxreg.drop_key)(jax.random.key(3), logits, rate=jnp.float32(1.5))
    assert np.isnan(bad).all()


def test_drop_key_in_causal_attention_never_gives_nan_nor_reveals_masked_keys():
    """At rate 0.9 most early rows lose every allowed key: they keep their best allowed
    key (flax's finfo.min fill leaves masked logits below), so query 0 sees value 0."""
    q, k, v = _qkv(jnp.float32, batch=(2,))
    mask = nn.make_causal_mask(jnp.ones((2, 16)))

    def loss(q):
        out = jaxreg.dot_product_attention(
            q, k, v, mask=mask, dropout_rng=rng(), dropout_rate=0.1, key_drop_rate=0.9
        )
        return jnp.sum(out), out

    (_, out), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(q)
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    # Query 0 may only see key 0: its output is value 0, or 0 where its weight dropped.
    first, v0 = np.asarray(out[:, 0]), np.asarray(v[:, 0]) / np.float32(0.9)
    for b, h in np.ndindex(2, 4):
        if first[b, h].any():
            np.testing.assert_allclose(first[b, h], v0[b, h], rtol=1e-6)


@pytest.mark.slow
def test_drop_key_weights_statistics():
    """Inside attention (no weight dropout): a weight is zero iff its logit was dropped,
    with probability r (5 sigma, n = 1e6 weights); a wrong rate is rejected."""
    rate = 0.2
    q, k = (jax.random.normal(kk, (8, 128, 8, 4)) for kk in jax.random.split(rng(), 2))
    v = jnp.eye(128)[None, :, None, :].repeat(8, 0).repeat(8, 2)  # out[..., j] = weight j
    out = jax.jit(
        lambda q: jaxreg.dot_product_attention(
            q, k, v, dropout_rng=rng(), dropout_rate=0.5, key_drop_rate=rate, drop_weights=False
        )
    )(q)
    zeros = int((np.asarray(out) == 0).sum())
    assert out.size >= 1_000_000
    assert_binomial(zeros, out.size, rate)
    np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, rtol=1e-5)  # rows renormalised
    with pytest.raises(AssertionError, match="z ="):  # negative control: 0.205 (12 sigma)
        assert_binomial(zeros, out.size, 0.205)


# --- a small transformer trains with DropHead and DropKey ----------------------------


class _Block(nn.Module):
    @nn.compact
    def __call__(self, tokens, train):
        attention = functools.partial(
            jaxreg.dot_product_attention, head_drop_rate=0.2, key_drop_rate=0.1, drop_weights=False
        )
        x = nn.Embed(16, 16)(tokens) + self.param("pos", nn.initializers.normal(0.1), (8, 16))
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=4, dropout_rate=0.1, attention_fn=attention, deterministic=not train
        )(nn.LayerNorm()(x))
        x = x + nn.Dense(16)(nn.gelu(nn.Dense(32)(nn.LayerNorm()(x))))
        return nn.Dense(16)(nn.LayerNorm()(x))


def test_small_transformer_trains_with_drop_head_and_drop_key():
    """Task: output the sequence's first token at every position (needs attention)."""
    model, opt = _Block(), optax.adam(1e-2)
    tokens = jax.random.randint(jax.random.key(0), (32, 8), 0, 16)
    targets = jnp.broadcast_to(tokens[:, :1], tokens.shape)

    def loss(params, rng, train):
        logits = model.apply(params, tokens, train=train, rngs={"dropout": rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def train():
        params = model.init(jax.random.key(1), tokens, train=False)

        def step(carry, rng):
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params, rng, True)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), value

        rngs = jax.random.split(jax.random.key(2), 60)
        (trained, _), losses = jax.lax.scan(step, (params, opt.init(params)), rngs)
        return loss(params, rng(3), False), loss(trained, rng(4), False), losses

    before, after, losses = train()
    assert np.isfinite(losses).all()
    assert after < 0.1 * before, (before, after)  # about 3.3 -> 0.04
    assert losses[-10:].mean() < 0.25 * losses[:10].mean()
