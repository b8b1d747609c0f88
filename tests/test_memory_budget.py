"""Every program a user runs fits the memory budget at the paper's sizes (XLA's memory analysis on
abstract full-size weights, `diffcut_jax/programs.py`): <= 8 GiB of temporaries, so that a 16 GiB
accelerator holds the weights too. The table is in docs/performance.md."""
from __future__ import annotations

import pytest

from diffcut_jax import programs

CATALOGUE = programs.catalogue()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(CATALOGUE)),
                         ids=[f"{p.name} b{p.images}".replace(" ", "_") for p in CATALOGUE])
def test_program_within_budget(index):
    prog = CATALOGUE[index]
    m = programs.memory(prog)
    assert m["temp_gib"] <= programs.BUDGET_GIB, (prog.name, prog.images, m)


def test_catalogue_covers_the_issue_programs():
    names = [(p.name, p.images) for p in CATALOGUE]
    assert ("DiffCut batch function, 1024 x 1024, refinement", 16) in names
    assert any(n.startswith("voc20 evaluator step + PAMR (refinement") for n, _ in names)
    assert any(n.startswith("openvoc_coco_object") and "CLIP 2048" in n for n, _ in names)
    assert any(n.startswith("labeller step") for n, _ in names)
    assert ("dataset engine step, 1024 x 1024", 8) in names
    assert any(n == "coherence map" for n, _ in names)


def test_budget_catches_a_capacity_shaped_program():
    """The check can fail: the previous release's dense assignment at 1024 segments, batch 16."""
    import jax
    import jax.numpy as jnp

    from tests.reference_dense import assign_dense

    fn = lambda f, l: assign_dense(f, l, size=(1024, 1024), num_labels=1024)  # noqa: E731
    prog = programs.Program("dense assignment", fn, (
        jax.ShapeDtypeStruct((16, 32, 32, 1280), jnp.float32),
        jax.ShapeDtypeStruct((16, 32, 32), jnp.int32)), 16)
    assert programs.memory(prog)["temp_gib"] > programs.BUDGET_GIB
