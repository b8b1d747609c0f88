"""Batching rules for functions with data-dependent control flow.

Under `jax.vmap`, `lax.cond`/`lax.switch` with a batched predicate run every branch and a
`while_loop` runs until its slowest member stops. For the NCut that means every compaction bucket
and every dense fallback on every step. `sequential_vmap` gives such a function a batching rule
that maps the batch through `lax.map` instead, so each image keeps its real branches.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _with_batching_rule(fn: Callable, batched: Callable) -> Callable:
    """`fn(*arrays)` whose `jax.vmap` calls `batched(wrapped, axis_size, args)` with every argument
    given the mapped leading axis."""

    @jax.custom_batching.custom_vmap
    def wrapped(*args):
        return fn(*args)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = tuple(
            a if is_batched else jnp.broadcast_to(a, (axis_size,) + jnp.shape(a))
            for a, is_batched in zip(args, in_batched)
        )
        out = batched(wrapped, axis_size, args)
        return out, jax.tree.map(lambda _: True, out)

    return wrapped


def sequential_vmap(fn: Callable) -> Callable:
    """Wrap `fn(*arrays)` so that `jax.vmap` of it runs `lax.map` over the batch."""
    return _with_batching_rule(
        fn, lambda wrapped, _, args: jax.lax.map(lambda xs: wrapped(*xs), args))


def merge_vmap(fn: Callable) -> Callable:
    """Wrap `fn(*arrays)`, already batched along axis 0 of every argument and output, so that
    `jax.vmap` of it folds the new axis into that batch axis instead of batching its control flow
    (a batched `while_loop` predicate would run every branch of every step)."""

    def fold(wrapped, axis_size, args):
        out = wrapped(*(a.reshape((-1,) + a.shape[2:]) for a in args))
        return jax.tree.map(lambda x: x.reshape((axis_size, -1) + x.shape[1:]), out)

    return _with_batching_rule(fn, fold)
