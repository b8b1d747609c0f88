"""Label bookkeeping shared by the clustering methods and the segmenter."""
from __future__ import annotations

import jax.numpy as jnp


def consecutive(labels: jnp.ndarray, capacity: int) -> jnp.ndarray:
    """Relabel to 0..k-1 in order of value (values must lie in [0, capacity)). Jittable."""
    present = jnp.zeros((capacity,), jnp.int32).at[labels.reshape(-1)].set(1)
    return (jnp.cumsum(present) - 1)[labels].astype(jnp.int32)
