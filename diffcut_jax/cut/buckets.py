"""Static shapes for run-time sizes: run the branch of the smallest bucket that fits."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def smallest_bucket(needed, buckets: Sequence[int], branches: Sequence[Callable], *operands):
    """`branches[i](*operands)` for the smallest `buckets[i] >= needed` (buckets ascending; the
    last one is used when none fits). One `lax.switch`: one compiled branch per bucket."""
    if list(buckets) != sorted(buckets) or len(buckets) != len(branches):
        raise ValueError(f"buckets must be ascending, one per branch, got {tuple(buckets)}")
    which = jnp.minimum(jnp.sum(jnp.asarray(buckets) < needed), len(buckets) - 1)
    return jax.lax.switch(which, list(branches), *operands)
