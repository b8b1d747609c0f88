"""The VAE encoder (diffusers `AutoencoderKL.encoder` + `quant_conv`), Flax NNX, NHWC.

Returns the posterior mean times `scaling_factor` (docs/algorithm.md §1.2). The decoder and
`post_quant_conv` are not built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from diffcut_jax.models.layers import (
    Downsample2D, Numerics, ResnetBlock2D, attention, conv, group_norm, linear,
)
from diffcut_jax.models.errors import ArchitectureError

_EPS = 1e-6


@dataclass(frozen=True)
class VAEConfig:
    block_out_channels: tuple[int, ...]
    layers_per_block: int = 2
    in_channels: int = 3
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    use_quant_conv: bool = True
    mid_block_add_attention: bool = True
    force_upcast: bool = True

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any]) -> "VAEConfig":
        if "block_out_channels" not in cfg:
            raise ArchitectureError("vae config.json: missing key 'block_out_channels'")
        for t in cfg.get("down_block_types", ()):
            if t != "DownEncoderBlock2D":
                raise ArchitectureError(f"vae config.json: down block type {t!r} is not supported")
        if cfg.get("act_fn", "silu") != "silu":
            raise ArchitectureError(f"vae config.json: act_fn {cfg.get('act_fn')!r} is not supported")
        return cls(
            block_out_channels=tuple(cfg["block_out_channels"]),
            layers_per_block=cfg.get("layers_per_block", 2),
            in_channels=cfg.get("in_channels", 3),
            latent_channels=cfg.get("latent_channels", 4),
            norm_num_groups=cfg.get("norm_num_groups", 32),
            scaling_factor=float(cfg.get("scaling_factor", 0.18215)),
            use_quant_conv=bool(cfg.get("use_quant_conv", True)),
            mid_block_add_attention=bool(cfg.get("mid_block_add_attention", True)),
            force_upcast=bool(cfg.get("force_upcast", True)),
        )


class VAEAttention(nnx.Module):
    """The mid block's single-head spatial self-attention, with its group norm and residual."""

    def __init__(self, c, groups, p: Numerics, rngs):
        self.numerics = p
        self.group_norm = group_norm(c, groups, _EPS, p, rngs)
        self.to_q = linear(c, c, p, rngs)
        self.to_k = linear(c, c, p, rngs)
        self.to_v = linear(c, c, p, rngs)
        self.to_out = nnx.List([linear(c, c, p, rngs)])

    def __call__(self, x):
        b, h, w, c = x.shape
        y = self.group_norm(x).reshape(b, h * w, c)
        # 16384 x 16384 logits per image at 1024 x 1024: "auto" streams them in query chunks.
        y = attention(self.to_q(y), self.to_k(y), self.to_v(y), 1, numerics=self.numerics)
        return x + self.to_out[0](y).reshape(b, h, w, c)


class DownEncoderBlock(nnx.Module):
    def __init__(self, cin, cout, layers, add_downsample, groups, p, rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(cin if j == 0 else cout, cout, None, groups=groups, eps=_EPS, p=p, rngs=rngs)
            for j in range(layers)
        ])
        self.downsamplers = nnx.List([Downsample2D(cout, padding=0, p=p, rngs=rngs)]) if add_downsample else None

    def __call__(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class MidBlock(nnx.Module):
    def __init__(self, c, groups, add_attention, p, rngs):
        self.resnets = nnx.List([
            ResnetBlock2D(c, c, None, groups=groups, eps=_EPS, p=p, rngs=rngs) for _ in range(2)
        ])
        self.attentions = nnx.List([VAEAttention(c, groups, p, rngs)]) if add_attention else None

    def __call__(self, x):
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, p: Numerics, rngs):
        ch = cfg.block_out_channels
        g = cfg.norm_num_groups
        self.conv_in = conv(cfg.in_channels, ch[0], 3, p, rngs)
        self.down_blocks = nnx.List([
            DownEncoderBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, i < len(ch) - 1, g, p, rngs)
            for i in range(len(ch))
        ])
        self.mid_block = MidBlock(ch[-1], g, cfg.mid_block_add_attention, p, rngs)
        self.conv_norm_out = group_norm(ch[-1], g, _EPS, p, rngs)
        self.conv_out = conv(ch[-1], 2 * cfg.latent_channels, 3, p, rngs)

    def __call__(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class VAEEncoder(nnx.Module):
    """images (B, H, W, 3) in [0, 1] -> scaled posterior mean (B, H/f, W/f, latent_channels)."""

    def __init__(self, cfg: VAEConfig, *, numerics: Numerics = Numerics(), rngs: nnx.Rngs):
        self.cfg = cfg
        self.dtype = numerics.dtype
        self.encoder = Encoder(cfg, numerics, rngs)
        c = 2 * cfg.latent_channels
        self.quant_conv = conv(c, c, 1, numerics, rngs) if cfg.use_quant_conv else None

    def __call__(self, images):
        x = (2.0 * images - 1.0).astype(self.dtype)
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean = moments[..., : self.cfg.latent_channels]
        return mean.astype(jnp.float32) * self.cfg.scaling_factor


# The decoder side of the autoencoder: never run.
IGNORE_PATTERNS = (r"^decoder\.", r"^post_quant_conv\.")
