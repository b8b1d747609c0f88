"""diffcut_jax: zero-shot semantic segmentation with diffusion features and recursive NCut."""
from diffcut_jax.autosc import autosc
from diffcut_jax.concepts import assign_concepts
from diffcut_jax.extractor import DiffusionFeatureExtractor, load_extractor
from diffcut_jax.ncut import recursive_ncut
from diffcut_jax.pamr import pamr, refine

__all__ = [
    "DiffusionFeatureExtractor", "assign_concepts", "autosc", "load_extractor", "pamr",
    "recursive_ncut", "refine",
]
