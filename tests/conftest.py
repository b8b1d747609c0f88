import os
import shutil
import tempfile

import pytest

# Tests run on CPU; keep XLA from grabbing every core for its own thread pools beyond what CI has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU (jax 0.10) can deadlock the level-synchronous NCut's nested loops under its
# concurrency-optimized scheduler on a 2-core machine (docs/differences.md, "Known issues").
_SEQUENTIAL = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _SEQUENTIAL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _SEQUENTIAL).strip()

# One cache root for the whole run (`io/cache.py`: text classifiers) with one persistent
# compilation cache in it: the pytest process makes it before the xdist workers start, and every
# worker and every subprocess (commands, notebooks, multi-process runs) inherits it through the
# environment, so a program compiled by one test file is loaded, not compiled again, by the others
# (the tiny models' programs recur across files and commands), and nothing is written to the
# user's own cache. Compile counters count a program read back from the cache as compiled
# (tests/helpers.py). Caches the caller set are used as they are.
_OWN_CACHE = None
if "DIFFCUT_JAX_CACHE" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="diffcut-jax-test-cache-")
    os.environ["DIFFCUT_JAX_CACHE"] = _OWN_CACHE
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["DIFFCUT_JAX_CACHE"],
                                                           "jax_compilation_cache")
    # Programs that compile in under this are cheaper to compile again than to read back.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: subprocess commands, multi-process runs, full-fixture batches")


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the process that made it
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def compile_counter():
    """Counts XLA backend compilations (jax.monitoring events) while the test runs."""
    from tests.helpers import CompileCounter

    with CompileCounter() as counter:
        yield counter
