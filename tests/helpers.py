"""Shared test helpers: where ../shared is, fixture loading, partition comparison."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from diffcut_jax.cut.labels import partition_mismatch  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFCUT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def load_fixture(name: str):
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(
            f"fixture {path} not found: the tests expect ../shared beside the checkout "
            "(or DIFFCUT_SHARED pointing at it)"
        )
    return np.load(path)


def meta(z, key: str) -> dict:
    return json.loads(str(z[key]))


# 12 input sizes, 3 working sizes at image_size 64: (64, 64), (32, 64) and (64, 32).
MIXED_SIZES = [(60, 64), (62, 64), (63, 64), (64, 64), (30, 64), (28, 64), (34, 64), (36, 64),
               (64, 30), (64, 25), (64, 36), (64, 38)]


def same_partition(a, b) -> bool:
    return not partition_mismatch(a, b).any()


class CompileCounter:
    """Counts the programs XLA compiled, through `jax.monitoring`, with no private state.

    JAX times `compile_or_get_cached` under this event, so a program read back from the
    persistent compilation cache (the test run shares one, conftest.py) counts as compiled too,
    and a count does not depend on what ran before (tests/test_compile_once.py checks this)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.by_name: dict[str, int] = {}  # per jitted function's name
        self.seconds: dict[str, float] = {}

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1
            name = kwargs.get("fun_name", "?")
            self.by_name[name] = self.by_name.get(name, 0) + 1
            self.seconds[name] = self.seconds.get(name, 0.0) + duration

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


def private_scratch(root: Path, name: str, warm: Path) -> tuple[Path, dict]:
    """A process's private scratch, as a pod host's own disk: its cwd, TMPDIR, HOME and caches.
    Its compilation cache starts as a copy of `warm` (a host image with a warm cache): its own,
    and no compile time spent again in CI. Returns (folder, environment additions)."""
    import shutil

    folder = root / name
    for sub in ("cwd", "tmp", "home"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    if not (folder / "cache" / "jax").exists():
        shutil.copytree(warm, folder / "cache" / "jax")
    return folder, {"TMPDIR": str(folder / "tmp"), "HOME": str(folder / "home"),
                    "DIFFCUT_JAX_CACHE": str(folder / "cache"),
                    "JAX_COMPILATION_CACHE_DIR": str(folder / "cache" / "jax")}


def kill_when(procs, ready, *, timeout: float = 600) -> None:
    """SIGKILL every process once `ready()` holds (fails if one ends first, or on timeout)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        assert all(p.poll() is None for p in procs), \
            "ended before it could be interrupted: " + procs[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=60)
