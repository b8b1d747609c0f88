import os

# Tests run on CPU; keep XLA from grabbing every core for its own thread pools beyond what CI has.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
