"""The XLA options that make GPU results reproducible (diffcut_jax/determinism.py): added to
XLA_FLAGS without overriding the user's. (XLA accepting them, with every program lowered for
CUDA: tests/test_lowering.py runs with them set.)"""
from __future__ import annotations

import os

from diffcut_jax import determinism


def test_flags_are_added_once_and_keep_the_user_s():
    assert determinism.flags_with("") == " ".join(determinism.GPU_FLAGS)
    mine = "--xla_gpu_autotune_level=4 --xla_force_host_platform_device_count=8"
    out = determinism.flags_with(mine)
    assert "--xla_gpu_autotune_level=4" in out and "--xla_gpu_autotune_level=0" not in out
    assert "--xla_gpu_deterministic_ops=true" in out
    assert determinism.flags_with(out) == out


def test_enable_sets_the_flags_before_the_backend_and_skips_cpu_only(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert determinism.enable() and "XLA_FLAGS" not in os.environ  # no GPU: keys unchanged
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    monkeypatch.setattr(determinism, "backends_started", lambda: False)
    assert determinism.enable()
    assert os.environ["XLA_FLAGS"] == " ".join(determinism.GPU_FLAGS)
