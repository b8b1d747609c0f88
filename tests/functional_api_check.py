"""Run by tests/test_functional_api.py in a subprocess with 8 host devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/functional_api_check.py DIR

Checks the public functional API (`DiffCut.function`, `extractor.function`,
`Labeller.function`) under the user's own transformations, and prints one JSON object of results.
"""
from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from diffcut_jax.naming.clip_model import load_clip  # noqa: E402
from diffcut_jax.naming.labelling import Labeller  # noqa: E402
from diffcut_jax.segmenter import DiffCut  # noqa: E402
from diffcut_jax.testing import tiny_spec, write_random_checkpoint  # noqa: E402
from tests.helpers import FIXTURES, CompileCounter  # noqa: E402


def main(root: str) -> dict:
    write_random_checkpoint(root, tiny_spec("sdxl"), seed=3, std=0.2)
    seg = DiffCut.from_pretrained(root, image_size=64, tau=0.9)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(8, 64, 64, 3), dtype=np.uint8)
    images = jnp.asarray(raw, jnp.float32) / 255.0
    ref = np.asarray(seg(images))
    f = seg.function()
    out = {"devices": jax.device_count(), "segments": [int(x.max()) + 1 for x in ref]}

    out["user_jit_equals_call"] = bool((np.asarray(jax.jit(f)(seg.params, images)) == ref).all())

    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    rep, bat = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    params, sharded_images = jax.device_put(seg.params, rep), jax.device_put(images, bat)
    # With fixed feature chunks (feature_batch=1) every device runs the same per-image programs:
    # sharded over 8 devices and under shard_map equal 1 device exactly. (Without them the UNet
    # runs each device's share at once, and XLA:CPU's round-off, which depends on the batch a
    # convolution runs in (~1e-6), can move an NCut partition of this tiny random model.)
    f1 = seg.function(feature_batch=1)
    one_device = np.asarray(jax.jit(f1)(seg.params, images))
    out["chunked_segments"] = [int(x.max()) + 1 for x in one_device]
    sharded = jax.jit(f1, in_shardings=(rep, bat), out_shardings=bat)(params, sharded_images)
    out["sharded_output_batch_sharded"] = bool(sharded.sharding.spec == P("batch"))
    out["chunked_sharded_equal"] = bool(np.array_equal(np.asarray(sharded), one_device))
    out["chunked_shard_map_equal"] = bool(np.array_equal(np.asarray(
        jax.jit(jax.shard_map(f1, mesh=mesh, in_specs=(P(), P("batch")), out_specs=P("batch"),
                              check_vma=False))(params, sharded_images)), one_device))
    # Features: the same up to that round-off, under sharding and under shard_map.
    fe = seg.extractor.function((64, 64))
    one = np.asarray(jax.jit(fe)(seg.params, images))
    scale = float(np.abs(one).max())
    for name, fn in (("sharded", jax.jit(fe, in_shardings=(rep, bat), out_shardings=bat)),
                     ("shard_map", jax.jit(jax.shard_map(fe, mesh=mesh, in_specs=(P(), P("batch")),
                                                         out_specs=P("batch"), check_vma=False)))):
        got = np.asarray(fn(params, sharded_images))
        out[f"{name}_features_max_rel_diff"] = float(np.abs(got - one).max() / scale)

    def pipeline(params, raw_images):  # the user's code before and after, one program
        labels = f(params, raw_images.astype(jnp.float32) / 255.0)
        return jax.vmap(lambda lab: jnp.bincount(lab.reshape(-1), length=16))(labels)

    with CompileCounter() as counter:
        jitted = jax.jit(pipeline)
        counts = np.asarray(jitted(seg.params, jnp.asarray(raw)))
        jitted(seg.params, jnp.asarray(raw))  # the same shape: no new program
        first = counter.count
        jitted(seg.params, jnp.asarray(raw[:4]))  # another shape: one more
        out["compiles_same_shape"], out["compiles_after_new_shape"] = first, counter.count
    expected = np.stack([np.bincount(x.reshape(-1), minlength=16)[:16] for x in ref])
    out["composed_counts_equal"] = bool((counts == expected).all())

    g = jax.jit(seg.function(traced_options=True))
    with CompileCounter() as counter:
        a = np.asarray(g(seg.params, images, jnp.float32(0.3), jnp.float32(10.0)))
        n = counter.count
        g(seg.params, images, jnp.float32(0.7), jnp.float32(5.0))
        out["traced_options_recompiles"] = counter.count - n
    out["traced_tau_equals_with_options"] = bool(
        (a == np.asarray(seg.with_options(tau=0.3)(images))).all())

    out["features_equal"] = bool(np.array_equal(
        one, np.asarray(seg.extractor(images, size=(64, 64)))))

    labeller = Labeller(load_clip(FIXTURES / "openclip" / "tiny_convnext_clip"), "cat;dog;sky",
                        image_size=64)
    lf = jax.jit(labeller.function(16))
    got = [np.asarray(x) for x in lf(labeller.params, images, jnp.asarray(ref))]
    want = labeller(np.asarray(images), ref, num_segments=16)
    out["labeller_equal"] = bool(np.array_equal(got[0], want.class_map)
                                 and np.array_equal(got[1], want.segment_class))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
