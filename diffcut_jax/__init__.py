"""diffcut_jax: zero-shot semantic segmentation with diffusion features and recursive NCut."""
from diffcut_jax.autosc import autosc
from diffcut_jax.coherence import coherence_map
from diffcut_jax.concepts import assign_concepts
from diffcut_jax.extractor import DiffusionFeatureExtractor, load_extractor
from diffcut_jax.ncut import recursive_ncut
from diffcut_jax.pamr import pamr, refine
from diffcut_jax.segmenter import DiffCut

__all__ = [
    "DiffCut", "DiffusionFeatureExtractor", "assign_concepts", "autosc", "coherence_map",
    "load_extractor", "pamr", "recursive_ncut", "refine",
]
