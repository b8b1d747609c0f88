"""CLIP text encoders (transformers `CLIPTextModel` / `CLIPTextModelWithProjection`), Flax NNX.

Returns every hidden state (embeddings, then after each layer), the final-layer-norm output and,
with a projection, the projected EOS embedding: enough for SD1.x (last hidden state) and the SDXL
family (penultimate hidden states of both encoders, pooled projection of the second).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from diffcut_jax.models.layers import Numerics, attention, layer_norm, linear
from diffcut_jax.models.errors import ArchitectureError

_ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int | None = None  # set for CLIPTextModelWithProjection

    @classmethod
    def from_transformers(cls, cfg: Mapping[str, Any], *, with_projection: bool) -> "CLIPTextConfig":
        cfg = dict(cfg.get("text_config", cfg))
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads") if k not in cfg]
        if missing:
            raise ArchitectureError(f"text encoder config.json: missing keys {missing}")
        act = cfg.get("hidden_act", "quick_gelu")
        if act not in _ACTIVATIONS:
            raise ArchitectureError(f"text encoder config.json: hidden_act {act!r} is not supported")
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            max_position_embeddings=cfg.get("max_position_embeddings", 77),
            hidden_act=act,
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
            projection_dim=cfg.get("projection_dim", cfg["hidden_size"]) if with_projection else None,
        )


class TextOutput(NamedTuple):
    hidden_states: tuple  # num_hidden_layers + 1 arrays (B, T, D)
    last_hidden_state: jnp.ndarray  # after the final layer norm
    text_embeds: jnp.ndarray | None  # projected EOS embedding (with projection)


class CLIPAttention(nnx.Module):
    def __init__(self, d, heads, p, rngs):
        self.heads = heads
        self.numerics = p
        self.q_proj = linear(d, d, p, rngs)
        self.k_proj = linear(d, d, p, rngs)
        self.v_proj = linear(d, d, p, rngs)
        self.out_proj = linear(d, d, p, rngs)

    def __call__(self, x):
        out = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, causal=True,
                        numerics=self.numerics)
        return self.out_proj(out)


class CLIPMLP(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, p, rngs):
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, p, rngs)
        self.fc2 = linear(cfg.intermediate_size, cfg.hidden_size, p, rngs)

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, p, rngs):
        d = cfg.hidden_size
        self.layer_norm1 = layer_norm(d, cfg.layer_norm_eps, p, rngs)
        self.self_attn = CLIPAttention(d, cfg.num_attention_heads, p, rngs)
        self.layer_norm2 = layer_norm(d, cfg.layer_norm_eps, p, rngs)
        self.mlp = CLIPMLP(cfg, p, rngs)

    def __call__(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, p, rngs):
        kw = dict(dtype=p.dtype, param_dtype=p.param_dtype, rngs=rngs)
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)

    def __call__(self, ids):
        return self.token_embedding(ids) + self.position_embedding(jnp.arange(ids.shape[-1]))[None]


class CLIPEncoder(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, p, rngs):
        self.layers = nnx.List([CLIPEncoderLayer(cfg, p, rngs) for _ in range(cfg.num_hidden_layers)])


class CLIPTextModel(nnx.Module):
    """Parameter paths follow the checkpoints' names without their `text_model.` prefix."""

    def __init__(self, cfg: CLIPTextConfig, *, numerics: Numerics = Numerics(), rngs: nnx.Rngs):
        p = numerics
        self.cfg = cfg
        self.embeddings = CLIPEmbeddings(cfg, p, rngs)
        self.encoder = CLIPEncoder(cfg, p, rngs)
        self.final_layer_norm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, p, rngs)
        self.text_projection = (
            linear(cfg.hidden_size, cfg.projection_dim, p, rngs, use_bias=False)
            if cfg.projection_dim is not None else None
        )

    def __call__(self, ids: jnp.ndarray) -> TextOutput:
        x = self.embeddings(ids)
        hidden = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            hidden.append(x)
        last = self.final_layer_norm(x)
        embeds = None
        if self.text_projection is not None:
            # EOS position = argmax of the ids (legacy configs have eos_token_id 2).
            eos = jnp.argmax(ids, axis=-1)
            pooled = last[jnp.arange(ids.shape[0]), eos]
            embeds = self.text_projection(pooled)
        return TextOutput(tuple(hidden), last, embeds)


# Older transformers versions saved the position ids buffer.
IGNORE_PATTERNS = (r"^(text_model\.)?embeddings\.position_ids$",)


def strip_text_model_prefix(name: str) -> str:
    """Real checkpoints name `text_model.encoder...`; transformers 5 saves `encoder...`."""
    return name[len("text_model."):] if name.startswith("text_model.") else name
