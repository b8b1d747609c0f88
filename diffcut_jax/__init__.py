"""diffcut_jax: zero-shot semantic segmentation with diffusion features and recursive NCut,
and open-vocabulary naming of the segments with CLIP.

The folders are the stages of docs/architecture.md, "From an image to labels": `features/`
(diffusion features), `cut/` (recursive NCut, AutoSC), `masks/` (concept assignment, PAMR),
`naming/` (CLIP), on top of `io/` and `models/`. The modules here compose them (`segmentation`,
`segmenter`, `coherence`, `programs`, `demo`, `testing`, and `streaming/`, files through the
segmenter at scale); `evaluation/` (benchmarks), `engine/` (dataset labelling: `label_dataset`),
`configs/` and `launch/` sit above. Imports run one way, downwards (tests/test_layout.py).
"""
from diffcut_jax.coherence import coherence_map
from diffcut_jax.cut.autosc import autosc
from diffcut_jax.cut.kway import kway_ncut
from diffcut_jax.cut.ncut import recursive_ncut
from diffcut_jax.engine.options import DatasetOptions
from diffcut_jax.engine.run import label_dataset
from diffcut_jax.features.extractor import DiffusionFeatureExtractor, load_extractor
from diffcut_jax.masks.concepts import assign_concepts
from diffcut_jax.masks.pamr import pamr, refine
from diffcut_jax.naming.clip_model import DEFAULT_CLIP, ClipModel, TextClassifier, load_clip
from diffcut_jax.naming.labelling import Labeller, Labelling, LabelOptions
from diffcut_jax.naming.vocabulary import Vocabulary, parse_vocabulary
from diffcut_jax.segmenter import DiffCut

__all__ = [
    "DEFAULT_CLIP", "ClipModel", "DatasetOptions", "DiffCut", "DiffusionFeatureExtractor",
    "LabelOptions", "Labeller", "Labelling", "TextClassifier", "Vocabulary", "assign_concepts",
    "autosc", "coherence_map", "kway_ncut", "label_dataset", "load_clip", "load_extractor", "pamr",
    "parse_vocabulary", "recursive_ncut", "refine",
]
