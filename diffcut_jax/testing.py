"""Random checkpoints in the real layouts, for tests, examples and benchmarks (no torch).

    write_random_checkpoint(path, "ssd-1b", dtype="float16")   # full size, every real tensor
    write_random_checkpoint(path, tiny_spec("sdxl"))            # a few MB, same structure
    write_random_open_clip(path, "tiny")                        # open_clip hub layout, ~1 MB
    write_random_open_clip(path, "clip-convnext-large-d-320")   # the default CLIP, full size

The layout is diffusers' own: `<root>/<part>/config.json` and
`<root>/<part>/diffusion_pytorch_model[.fp16].safetensors` (`model[.fp16].safetensors` for the
text encoders), tensors in PyTorch layout under their real names (`text_model.` prefix included).
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from diffcut_jax import presets
from diffcut_jax.features.checkpoint import abstract_module, nnx_path_to_torch
from diffcut_jax.features.hub import WEIGHT_NAMES
from diffcut_jax.models import clip, unet, vae


def _torch_shape(path, shape) -> list[int]:
    leaf = path[-1]
    if leaf == "kernel" and len(shape) == 4:
        h, w, i, o = shape
        return [o, i, h, w]
    if leaf == "kernel" and len(shape) == 2:
        return [shape[1], shape[0]]
    return list(shape)


def model_tensors(part: str, config: Mapping) -> dict[str, list[int]]:
    """Name -> PyTorch shape of every tensor our model of `part` needs, from its config."""
    if part == "unet":
        cfg = unet.UNetConfig.from_diffusers(config)
        factory = lambda r: unet.UNetEncoder(cfg, rngs=r)  # noqa: E731
        prefix = ""
    elif part == "vae":
        cfg = vae.VAEConfig.from_diffusers(config)
        factory = lambda r: vae.VAEEncoder(cfg, rngs=r)  # noqa: E731
        prefix = ""
    else:
        cfg = clip.CLIPTextConfig.from_transformers(config, with_projection=part == "text_encoder_2")
        factory = lambda r: clip.CLIPTextModel(cfg, rngs=r)  # noqa: E731
        prefix = "text_model."
    _, state = abstract_module(factory)
    out = {}
    for path, var in _flat(state):
        name = nnx_path_to_torch(path)
        if prefix and not name.startswith("text_projection."):
            name = prefix + name
        out[name] = _torch_shape(path, var.shape)
    return out


def _flat(state):
    from flax import nnx

    for path, var in nnx.to_flat_state(state):
        yield path, (var.get_value() if hasattr(var, "get_value") else var.value)


def tiny_spec(family: str = "sdxl") -> dict:
    """A tiny checkpoint spec with the structure of SSD-1B (`sdxl`) or SD1.4 (`sd`).

    Tensors: everything the extractor loads plus, for the parts it ignores (mid block, up path,
    decoder), a few tensors under their real names so the loader's ignore lists are exercised.
    """
    te1 = dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
               num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
               layer_norm_eps=1e-5, projection_dim=16, architectures=["CLIPTextModel"])
    vae_cfg = dict(block_out_channels=[8, 8, 16, 16], layers_per_block=1, latent_channels=4,
                   norm_num_groups=4, in_channels=3, out_channels=3, scaling_factor=0.13025,
                   down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, force_upcast=True)
    if family == "sdxl":
        te2 = dict(te1, hidden_size=16, num_attention_heads=2, hidden_act="gelu",
                   architectures=["CLIPTextModelWithProjection"])
        unet_cfg = dict(
            block_out_channels=[16, 32, 32], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            layers_per_block=2, transformer_layers_per_block=[1, 2, 2], attention_head_dim=[1, 2, 2],
            cross_attention_dim=32, norm_num_groups=8, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=16 + 6 * 8, in_channels=4, out_channels=4,
            flip_sin_to_cos=True, freq_shift=0, sample_size=16, mid_block_type="UNetMidBlock2DCrossAttn",
        )
        parts = {"unet": unet_cfg, "vae": vae_cfg, "text_encoder": te1, "text_encoder_2": te2}
    elif family == "sd":
        unet_cfg = dict(
            block_out_channels=[16, 16, 32, 32],
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            layers_per_block=2, attention_head_dim=2, cross_attention_dim=16, norm_num_groups=8,
            use_linear_projection=False, in_channels=4, out_channels=4, flip_sin_to_cos=True,
            freq_shift=0, sample_size=16,
        )
        parts = {"unet": unet_cfg, "vae": dict(vae_cfg, scaling_factor=0.18215), "text_encoder": te1}
    else:
        raise ValueError(f"tiny_spec: family must be 'sdxl' or 'sd', got {family!r}")
    spec = {}
    for part, cfg in parts.items():
        tensors = model_tensors(part, cfg)
        tensors.update(_ignored_examples(part, cfg))
        spec[part] = {"config": cfg, "tensors": tensors}
    return spec


def _ignored_examples(part: str, cfg: Mapping) -> dict[str, list[int]]:
    if part == "unet":
        c = cfg["block_out_channels"]
        out = {
            "mid_block.resnets.0.conv1.weight": [c[-1], c[-1], 3, 3],
            "up_blocks.0.resnets.0.conv1.weight": [c[-1], 2 * c[-1], 3, 3],
            "conv_norm_out.weight": [c[0]],
            "conv_out.weight": [cfg["out_channels"], c[0], 3, 3],
        }
        n = len(cfg["down_block_types"])
        if cfg["down_block_types"][-1] == "DownBlock2D":  # SD1.x: blocks past the feature block
            out[f"down_blocks.{n - 2}.downsamplers.0.conv.weight"] = [c[-2], c[-2], 3, 3]
            out[f"down_blocks.{n - 1}.resnets.0.conv1.weight"] = [c[-1], c[-2], 3, 3]
        return out
    if part == "vae":
        c = cfg["block_out_channels"]
        return {"decoder.conv_in.weight": [c[-1], cfg["latent_channels"], 3, 3],
                "post_quant_conv.weight": [cfg["latent_channels"], cfg["latent_channels"], 1, 1]}
    return {}


def preset_spec(name: str) -> dict:
    p = presets.load(name)
    return {part: {"config": p[part], "tensors": p["tensors"][part]} for part in p["tensors"]}


def write_random_checkpoint(root: str | Path, spec: str | Mapping, *, dtype: str = "float32",
                            seed: int = 0, std: float = 0.02, variant: str | None = None) -> Path:
    """Write a random checkpoint (a preset name or a spec from `tiny_spec`) under `root`.

    Parts are written one at a time (memory peaks at the largest part, ~2.7 GB for the fp16
    SSD-1B UNet). Norm weights are ~1, other tensors ~N(0, std).
    `variant="fp16"` names the files `*.fp16.safetensors` as the hub's fp16 variants.
    """
    from safetensors.numpy import save_file

    if isinstance(spec, str):
        spec = preset_spec(spec)
    root = Path(root)
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)
    for part, entry in spec.items():
        folder = root / part
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(entry["config"], indent=1))
        tensors = {}
        for name, shape in entry["tensors"].items():
            x = rng.standard_normal(size=shape, dtype=np.float32) * std
            if _is_norm_weight(name, shape):
                x = 1.0 + x
            tensors[name] = x.astype(np_dtype)
        suffix = f".{variant}" if variant else ""
        save_file(tensors, str(folder / f"{WEIGHT_NAMES[part]}{suffix}.safetensors"))
        del tensors
    return root


TINY_OPEN_CLIP = {  # open_clip's model_cfg: a ConvNeXt-atto image tower, a 2-layer text tower
    "embed_dim": 32,
    "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False,
                   "timm_pool": "", "timm_proj": "mlp", "timm_drop": 0.0, "timm_drop_path": 0.0,
                   "image_size": 96},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
def _inverse_rule(pattern: str, replacement: str) -> tuple[str, str]:
    """An open_clip -> model renaming rule (models/open_clip.py) turned around: the replacement,
    escaped, becomes the pattern (its \\1 the rule's group), the pattern the replacement."""
    group = re.search(r"\(([^)]*)\)", pattern)
    inverse = re.escape(replacement)
    inverse_replacement = pattern.strip("^$").replace("\\.", ".")
    if group:
        inverse = inverse.replace(re.escape("\\1"), group.group(0))
        inverse_replacement = inverse_replacement.replace(group.group(0), "\\1")
    return "^" + inverse + ("$" if pattern.endswith("$") else ""), inverse_replacement


def _open_clip_text_rules():
    from diffcut_jax.models.open_clip import _TEXT_RULES
    return tuple(_inverse_rule(p, r) for p, r in _TEXT_RULES)


def open_clip_tensors(model_cfg: Mapping) -> dict[str, list[int]]:
    """Name -> shape of every tensor of an open_clip checkpoint of `model_cfg` that our model
    reads, under open_clip's own names (q, k, v stacked as `in_proj_*`, `text_projection` as
    x @ W). For the default CLIP this is the real checkpoint's list (tests/test_openvocab.py)."""
    import re

    from diffcut_jax.models.open_clip import OpenCLIP, OpenCLIPConfig

    cfg = OpenCLIPConfig.from_open_clip({"model_cfg": dict(model_cfg)})
    _, state = abstract_module(lambda r: OpenCLIP(cfg, rngs=r))
    out: dict[str, list[int]] = {}
    for path, var in _flat(state):
        name, shape = nnx_path_to_torch(path), _torch_shape(path, var.shape)
        m = re.match(r"^text\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", name)
        if m:
            key = f"transformer.resblocks.{m.group(1)}.attn.in_proj_{m.group(3)}"
            out[key] = [3 * shape[0]] + shape[1:]
            continue
        if name == "text.text_projection.weight":
            out["text_projection"] = shape[::-1]
            continue
        for pattern, repl in _open_clip_text_rules():
            if re.search(pattern, name):
                name = re.sub(pattern, repl, name)
                break
        out[name] = shape
    return out


def write_random_open_clip(root: str | Path, spec: str | Mapping = "tiny", *, dtype: str = "float32",
                           seed: int = 0, std: float = 0.02) -> Path:
    """A random open_clip model in the hub layout (`open_clip_config.json`,
    `open_clip_model.safetensors`): `spec` "tiny" (`TINY_OPEN_CLIP`), a CLIP preset name
    (`presets.CLIP_NAMES`: full size, the real tensor list) or an open_clip `model_cfg`.
    `load_clip(root)` and `--clip_model=root` take it like a downloaded model."""
    from safetensors.numpy import save_file

    from diffcut_jax.features.hub import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS

    preprocess = {"mean": [0.48145466, 0.4578275, 0.40821073],
                  "std": [0.26862954, 0.26130258, 0.27577711]}
    if spec == "tiny":
        model_cfg, tensors = TINY_OPEN_CLIP, open_clip_tensors(TINY_OPEN_CLIP)
    elif isinstance(spec, str):
        preset = presets.load(spec)
        if spec not in presets.CLIP_NAMES:
            raise ValueError(f"{spec!r} is not a CLIP preset ({', '.join(presets.CLIP_NAMES)})")
        model_cfg, tensors, preprocess = preset["model_cfg"], preset["tensors"], preset["preprocess"]
    else:
        model_cfg, tensors = dict(spec), open_clip_tensors(spec)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / OPEN_CLIP_CONFIG).write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=1))
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in tensors.items():
        x = rng.standard_normal(size=shape, dtype=np.float32) * std
        if name == "logit_scale":
            x = np.full(shape, np.log(1 / 0.07), np.float32)
        elif _is_norm_weight(name, shape) or re.search(r"(ln_\d|ln_final|norm)\.weight$", name):
            x = 1.0 + x
        arrays[name] = x.astype(np.dtype(dtype))
    save_file(arrays, str(root / OPEN_CLIP_WEIGHTS))
    return root


def _is_norm_weight(name: str, shape) -> bool:
    return len(shape) == 1 and name.endswith(".weight") and ("norm" in name.split(".")[-2])


def random_extractor(spec: str | Mapping = "ssd-1b", *, dtype=None, image_size=1024, seed: int = 0,
                     attention: str = "auto", backend: str | None = None, abstract: bool = False):
    """A `DiffusionFeatureExtractor` of a preset's (or `tiny_spec`'s) real architecture with
    random weights initialised on the default device: no checkpoint written or read (what
    `benchmarks/gpu_end_to_end.py` times). `abstract=True`: `jax.ShapeDtypeStruct` parameters
    instead, nothing allocated (what `programs.py` lowers). Numerics as `load_extractor`: the
    UNet in `dtype` (default per backend), the VAE in float32 with the "torch" precision policy,
    both for `backend` (default: this one); the empty-prompt conditioning is zeros of the right
    shapes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from diffcut_jax.features.extractor import DiffusionFeatureExtractor, _size, default_dtype
    from diffcut_jax.models.layers import Numerics

    if isinstance(spec, str):
        spec = preset_spec(spec)
    dtype = jnp.dtype(dtype or default_dtype(backend))
    ucfg = unet.UNetConfig.from_diffusers(spec["unet"]["config"])
    vcfg = vae.VAEConfig.from_diffusers(spec["vae"]["config"])

    def build(factory):
        graph, state = nnx.split(nnx.eval_shape(lambda: factory(nnx.Rngs(seed))))
        if not abstract:
            state = jax.jit(lambda: nnx.split(factory(nnx.Rngs(seed)))[1])()  # made on the device
        return graph, state

    ugraph, uparams = build(lambda r: unet.UNetEncoder(
        ucfg, numerics=Numerics(dtype, dtype, attention=attention, backend=backend), rngs=r))
    vgraph, vparams = build(lambda r: vae.VAEEncoder(
        vcfg, numerics=Numerics(attention=attention, policy="torch", backend=backend), rngs=r))
    sdxl = ucfg.addition_embed_type == "text_time"
    pooled = ucfg.projection_class_embeddings_input_dim - 6 * ucfg.addition_time_embed_dim if sdxl else 0
    zeros = (lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)) if abstract else (
        lambda shape: jnp.zeros(shape, jnp.float32))
    cond = {"context": zeros((1, 77, ucfg.cross_attention_dim[-1])),
            "pooled": zeros((1, pooled)) if sdxl else None}
    return DiffusionFeatureExtractor(
        unet_graph=ugraph, vae_graph=vgraph,
        params={"unet": uparams, "vae": vparams, "conditioning": cond}, unet_config=ucfg,
        vae_config=vcfg, size=_size(image_size), timestep=50, schedule=(0.9, 0.4), seed=seed)


def region_features(num_regions: int, h: int = 32, w: int = 32, c: int = 1280, *, noise: float = 0.5,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with structure, for NCut timings and parity without a model: (h, w, c) float32,
    each node its region's centre plus Gaussian noise, regions the Voronoi cells of random sites
    (every node its own region when num_regions >= h * w); and the region labels (h, w)."""
    rng = np.random.default_rng(seed)
    if num_regions >= h * w:
        labels = np.arange(h * w).reshape(h, w)
    else:
        yy, xx = np.mgrid[:h, :w]
        sites = rng.uniform(0, (h, w), size=(num_regions, 2))
        d = (yy[..., None] - sites[:, 0]) ** 2 + (xx[..., None] - sites[:, 1]) ** 2
        _, labels = np.unique(np.argmin(d, axis=-1), return_inverse=True)
        labels = labels.reshape(h, w)
    centres = rng.normal(size=(labels.max() + 1, c))
    feats = centres[labels] + noise * rng.normal(size=(h, w, c))
    return feats.astype(np.float32), labels.astype(np.int32)


def uniform_features(batch: int = 4, h: int = 32, w: int = 32, c: int = 1280, *,
                     spread: float = 0.03, seed: int = 0) -> np.ndarray:
    """Nearly uniform features, as random weights give: per image one random direction (N(0, 1)
    per channel) shared by every node plus `spread` N(0, 1) per node, cast through float16
    (cosines >= 0.999): (batch, h, w, c) float32. NCut's hardest input: min-max normalisation
    turns the noise into a graph without structure, split into hundreds of segments whose
    eigenproblems converge slowly or not at all (benchmarks/ncut_worst_case.py)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(batch, 1, 1, c))
    feats = direction + spread * rng.normal(size=(batch, h, w, c))
    return feats.astype(np.float16).astype(np.float32)


def region_images(batch: int, size: int, *, regions=(3, 5, 8, 12, 20, 30, 50, 6), seed: int = 0,
                  noise: float = 0.02) -> np.ndarray:
    """(batch, size, size, 3) float32 images in [0, 1]: Voronoi cells of random sites, each one
    random colour plus a little noise; image i has regions[i % len(regions)] cells."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((batch, size, size, 3), np.float32)
    for i in range(batch):
        k = regions[i % len(regions)]
        sites = rng.uniform(0, size, size=(k, 2))
        cell = np.argmin((yy[..., None] - sites[:, 0]) ** 2 + (xx[..., None] - sites[:, 1]) ** 2, -1)
        out[i] = rng.random((k, 3))[cell] + noise * rng.normal(size=(size, size, 3))
    return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=None)
def _structured_model_class():
    """The class once (jitted programs are cached by the model, which compares by class)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from diffcut_jax.segmentation import FeatureModel

    @dataclasses.dataclass(frozen=True)
    class StructuredFeatureModel(FeatureModel):
        scale: float = 10.0
        frequency: float = 6.0

        def features(self, params, images, noise, size):
            base = super().features(params, images, noise, size)
            b, h, w, c = base.shape
            s = images.shape[1] // h
            pooled = images[:, : h * s, : w * s].reshape(b, h, s, w, s, 3).mean(axis=(2, 4))
            key_w, key_p = jax.random.split(jax.random.PRNGKey(0))
            proj = self.frequency * jax.random.normal(key_w, (3, c), jnp.float32)
            phase = jax.random.uniform(key_p, (c,), jnp.float32, 0.0, 2 * np.pi)
            rff = jnp.sqrt(2.0 / c) * jnp.cos(
                jnp.einsum("bhwk,kc->bhwc", pooled, proj, precision=jax.lax.Precision.HIGHEST) + phase)
            unit = base / jnp.maximum(jnp.linalg.norm(base, axis=-1, keepdims=True), 1e-12)
            return unit + self.scale * rff

    return StructuredFeatureModel


def structured_feature_model(extractor, scale: float = 10.0, frequency: float = 6.0):
    """The extractor's feature model with structure injected after the UNet, for timing the
    whole pipeline on random weights (whose features are nearly constant: NCut would cut noise
    into hundreds of segments). The UNet and the VAE still run; to their features (normalised) it
    adds `scale` x fixed random Fourier features of each node's mean colour, so nodes of one
    colour are alike and nodes of distinct colours nearly orthogonal: on `region_images` the NCut,
    the assignment and PAMR see segments like a trained model's."""
    from diffcut_jax.segmentation import FeatureModel

    base = FeatureModel.of(extractor)
    return _structured_model_class()(base.unet_graph, base.vae_graph, base.timestep, base.schedule,
                                     scale=float(scale), frequency=float(frequency))
