"""Eager calls of the public functions on new data of a seen shape reuse the compiled program,
and memory stays flat over many calls (counted with jax.monitoring, not clocks)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc

# Model, TFDS or torch work per test: left out of the quick subset (-m "not slow").
pytestmark = pytest.mark.slow


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _features(i, h=12, w=12, c=16):
    # Smooth regions plus noise, so that the NCut splits (constant-ish features would not).
    rng = np.random.default_rng(i)
    centres = rng.normal(size=(3, c)) * 3
    region = (np.arange(h)[:, None] * 3 // h + np.arange(w)[None, :] * 2 // w) % 3
    return jnp.asarray(centres[region] + rng.normal(size=(h, w, c)), jnp.float32)


def _masks(i, k=4, size=16):
    rng = np.random.default_rng(100 + i)
    m = rng.integers(0, k, (size, size))
    m.flat[:k] = np.arange(k)  # always exactly k distinct labels
    return jnp.asarray(m, jnp.int32)


def _image(i, size=16):
    return jnp.asarray(np.random.default_rng(200 + i).random((size, size, 3)), jnp.float32)


CALLS = {
    "recursive_ncut/stack": lambda i: dc.recursive_ncut(
        _features(i), 0.5 + 0.01 * (i % 3), 10.0 - i % 2, formulation="stack"),
    "recursive_ncut/level": lambda i: dc.recursive_ncut(
        _features(i), 0.5 + 0.01 * (i % 3), 10.0 - i % 2, formulation="level"),
    "assign_concepts": lambda i: dc.assign_concepts(
        _features(i), jnp.asarray(np.arange(144).reshape(12, 12) % (1 + i % 5), jnp.int32), (24, 24)),
    "pamr": lambda i: dc.pamr(_image(i), _masks(i)),
    "refine": lambda i: dc.refine(_image(i), _masks(i)),
    "autosc": lambda i: dc.autosc(_features(i)),
    "kway_ncut": lambda i: dc.kway_ncut(_features(i), 10.0 - i % 2, threshold=0.9 - 0.01 * (i % 3)),
    "coherence_map": lambda i: dc.coherence_map(_features(i), (i % 12, (3 * i) % 12)),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_fifty_eager_calls_compile_once_without_memory_growth(name, compile_counter):
    call = CALLS[name]
    for i in range(3):  # warm-up: the program itself and the eager helpers around it
        jax.block_until_ready(call(i))
    warm, rss = compile_counter.count, _rss_bytes()
    for i in range(3, 53):
        jax.block_until_ready(call(i))
    assert compile_counter.count == warm, f"{compile_counter.count - warm} recompilations"
    assert _rss_bytes() - rss < 64 * 2**20


def test_counter_sees_a_new_shape(compile_counter):
    """The counter is live: a new shape is a new program."""
    dc.assign_concepts(_features(0, 6, 6), jnp.zeros((6, 6), jnp.int32), (10, 10)).block_until_ready()
    assert compile_counter.count >= 1


def test_counter_counts_programs_read_back_from_the_persistent_cache(compile_counter):
    """The test run shares one persistent compilation cache (conftest.py): a program another test
    file or process compiled is read back, not compiled. The counter must still see it, or a
    count would depend on which tests ran before."""
    import uuid

    assert jax.config.jax_compilation_cache_dir, "conftest.py sets a cache for the run"
    salt = uuid.uuid4().int % 1000 + 0.5  # a program no other test or run has compiled
    f = jax.jit(lambda x: jnp.sin(x * salt) @ x.T)
    x = np.ones((8, 8), np.float32)  # NumPy: no program of its own
    hits = []
    listener = lambda event, **kw: hits.append(event)  # noqa: E731
    jax.monitoring.register_event_listener(listener)
    old = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        start = compile_counter.count
        f.lower(x).compile()
        compiled = compile_counter.count - start
        jax.clear_caches()  # drop the in-memory program: the next compile reads the disk cache
        f.lower(x).compile()
        read_back = compile_counter.count - start - compiled
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old)
        jax.monitoring.unregister_event_listener(listener)
    assert "/jax/compilation_cache/cache_hits" in hits, "the program did not come from the cache"
    assert compiled == read_back == 1
