"""Reproducible results on NVIDIA GPUs: the XLA options that fix every numerical choice.

    from diffcut_jax import determinism
    determinism.enable()          # before JAX starts its GPU backend (the commands do this)

XLA picks convolution and matmul algorithms by timing candidates at every compilation, so two
processes, two runs, or the 1-device and 8-device programs of one evaluation can run different
algorithms, with different round-off. The NCut turns one unit in the last place into another
partition (its threshold argmin and its exact-zero rows), so "8 devices equal 1 device" and "a
rerun gives the same labels" need the choices fixed:

- `--xla_gpu_deterministic_ops=true`: no operation whose result depends on thread timing
  (atomics in scatters and reductions are replaced by deterministic ones);
- `--xla_gpu_autotune_level=0`: no timing-based choice of GEMM and convolution algorithms (the
  default, heuristic algorithm for each shape, the same in every process and run).

The cost is speed, not memory: the default algorithm is sometimes slower than the timed best
(docs/performance.md, "Reproducibility"; `benchmarks/gpu_end_to_end.py --full` measures the
end to end with and without). On CPUs and TPUs these options change nothing (XLA:CPU and the TPU
compiler are deterministic). `diffcut-jax eval` and `segment` set them by default
(`--nodeterministic` to opt out).
"""
from __future__ import annotations

import os
import warnings

GPU_FLAGS = ("--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0")


def flags_with(existing: str, flags=GPU_FLAGS) -> str:
    """`existing` XLA_FLAGS with `flags` added; an option already given keeps its value."""
    given = {f.split("=")[0] for f in existing.split()}
    return " ".join([existing.strip(), *(f for f in flags if f.split("=")[0] not in given)]).strip()


def backends_started() -> bool:
    """Whether JAX has started a backend (XLA_FLAGS are read once, then)."""
    import sys

    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", None))


def gpu_possible() -> bool:
    """False when JAX_PLATFORMS names platforms and no NVIDIA one (then the flags would only
    change the compilation cache's keys)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    return not platforms or any(p in platforms for p in ("cuda", "gpu"))


def enable() -> bool:
    """Add `GPU_FLAGS` to XLA_FLAGS (unless JAX_PLATFORMS rules out GPUs). Returns False (and
    warns) when a JAX backend has already started, since XLA then ignores new flags."""
    if not gpu_possible():
        return True
    os.environ["XLA_FLAGS"] = flags_with(os.environ.get("XLA_FLAGS", ""))
    if backends_started():
        warnings.warn("determinism.enable() after JAX started its backends: XLA ignores the new "
                      "flags in this process; call it before the first JAX computation",
                      stacklevel=2)
        return False
    return True
