"""Out-of-memory errors of XLA programs: recognised, and reported as one line that names the
program, its sizes and what to lower."""
from __future__ import annotations


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is XLA's allocation failure (device memory, or host memory on a CPU)."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def out_of_memory_message(program: str, details: str, advice: str) -> str:
    """One line: which program ran out of memory, on what, at which sizes, and what to lower."""
    import jax

    dev = jax.devices()[0]
    return f"out of memory on {dev.platform} ({dev.device_kind}) in {program} ({details}): {advice}"
