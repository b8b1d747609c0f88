"""The UNet's down path up to DiffCut's feature layer (docs/algorithm.md §1.5), Flax NNX.

The feature layer is the self-attention (`attn1`, after its output projection, before the residual)
of the last transformer block of the last attention module of the last down block that has
attention: `down_blocks[-1]` for the SDXL family, `down_blocks[-2]` for SD1.x. Blocks, layers and
projections after it are not built (no mid block, no up path).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax.numpy as jnp
from flax import nnx

from diffcut_jax.models.errors import ArchitectureError

from diffcut_jax.models.layers import (
    Downsample2D, Numerics, ResnetBlock2D, TimestepEmbedding, Transformer2DModel, conv,
    timestep_embedding,
)

_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")


def _per_block(value, n, name):
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ArchitectureError(f"unet config: {name} has {len(value)} entries for {n} down blocks")
        return tuple(value)
    return (value,) * n


@dataclass(frozen=True)
class UNetConfig:
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    layers_per_block: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    heads: tuple[int, ...]
    cross_attention_dim: tuple[int, ...]
    in_channels: int = 4
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    downsample_padding: int = 1
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None
    projection_class_embeddings_input_dim: int | None = None

    @property
    def feature_block(self) -> int:
        return max(i for i, t in enumerate(self.down_block_types) if t == "CrossAttnDownBlock2D")

    @property
    def feature_channels(self) -> int:
        return self.block_out_channels[self.feature_block]

    @property
    def feature_stride(self) -> int:
        """Downsampling factor from the latent to the feature map."""
        return 2 ** self.feature_block

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any]) -> "UNetConfig":
        def need(key):
            if key not in cfg:
                raise ArchitectureError(f"unet config.json: missing key {key!r}")
            return cfg[key]

        types = tuple(need("down_block_types"))
        n = len(types)
        for t in types:
            if t not in _BLOCK_TYPES:
                raise ArchitectureError(
                    f"unet config.json: down block type {t!r} is not supported (known: {_BLOCK_TYPES})"
                )
        if "CrossAttnDownBlock2D" not in types:
            raise ArchitectureError("unet config.json: no CrossAttnDownBlock2D, so no feature layer")
        for key, allowed in (
            ("addition_embed_type", (None, "text_time")),
            ("class_embed_type", (None,)),
            ("time_embedding_type", (None, "positional")),
            ("resnet_time_scale_shift", (None, "default")),
            ("encoder_hid_dim_type", (None,)),
            ("attention_type", (None, "default")),
            ("time_cond_proj_dim", (None,)),
        ):
            if cfg.get(key) not in allowed:
                raise ArchitectureError(f"unet config.json: {key}={cfg.get(key)!r} is not supported")
        if cfg.get("dual_cross_attention") or cfg.get("only_cross_attention") not in (None, False):
            raise ArchitectureError("unet config.json: dual/only cross-attention is not supported")
        if cfg.get("center_input_sample"):
            raise ArchitectureError("unet config.json: center_input_sample is not supported")
        if cfg.get("resnet_out_scale_factor", 1.0) != 1.0 or cfg.get("act_fn", "silu") != "silu":
            raise ArchitectureError("unet config.json: only silu resnets with output scale 1 are supported")
        channels = tuple(need("block_out_channels"))
        # diffusers: num_attention_heads defaults to attention_head_dim (a historical misnomer).
        heads = cfg.get("num_attention_heads") or need("attention_head_dim")
        layers = cfg.get("transformer_layers_per_block", 1)
        layers = tuple(
            l if isinstance(l, int) else _uniform(l, i) for i, l in enumerate(_per_block(layers, n, "transformer_layers_per_block"))
        )
        return cls(
            block_out_channels=channels,
            down_block_types=types,
            layers_per_block=_per_block(need("layers_per_block"), n, "layers_per_block"),
            transformer_layers=layers,
            heads=_per_block(heads, n, "attention heads"),
            cross_attention_dim=_per_block(need("cross_attention_dim"), n, "cross_attention_dim"),
            in_channels=cfg.get("in_channels", 4),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            norm_eps=cfg.get("norm_eps", 1e-5),
            downsample_padding=cfg.get("downsample_padding", 1),
            use_linear_projection=bool(cfg.get("use_linear_projection", False)),
            flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", True)),
            freq_shift=float(cfg.get("freq_shift", 0)),
            addition_embed_type=cfg.get("addition_embed_type"),
            addition_time_embed_dim=cfg.get("addition_time_embed_dim"),
            projection_class_embeddings_input_dim=cfg.get("projection_class_embeddings_input_dim"),
        )


def _uniform(per_layer, block):
    if len(set(per_layer)) != 1:
        raise ArchitectureError(
            f"unet config.json: block {block} has varying transformer layers {per_layer}"
        )
    return per_layer[0]


class DownBlock(nnx.Module):
    """DownBlock2D or CrossAttnDownBlock2D; `feature_only` stops at the feature layer."""

    def __init__(self, cfg: UNetConfig, i: int, cin: int, temb: int, *, feature_only, p, rngs):
        cout = cfg.block_out_channels[i]
        n = cfg.layers_per_block[i]
        has_attention = cfg.down_block_types[i] == "CrossAttnDownBlock2D"
        self.feature_only = feature_only
        self.resnets = nnx.List([
            ResnetBlock2D(cin if j == 0 else cout, cout, temb, groups=cfg.norm_num_groups,
                          eps=cfg.norm_eps, p=p, rngs=rngs)
            for j in range(n)
        ])
        self.attentions = nnx.List([
            Transformer2DModel(
                cout, cfg.cross_attention_dim[i], cfg.heads[i], cfg.transformer_layers[i],
                groups=cfg.norm_num_groups, linear_projection=cfg.use_linear_projection,
                feature_only=feature_only and j == n - 1, p=p, rngs=rngs,
            )
            for j in range(n)
        ]) if has_attention else None
        last = i == len(cfg.block_out_channels) - 1
        self.downsamplers = None if (last or feature_only) else nnx.List(
            [Downsample2D(cout, padding=cfg.downsample_padding, p=p, rngs=rngs)]
        )

    def __call__(self, x, temb, context):
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[j](x, context)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UNetEncoder(nnx.Module):
    """conv_in, time (+ text_time) embeddings and the down blocks through the feature layer."""

    def __init__(self, cfg: UNetConfig, *, numerics: Numerics = Numerics(), rngs: nnx.Rngs):
        p = numerics
        self.cfg = cfg
        c0 = cfg.block_out_channels[0]
        temb = 4 * c0
        self.conv_in = conv(cfg.in_channels, c0, 3, p, rngs)
        self.time_embedding = TimestepEmbedding(c0, temb, p, rngs)
        if cfg.addition_embed_type == "text_time":
            self.add_embedding = TimestepEmbedding(cfg.projection_class_embeddings_input_dim, temb, p, rngs)
        else:
            self.add_embedding = None
        blocks, cin = [], c0
        for i in range(cfg.feature_block + 1):
            blocks.append(DownBlock(cfg, i, cin, temb, feature_only=i == cfg.feature_block, p=p, rngs=rngs))
            cin = cfg.block_out_channels[i]
        self.down_blocks = nnx.List(blocks)
        self.dtype = p.dtype

    def __call__(self, sample, timestep, context, *, text_embeds=None, time_ids=None):
        """sample (B, h, w, C_in) latent; timestep scalar or (B,); context (B, 77, D).

        Returns the feature map (B, h / 2**feature_block, w / 2**feature_block, C).
        """
        cfg = self.cfg
        b = sample.shape[0]
        t = jnp.broadcast_to(jnp.asarray(timestep), (b,))
        emb = timestep_embedding(t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                 freq_shift=cfg.freq_shift)
        emb = self.time_embedding(emb.astype(self.dtype))
        if self.add_embedding is not None:
            if text_embeds is None or time_ids is None:
                raise ValueError("UNetEncoder: text_time conditioning needs text_embeds and time_ids")
            tid = timestep_embedding(time_ids.reshape(-1), cfg.addition_time_embed_dim,
                                     flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
            tid = tid.reshape(b, -1)
            aug = jnp.concatenate([text_embeds.astype(jnp.float32), tid], axis=-1)
            emb = emb + self.add_embedding(aug.astype(self.dtype))
        x = self.conv_in(sample.astype(self.dtype))
        context = context.astype(self.dtype)
        for block in self.down_blocks:
            x = block(x, emb, context)
        return x


def ignore_patterns(cfg: UNetConfig) -> tuple[str, ...]:
    """Checkpoint tensors past the feature layer: deliberately not loaded."""
    fb = cfg.feature_block
    last_attn = cfg.layers_per_block[fb] - 1
    last_block = cfg.transformer_layers[fb] - 1
    pats = [
        r"^mid_block\.",
        r"^up_blocks\.",
        r"^conv_norm_out\.",
        r"^conv_out\.",
        rf"^down_blocks\.{fb}\.downsamplers\.",
        rf"^down_blocks\.{fb}\.attentions\.{last_attn}\.proj_out\.",
        rf"^down_blocks\.{fb}\.attentions\.{last_attn}\.transformer_blocks\.{last_block}\."
        r"(norm2|attn2|norm3|ff)\.",
    ]
    pats += [rf"^down_blocks\.{i}\." for i in range(fb + 1, len(cfg.down_block_types))]
    return tuple(pats)
