"""Flax NNX modules of the diffusion feature extractor (UNet down path, VAE encoder, CLIP text)."""
from diffcut_jax.models.clip import CLIPTextConfig, CLIPTextModel
from diffcut_jax.models.layers import Precision
from diffcut_jax.models.unet import ArchitectureError, UNetConfig, UNetEncoder
from diffcut_jax.models.vae import VAEConfig, VAEEncoder

__all__ = [
    "ArchitectureError", "CLIPTextConfig", "CLIPTextModel", "Precision", "UNetConfig",
    "UNetEncoder", "VAEConfig", "VAEEncoder",
]
