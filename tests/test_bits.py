"""The bit engine: exactly JAX's bits, the fused path when it can, the fast byte stream,
the stored-words boundary and bit packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg import _bits, _checks
from stats import assert_uniform_counts

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (1, 0, 3), (2, 1, 3, 1, 5), (1001,), (64, 257)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("legacy", [False, True], ids=["typed", "legacy"])
def test_bits_equal_jax_random_bits(shape, legacy):
    key = jax.random.PRNGKey(42) if legacy else jax.random.key(42)
    typed = _checks.check_key("test", key)
    expected = jax.random.bits(jax.random.PRNGKey(42) if legacy else jax.random.key(42), shape)
    got = _bits.random_bits(typed, shape)
    assert got.dtype == jnp.uint32 and got.shape == shape
    np.testing.assert_array_equal(got, expected)
    jitted = jax.jit(_bits.random_bits, static_argnums=1)(
        _checks.check_key("test", jax.random.key(42)), shape
    )
    np.testing.assert_array_equal(jitted, expected)


def test_bits_equal_under_vmap_over_keys():
    keys = jax.random.split(jax.random.key(0), 5)
    got = jax.vmap(lambda k: _bits.random_bits(k, (3, 7)))(keys)
    expected = jax.vmap(lambda k: jax.random.bits(k, (3, 7)))(
        jax.random.split(jax.random.key(0), 5)
    )
    np.testing.assert_array_equal(got, expected)


def test_fast_path_is_used_for_threefry_and_compiles_without_a_loop():
    key = jax.random.key(0)
    assert _bits.uses_fast_path(key, (4, 4))
    ours = jax.jit(lambda k: _bits.random_bits(k, (64, 64))).lower(key).compile().as_text()
    stock = jax.jit(lambda k: jax.random.bits(k, (64, 64))).lower(key).compile().as_text()
    assert "while" in stock  # JAX's threefry is a rolled loop on CPU
    assert "while" not in ours


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_impls_fall_back_to_jax(impl):
    key = jax.random.key(3, impl=impl)
    assert not _bits.uses_fast_path(key, (5,))
    np.testing.assert_array_equal(
        _bits.random_bits(key, (5, 3)), jax.random.bits(jax.random.key(3, impl=impl), (5, 3))
    )


def test_non_partitionable_threefry_falls_back_and_stays_exact():
    with jax.threefry_partitionable(False):
        key = jax.random.key(5)
        assert not _bits.uses_fast_path(key, (9,))
        np.testing.assert_array_equal(
            _bits.random_bits(key, (9,)), jax.random.bits(jax.random.key(5), (9,))
        )
    assert jax.config.jax_threefry_partitionable  # the global setting is untouched


@pytest.mark.parametrize("shape", [(), (7,), (33, 65)], ids=str)
def test_standard_normal_equals_jax_random_normal(shape):
    got = _bits.standard_normal(jax.random.key(8), shape)
    np.testing.assert_array_equal(got, jax.random.normal(jax.random.key(8), shape))


def test_uniform_from_bits_equals_jax_random_uniform():
    bits = _bits.random_bits(jax.random.key(1), (4096,))
    np.testing.assert_array_equal(
        _bits.uniform_from_bits(bits), jax.random.uniform(jax.random.key(1), (4096,))
    )


def test_flat_counter_is_row_major_index():
    np.testing.assert_array_equal(_bits.flat_counter((3, 4, 5)), np.arange(60).reshape(3, 4, 5))
    assert _bits.flat_counter(()).shape == ()


def test_threefry_known_answer():
    # Known-answer vector of Threefry-2x32 (20 rounds), Salmon et al. 2011:
    # key (0x13198a2e, 0x03707344), counter (0x243f6a88, 0x85a308d3).
    x0, x1 = _bits.threefry2x32(
        jnp.uint32(0x13198A2E),
        jnp.uint32(0x03707344),
        jnp.uint32(0x243F6A88),
        jnp.uint32(0x85A308D3),
    )
    assert (int(x0), int(x1)) == (0xC4923A9C, 0x483DF7A0)


def test_check_key_errors():
    with pytest.raises(TypeError, match=r"jaxreg\.f: key must be a PRNG key .* got 3 \(an int\)"):
        _checks.check_key("f", 3)
    with pytest.raises(TypeError, match="got an array of dtype float32"):
        _checks.check_key("f", jnp.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(2,\), got shape \(2, 2\)"):
        _checks.check_key("f", jnp.zeros((2, 2), jnp.uint32))
    with pytest.raises(ValueError, match=r"key array of shape \(3,\)"):
        _checks.check_key("f", jax.random.split(jax.random.key(0), 3))


def test_fast_bytes_follow_their_documented_layout():
    key = jax.random.key(3)
    b = np.asarray(_bits.random_bytes(key, (3, 19)))
    d = jax.random.key_data(jax.random.key(3))
    counters = jnp.arange(9, dtype=jnp.uint32)  # 3 rows x ceil(19 / 8) hashes
    x0, x1 = _bits.threefry2x32(d[0], d[1], jnp.uint32(0), counters)
    words = np.stack([np.asarray(x0), np.asarray(x1)], -1).astype("<u4")
    np.testing.assert_array_equal(b, words.view(np.uint8).reshape(3, 24)[:, :19])
    assert _bits.random_bytes(jax.random.key(4), ()).shape == ()
    assert _bits.random_bytes(jax.random.key(5), (4, 0)).shape == (4, 0)


@pytest.mark.slow
def test_fast_bytes_are_uniform():
    b = np.asarray(_bits.random_bytes(jax.random.key(6), (2000, 1000)))
    assert_uniform_counts(np.bincount(b.ravel(), minlength=256))
    # Each byte position within a hash is uniform too.
    for j in range(8):
        assert_uniform_counts(np.bincount(b[:, j::8].ravel(), minlength=256))


@pytest.mark.parametrize("shape", [(3, 1), (2, 32), (4, 70), (2, 3, 65)])
def test_pack_bits_round_trip_is_exact(shape):
    mask = jax.random.bernoulli(jax.random.key(32), 0.4, shape)

    @jax.jit  # one compiled program per shape
    def round_trip(mask):
        words = _bits.pack_bits(mask)
        return words, _bits.unpack_bits(words, shape[-1])

    words, unpacked = round_trip(mask)
    assert words.shape == (*shape[:-1], -(-shape[-1] // 32)) and words.dtype == jnp.uint32
    np.testing.assert_array_equal(unpacked, mask)
    # Bit k of word w is element 32 w + k.
    flat = np.asarray(mask).reshape(-1, shape[-1])[0]
    np.testing.assert_array_equal(
        np.asarray(words).reshape(-1, words.shape[-1])[0, 0] >> np.arange(min(32, shape[-1])) & 1,
        flat[:32],
    )


def test_keep_in_memory_is_the_identity_behind_a_fusion_boundary():
    for words in (
        jax.random.bits(jax.random.key(0), (5, 2)),
        jnp.full((5, 2), 2**31 + 5, jnp.uint32),  # top bit set or clear: one trip either way
    ):
        np.testing.assert_array_equal(_bits.keep_in_memory(words), words)
        compiled = jax.jit(_bits.keep_in_memory).lower(words).compile()
        np.testing.assert_array_equal(compiled(words), words)
    assert "while" in compiled.as_text()  # XLA cannot see the trip count: not fused away
