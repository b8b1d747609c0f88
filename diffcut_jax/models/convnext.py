"""timm's ConvNeXt (the image tower of open_clip's ConvNeXt CLIPs), Flax NNX, NHWC.

Attribute names mirror timm's modules (`stem.0` conv, `stem.1` norm, `stages.i.downsample.{0,1}`,
`stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`, `head.norm`), so that a parameter's NNX
path spells its timm name (`diffcut_jax/features/checkpoint.py`). In NHWC, timm's LayerNorm2d (a channel
norm of NCHW maps) is the ordinary LayerNorm over the last axis, and the 1x1-conv MLP of the
smallest variants (`conv_mlp=True`) is the same product as the Linear MLP of the others; both
are kept as they are stored (a 1x1 `Conv` or a `Linear`), so each checkpoint loads unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
from flax import nnx

from diffcut_jax.models.errors import ArchitectureError
from diffcut_jax.models.layers import Numerics, layer_norm, linear

# timm's variants: name -> (depths, widths, conv_mlp). Every variant uses LayerNorm eps 1e-6
# except xxlarge (1e-5).
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], bool]] = {
    "convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320), True),
    "convnext_femto": ((2, 2, 6, 2), (48, 96, 192, 384), True),
    "convnext_pico": ((2, 2, 6, 2), (64, 128, 256, 512), True),
    "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640), True),
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768), False),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768), False),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024), False),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536), False),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048), False),
    "convnext_xxlarge": ((3, 4, 30, 3), (384, 768, 1536, 3072), False),
}


@dataclass(frozen=True)
class ConvNeXtConfig:
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    conv_mlp: bool = False
    eps: float = 1e-6
    mlp_ratio: int = 4
    kernel_size: int = 7
    in_channels: int = 3

    @classmethod
    def from_timm_name(cls, name: str) -> "ConvNeXtConfig":
        base = name.split(".")[0]  # "convnext_large.fb_in22k" -> "convnext_large"
        if base not in VARIANTS:
            raise ArchitectureError(
                f"timm model {name!r} is not a supported ConvNeXt; known: {sorted(VARIANTS)}")
        depths, widths, conv_mlp = VARIANTS[base]
        return cls(depths, widths, conv_mlp, 1e-5 if base == "convnext_xxlarge" else 1e-6)

    @property
    def num_features(self) -> int:
        return self.widths[-1]

    @property
    def stride(self) -> int:
        return 4 * 2 ** (len(self.depths) - 1)


def _conv(cin, cout, k, p: Numerics, rngs, *, stride=1, padding=0, groups=1):
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=((padding, padding),) * 2,
                    feature_group_count=groups, dtype=p.dtype, param_dtype=p.param_dtype,
                    precision=p.conv_precision, rngs=rngs)


class Mlp(nnx.Module):
    """fc1, exact GELU, fc2 (timm `Mlp`); 1x1 convs for `conv_mlp`, Linears otherwise."""

    def __init__(self, cin, hidden, cout, p: Numerics, rngs, *, conv=False, bias=(True, True)):
        if conv:
            self.fc1 = _conv(cin, hidden, 1, p, rngs)
            self.fc2 = _conv(hidden, cout, 1, p, rngs)
        else:
            self.fc1 = linear(cin, hidden, p, rngs, use_bias=bias[0])
            self.fc2 = linear(hidden, cout, p, rngs, use_bias=bias[1])

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """Depthwise 7x7, LayerNorm, MLP, layer scale (`gamma`), residual."""

    def __init__(self, c, cfg: ConvNeXtConfig, p: Numerics, rngs):
        k = cfg.kernel_size
        self.conv_dw = _conv(c, c, k, p, rngs, padding=k // 2, groups=c)
        self.norm = layer_norm(c, cfg.eps, p, rngs)
        self.mlp = Mlp(c, cfg.mlp_ratio * c, c, p, rngs, conv=cfg.conv_mlp)
        self.gamma = nnx.Param(jax.numpy.full((c,), 1e-6, p.param_dtype))

    def __call__(self, x):
        y = self.mlp(self.norm(self.conv_dw(x)))
        return x + y * self.gamma[...].astype(y.dtype)


class Stage(nnx.Module):
    def __init__(self, cin, cout, depth, cfg: ConvNeXtConfig, p: Numerics, rngs, *, downsample):
        # Stage 0 follows the stride-4 stem and has no downsampling (timm: an Identity).
        self.downsample = nnx.List([layer_norm(cin, cfg.eps, p, rngs),
                                    _conv(cin, cout, 2, p, rngs, stride=2)]) if downsample else None
        self.blocks = nnx.List([Block(cout, cfg, p, rngs) for _ in range(depth)])

    def __call__(self, x):
        if self.downsample is not None:
            x = self.downsample[1](self.downsample[0](x))
        for block in self.blocks:
            x = block(x)
        return x


class Head(nnx.Module):
    """timm's `NormMlpClassifierHead` with no classifier: average pool, LayerNorm, flatten."""

    def __init__(self, c, cfg: ConvNeXtConfig, p: Numerics, rngs):
        self.norm = layer_norm(c, cfg.eps, p, rngs)

    def __call__(self, pooled):
        """pooled (..., C): already averaged (a 1 x 1 map pools to itself)."""
        return self.norm(pooled)


class ConvNeXt(nnx.Module):
    def __init__(self, cfg: ConvNeXtConfig, *, numerics: Numerics = Numerics(), rngs: nnx.Rngs):
        p = numerics
        self.cfg = cfg
        w = cfg.widths
        self.stem = nnx.List([_conv(cfg.in_channels, w[0], 4, p, rngs, stride=4),
                              layer_norm(w[0], cfg.eps, p, rngs)])
        self.stages = nnx.List([
            Stage(w[max(i - 1, 0)], w[i], d, cfg, p, rngs, downsample=i > 0)
            for i, d in enumerate(cfg.depths)
        ])
        self.head = Head(w[-1], cfg, p, rngs)

    def stage_outputs(self, x) -> list:
        """(B, H, W, 3) -> every stage's output; the last is the dense map (timm's `norm_pre`
        is the identity for these models)."""
        x = self.stem[1](self.stem[0](x))
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def __call__(self, x):
        return self.stage_outputs(x)[-1]
