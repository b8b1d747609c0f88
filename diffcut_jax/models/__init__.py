"""Flax NNX modules of the diffusion feature extractor (UNet down path, VAE encoder, CLIP text)."""
from diffcut_jax.models.clip import CLIPTextConfig, CLIPTextModel
from diffcut_jax.models.layers import Numerics
from diffcut_jax.models.errors import ArchitectureError
from diffcut_jax.models.unet import UNetConfig, UNetEncoder
from diffcut_jax.models.vae import VAEConfig, VAEEncoder

__all__ = [
    "ArchitectureError", "CLIPTextConfig", "CLIPTextModel", "Numerics", "UNetConfig",
    "UNetEncoder", "VAEConfig", "VAEEncoder",
]
