"""open_clip's ConvNeXt CLIP (timm trunk + MLP head, CLIP text transformer), Flax NNX.

Built from the hub repository's `open_clip_config.json` (`model_cfg`). The image tower is
`convnext.ConvNeXt` plus open_clip's projection head (`visual.head.mlp` or `visual.head.proj`);
the text tower is the CLIP text transformer of `clip.py` (causal mask, final LayerNorm, projection
of the end token), configured from `text_cfg`. Checkpoint names are open_clip's own state-dict
names; `OpenCLIPSource` presents them under the model's names (`text.` prefix, the fused
attention input projection split into q, k, v), so the one conversion function
(`checkpoint.torch_to_nnx`) fills the model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcut_jax.models import clip
from diffcut_jax.models.convnext import ConvNeXt, ConvNeXtConfig, Mlp
from diffcut_jax.models.errors import ArchitectureError
from diffcut_jax.models.layers import Numerics, linear

# Buffers some exports carry (the causal mask) and a classifier open_clip never uses.
IGNORE_PATTERNS = (r"^attn_mask$", r"^visual\.trunk\.head\.fc\.")

# open_clip options whose non-default values we do not implement.
_TEXT_DEFAULTS = {"hf_model_name": None, "embed_cls": False, "no_causal_mask": False,
                  "pool_type": "argmax", "proj_bias": False, "final_ln_after_pool": False,
                  "ls_init_value": None, "attn_pooler_heads": None, "proj_type": "linear"}
_VISION_KEYS = ("timm_model_name",)


@dataclass(frozen=True)
class OpenCLIPConfig:
    embed_dim: int
    trunk: ConvNeXtConfig
    head: str  # "mlp" (fc1, GELU, fc2) or "linear" (proj)
    head_bias: bool
    text: clip.CLIPTextConfig
    image_size: int  # the size it was trained at (informative: any multiple of 32 works)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_open_clip(cls, config: Mapping[str, Any]) -> "OpenCLIPConfig":
        """From `open_clip_config.json` (or its `model_cfg`)."""
        cfg = config.get("model_cfg", config)
        where = "open_clip_config.json"
        try:
            embed, vision, text = cfg["embed_dim"], dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
        except KeyError as e:
            raise ArchitectureError(f"{where}: model_cfg lacks {e.args[0]!r}") from None
        if "timm_model_name" not in vision:
            raise ArchitectureError(f"{where}: only timm ConvNeXt image towers are supported "
                                    f"(vision_cfg has no timm_model_name: {sorted(vision)})")
        if vision.get("timm_pool", "") not in ("", "avg"):
            raise ArchitectureError(f"{where}: timm_pool {vision['timm_pool']!r} is not supported")
        head = vision.get("timm_proj", "linear")
        if head not in ("mlp", "linear"):
            raise ArchitectureError(f"{where}: timm_proj {head!r} is not supported (mlp, linear)")
        for key, default in _TEXT_DEFAULTS.items():
            if text.get(key, default) != default:
                raise ArchitectureError(f"{where}: text_cfg {key}={text[key]!r} is not supported")
        try:
            width, layers, heads = text["width"], text["layers"], text["heads"]
        except KeyError as e:
            raise ArchitectureError(f"{where}: text_cfg lacks {e.args[0]!r}") from None
        text_cfg = clip.CLIPTextConfig(
            vocab_size=text.get("vocab_size", 49408), hidden_size=width,
            intermediate_size=int(width * text.get("mlp_ratio", 4.0)), num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=text.get("context_length", 77),
            hidden_act="quick_gelu" if cfg.get("quick_gelu", False) else "gelu",
            layer_norm_eps=1e-5, projection_dim=embed,
        )
        pre = config.get("preprocess_cfg", config.get("preprocess", {}))
        size = vision.get("image_size", 224)
        return cls(embed, ConvNeXtConfig.from_timm_name(vision["timm_model_name"]), head,
                   bool(vision.get("timm_proj_bias", False)), text_cfg,
                   int(size if isinstance(size, int) else size[0]),
                   tuple(pre.get("mean", cls.mean)), tuple(pre.get("std", cls.std)))


class VisionHead(nnx.Module):
    """open_clip's `TimmModel.head`: `mlp` (fc1 with bias, GELU, fc2) or `proj` (one Linear)."""

    def __init__(self, cin, cfg: OpenCLIPConfig, p: Numerics, rngs):
        if cfg.head == "mlp":
            self.mlp = Mlp(cin, 2 * cfg.embed_dim, cfg.embed_dim, p, rngs, bias=(True, cfg.head_bias))
        else:
            self.proj = linear(cin, cfg.embed_dim, p, rngs, use_bias=cfg.head_bias)

    def __call__(self, x):
        return self.mlp(x) if hasattr(self, "mlp") else self.proj(x)


class Visual(nnx.Module):
    def __init__(self, cfg: OpenCLIPConfig, p: Numerics, rngs):
        self.trunk = ConvNeXt(cfg.trunk, numerics=p, rngs=rngs)
        self.head = VisionHead(cfg.trunk.num_features, cfg, p, rngs)

    def embed_pooled(self, pooled):
        """Pooled trunk features (..., C) -> image embeddings (..., E): the trunk head (LayerNorm)
        then the projection head, as open_clip does on a 1 x 1 map."""
        return self.head(self.trunk.head(pooled))


class OpenCLIP(nnx.Module):
    def __init__(self, cfg: OpenCLIPConfig, *, numerics: Numerics = Numerics(), rngs: nnx.Rngs):
        self.cfg = cfg
        self.visual = Visual(cfg, numerics, rngs)
        self.text = clip.CLIPTextModel(cfg.text, numerics=numerics, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), numerics.param_dtype))

    def encode_text(self, ids):
        """(n, T) ids -> (n, E) projected end-token features, not normalised."""
        return self.text(ids).text_embeds


# open_clip text names -> our CLIPTextModel names (under `text.`).
_TEXT_RULES = (
    (r"^token_embedding\.weight$", "text.embeddings.token_embedding.weight"),
    (r"^positional_embedding$", "text.embeddings.position_embedding.weight"),
    (r"^ln_final\.(weight|bias)$", r"text.final_layer_norm.\1"),
    (r"^transformer\.resblocks\.(\d+)\.ln_1\.", r"text.encoder.layers.\1.layer_norm1."),
    (r"^transformer\.resblocks\.(\d+)\.ln_2\.", r"text.encoder.layers.\1.layer_norm2."),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"text.encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text.encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text.encoder.layers.\1.mlp.fc2."),
)
_IN_PROJ = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


class OpenCLIPSource:
    """An open_clip state dict (any `TensorSource`) under the model's parameter names.

    `in_proj_weight` / `in_proj_bias` (q, k, v stacked) become three tensors each;
    `text_projection` (used as `x @ W`) is presented transposed, in Linear's (out, in) layout.
    Names no rule covers pass through unchanged, so the conversion reports them.
    """

    def __init__(self, source):
        self.source = source
        self._map: dict[str, tuple[str, Any]] = {}  # name -> (source name, how to read)
        for key in source.keys():
            for name, how in self._derive(key):
                self._map[name] = (key, how)

    def _derive(self, key):
        m = _IN_PROJ.match(key)
        if m:
            layer, kind = m.groups()
            return [(f"text.encoder.layers.{layer}.self_attn.{q}_proj.{kind}", ("split", j))
                    for j, q in enumerate("qkv")]
        if key == "text_projection":
            return [("text.text_projection.weight", ("transpose",))]
        for pattern, repl in _TEXT_RULES:
            if re.search(pattern, key):
                return [(re.sub(pattern, repl, key), ("same",))]
        return [(key, ("same",))]

    def origin(self, name: str) -> str:
        return self._map[name][0]

    def keys(self):
        return self._map.keys()

    def shape(self, name):
        key, how = self._map[name]
        shape = tuple(self.source.shape(key))
        if how[0] == "split":
            if shape[0] % 3:
                return (shape[0] / 3,) + shape[1:]  # reported as misshaped
            return (shape[0] // 3,) + shape[1:]
        if how[0] == "transpose":
            return shape[::-1]
        return shape

    def read(self, name):
        key, how = self._map[name]
        x = self.source.read(key)
        if how[0] == "split":
            n = x.shape[0] // 3
            return x[how[1] * n : (how[1] + 1) * n]
        if how[0] == "transpose":
            return np.ascontiguousarray(np.transpose(x))
        return x
