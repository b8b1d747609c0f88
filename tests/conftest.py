import os

import pytest

# Tests run on CPU; keep XLA from grabbing every core for its own thread pools beyond what CI has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU (jax 0.10) can deadlock the level-synchronous NCut's nested loops under its
# concurrency-optimized scheduler on a 2-core machine (docs/differences.md, "Known issues").
_SEQUENTIAL = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _SEQUENTIAL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _SEQUENTIAL).strip()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: subprocess commands, multi-process runs, full-fixture batches")


@pytest.fixture
def compile_counter():
    """Counts XLA backend compilations (jax.monitoring events) while the test runs."""
    from tests.helpers import CompileCounter

    with CompileCounter() as counter:
        yield counter
