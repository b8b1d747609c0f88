"""Stage 4, naming: segments named by an open-vocabulary CLIP.

- `clip_model`: `load_clip`, dense features, mask pooling, the text classifier, class logits.
- `clip_tokenizer`: open_clip's tokenizer on `tokenizers` (BPE file in `assets/`).
- `vocabulary`: vocabularies (presets with synonyms, files, inline).
- `labelling`: the `Labeller`, one jitted step from images and label maps to named segments.
"""
