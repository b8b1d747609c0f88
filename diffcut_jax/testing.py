"""Random checkpoints in the real diffusers layout, for tests, examples and benchmarks (no torch).

    write_random_checkpoint(path, "ssd-1b", dtype="float16")   # full size, every real tensor
    write_random_checkpoint(path, tiny_spec("sdxl"))            # a few MB, same structure

The layout is diffusers' own: `<root>/<part>/config.json` and
`<root>/<part>/diffusion_pytorch_model[.fp16].safetensors` (`model[.fp16].safetensors` for the
text encoders), tensors in PyTorch layout under their real names (`text_model.` prefix included).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from diffcut_jax import presets
from diffcut_jax.checkpoint import abstract_module, nnx_path_to_torch
from diffcut_jax.hub import WEIGHT_NAMES
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


def _is_norm_weight(name: str, shape) -> bool:
    return len(shape) == 1 and name.endswith(".weight") and ("norm" in name.split(".")[-2])
