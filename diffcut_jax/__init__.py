"""diffcut_jax: zero-shot semantic segmentation with diffusion features and recursive NCut,
and open-vocabulary naming of the segments with CLIP."""
from diffcut_jax.autosc import autosc
from diffcut_jax.clip_model import DEFAULT_CLIP, ClipModel, TextClassifier, load_clip
from diffcut_jax.coherence import coherence_map
from diffcut_jax.concepts import assign_concepts
from diffcut_jax.extractor import DiffusionFeatureExtractor, load_extractor
from diffcut_jax.labelling import Labeller, Labelling, LabelOptions
from diffcut_jax.ncut import recursive_ncut
from diffcut_jax.pamr import pamr, refine
from diffcut_jax.segmenter import DiffCut
from diffcut_jax.vocabulary import Vocabulary, parse_vocabulary

__all__ = [
    "DEFAULT_CLIP", "ClipModel", "DiffCut", "DiffusionFeatureExtractor", "LabelOptions", "Labeller",
    "Labelling", "TextClassifier", "Vocabulary", "assign_concepts", "autosc", "coherence_map",
    "load_clip", "load_extractor", "pamr", "parse_vocabulary", "recursive_ncut", "refine",
]
