"""Stage 1, features: an image to the diffusion UNet's feature map (docs/architecture.md).

- `extractor`: the feature extractor (`load_extractor`, `DiffusionFeatureExtractor`, `extract`).
- `hub`: a local directory or hub id resolved to the checkpoint's files.
- `checkpoint`: checkpoint conversion, PyTorch names to the NNX state, checked (`torch_to_nnx`).
- `saved`: converted parameters saved and loaded without conversion (`DiffCut.save`).
"""
