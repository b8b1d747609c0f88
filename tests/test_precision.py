"""Nothing in the segmentation core runs at the default matmul precision.

On NVIDIA GPUs the default is TF32 (bf16 passes on TPUs): the NCut's subspace iteration then
stalls and cut values move. A CPU ignores the setting, so this static audit of the jaxprs is the
guard: every dot_general and conv_general_dilated, inside every while/cond/scan/switch body,
must state its precision.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.extend import core as jcore

import diffcut_jax as dc
from diffcut_jax.evaluation.matching import class_segment_histogram

_AUDITED = ("dot_general", "conv_general_dilated")


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def default_precision_ops(jaxpr, path="") -> list[str]:
    """Every audited op without an explicit, non-default precision, with its nesting path."""
    found, seen = [], 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _AUDITED:
            seen += 1
            precision = eqn.params.get("precision")
            values = precision if isinstance(precision, tuple) else (precision,)
            if any(p is None or p == jax.lax.Precision.DEFAULT for p in values):
                found.append(f"{path}/{name} at {eqn.source_info.traceback}")
        for sub in _sub_jaxprs(eqn.params):
            found += default_precision_ops(sub, f"{path}/{name}")
    return found


def _count(jaxpr, names=_AUDITED) -> int:
    n = sum(e.primitive.name in names for e in jaxpr.eqns)
    return n + sum(_count(s, names) for e in jaxpr.eqns for s in _sub_jaxprs(e.params))


FEATS = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
IMAGE = jnp.ones((2, 16, 16, 3))
MASKS = jnp.zeros((2, 16, 16), jnp.int32)

CASES = {
    "recursive_ncut/stack": lambda: dc.recursive_ncut(FEATS, formulation="stack"),
    "recursive_ncut/level": lambda: dc.recursive_ncut(FEATS, formulation="level"),
    "assign_concepts": lambda: dc.assign_concepts(FEATS, jnp.zeros((2, 8, 8), jnp.int32), (16, 16)),
    "pamr": lambda: dc.pamr(IMAGE, MASKS, num_labels=4),
    "refine": lambda: dc.refine(IMAGE, MASKS, num_labels=4),
    "autosc": lambda: dc.autosc(FEATS),
    "coherence_map": lambda: dc.coherence_map(FEATS[0], (1, 2)),
    "class_segment_histogram": lambda: class_segment_histogram(MASKS[0], MASKS[0], 4, 8),
}


def _clip_cases():
    """The open-vocabulary CLIP's jitted functions (tiny fixture model, float32)."""
    from diffcut_jax.naming.clip_model import (
        dense_features_fn,
        encode_text_fn,
        load_clip,
        segment_embeddings_fn,
    )
    from diffcut_jax.naming.labelling import Labeller, label_segments
    from tests.helpers import FIXTURES

    clip = load_clip(FIXTURES / "openclip" / "tiny_convnext_clip")
    lab = Labeller(clip, "cat;dog", image_size=64)
    images = jnp.ones((2, 64, 64, 3))
    dense = jnp.ones((2, 2, 2, clip.config.trunk.num_features))
    ids = jnp.asarray(clip.tokenize(["a cat", "a dog"]))
    return {
        "clip/dense_features": lambda: dense_features_fn(clip.params, images, graph=clip.graph),
        "clip/segment_embeddings": lambda: segment_embeddings_fn(
            clip.params, dense, MASKS, graph=clip.graph, num_segments=4),
        "clip/encode_text": lambda: encode_text_fn(clip.params, ids, graph=clip.graph),
        "clip/label_segments": lambda: label_segments(
            clip.params, images, MASKS, lab.classifier, clip.logit_scale, graph=clip.graph,
            num_segments=4, size=(64, 64)),
    }


CASES.update(_clip_cases())


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_default_precision(name):
    jaxpr = jax.make_jaxpr(CASES[name])().jaxpr
    assert default_precision_ops(jaxpr) == []


def test_audit_sees_into_loops_and_flags_defaults():
    """The walker reaches into while/cond bodies and does flag a default-precision dot."""
    jaxpr = jax.make_jaxpr(lambda: dc.recursive_ncut(FEATS[0], formulation="stack"))().jaxpr
    assert _count(jaxpr) > 20  # the eigensolver's products all live inside while/cond bodies

    def careless(x):
        return jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ c[0], c[1] + 1), (x, 0))[0]

    bad = default_precision_ops(jax.make_jaxpr(careless)(jnp.eye(3)).jaxpr)
    assert len(bad) == 1 and bad[0].startswith("/while/dot_general")


def test_audit_sees_the_clip_towers():
    # ConvNeXt convs and MLPs, the mask pooling, the head and the classifier: all audited.
    assert _count(jax.make_jaxpr(CASES["clip/label_segments"])().jaxpr) > 20
    assert _count(jax.make_jaxpr(CASES["clip/encode_text"])().jaxpr) > 8


# ---------------------------------------------------------------- the models' precision policy
# (docs/performance.md, "Precision"): the VAE in float32 follows PyTorch's defaults (float32 matmuls, TF32
# convolutions on NVIDIA GPUs; HIGH on TPUs, where DEFAULT is one bf16 pass; exact on CPUs); a
# bf16 UNet takes bf16's precision; a float32 UNet and the CLIP compute every product in float32.

_HIGHEST, _HIGH, _DEFAULT = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGH,
                             jax.lax.Precision.DEFAULT)


def _precisions(jaxpr, name) -> set:
    out = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            p = eqn.params.get("precision")
            out |= set(p) if isinstance(p, tuple) else {p}
        for sub in _sub_jaxprs(eqn.params):
            out |= _precisions(sub, name)
    return out


def _model_jaxpr(part, numerics):
    from flax import nnx

    from diffcut_jax.models import unet, vae
    from diffcut_jax.testing import tiny_spec

    cfg = tiny_spec("sdxl")[part]["config"]
    if part == "vae":
        model = vae.VAEEncoder(vae.VAEConfig.from_diffusers(cfg), numerics=numerics, rngs=nnx.Rngs(0))
        return jax.make_jaxpr(lambda x: model(x))(jnp.zeros((1, 64, 64, 3))).jaxpr
    ucfg = unet.UNetConfig.from_diffusers(cfg)
    model = unet.UNetEncoder(ucfg, numerics=numerics, rngs=nnx.Rngs(0))
    b = 1
    ctx = jnp.zeros((b, 77, ucfg.cross_attention_dim[-1]))
    kw = dict(text_embeds=jnp.zeros((b, 16)), time_ids=jnp.zeros((b, 6)))
    return jax.make_jaxpr(lambda x: model(x, 50, ctx, **kw))(jnp.zeros((b, 8, 8, 4))).jaxpr


@pytest.mark.parametrize("backend, conv", [("cpu", _HIGHEST), ("gpu", _DEFAULT), ("cuda", _DEFAULT),
                                           ("tpu", _HIGH)])
def test_vae_follows_the_torch_policy_per_backend(backend, conv):
    from diffcut_jax.models.layers import Numerics

    jaxpr = _model_jaxpr("vae", Numerics(policy="torch", backend=backend))
    assert _precisions(jaxpr, "conv_general_dilated") == {conv}
    assert _precisions(jaxpr, "dot_general") == {_HIGHEST}  # the mid block's attention and linears


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_unet_precision_follows_its_dtype(backend):
    from diffcut_jax.models.layers import Numerics

    bf16 = _model_jaxpr("unet", Numerics(jnp.bfloat16, jnp.bfloat16, backend=backend))
    assert _precisions(bf16, "conv_general_dilated") == {_DEFAULT}
    assert _precisions(bf16, "dot_general") == {_DEFAULT}
    f32 = _model_jaxpr("unet", Numerics(backend=backend))
    assert _precisions(f32, "conv_general_dilated") | _precisions(f32, "dot_general") == {_HIGHEST}


def test_extractor_defaults_to_the_torch_policy_for_its_vae():
    import inspect

    from diffcut_jax.features.extractor import load_extractor

    assert inspect.signature(load_extractor).parameters["vae_precision"].default == "torch"
    from diffcut_jax.models.layers import Numerics

    with pytest.raises(ValueError, match="precision policy must be one of"):
        Numerics(policy="tf32")


def test_unet_dtype_default_per_backend():
    from diffcut_jax.features.extractor import default_dtype

    assert default_dtype("gpu") == jnp.float16  # the original's; closest to float32 (precision.py)
    assert default_dtype("tpu") == jnp.bfloat16
    assert default_dtype("cpu") == jnp.float32
