"""What a rerun into the same output directory must share, and the device configuration.

The labels depend on the model (where it was loaded from, its compute dtype, timestep, seed),
the segmenter's options and, when segments are named, the CLIP model, its input size and
normalisation and the vocabulary's classes. COCO shards also depend on the inputs and how they
are cut (processes, shard size). Never on the batch size or the device count of a process.
They can depend, in round-off, on the process configuration (platform, device kind, devices per
process): that is recorded apart, and a resumed run on another configuration is told so, not
refused (docs/usage.md, "Which results are reproducible").

The command builds these from its flags before loading anything (a refused or finished rerun
loads no model); `label_dataset` from the loaded segmenter and labeller: the same values.
"""
from __future__ import annotations

import dataclasses


def labels_fingerprint(*, model: str, dtype: str, timestep: int, seed: int, options: dict,
                       clip: dict | None = None) -> dict:
    """What the labels depend on; `clip` from `clip_fingerprint` when segments are named."""
    labels = {"model": str(model), "dtype": str(dtype), "timestep": int(timestep),
              "seed": int(seed), **options}
    if clip is not None:
        labels.update(clip)
    return labels


def clip_fingerprint(*, clip_model: str, image_size: int, square: bool, normalize: bool,
                     classes) -> dict:
    return {"clip_model": str(clip_model), "clip_image_size": int(image_size),
            "clip_square": bool(square), "clip_normalize": bool(normalize),
            "classes": [list(c) for c in classes]}


def of_segmenter(seg, labeller=None) -> dict:
    """`labels_fingerprint` of a loaded segmenter (and labeller)."""
    ext = seg.extractor
    source = ext.provenance.get("saved") or ext.provenance.get("model")
    clip = None
    if labeller is not None:
        clip = clip_fingerprint(clip_model=labeller.clip.source, image_size=labeller.image_size,
                                square=labeller.square, normalize=labeller.normalize_input,
                                classes=labeller.vocabulary.classes)
    return labels_fingerprint(model=source, dtype=ext.provenance.get("dtype"),
                              timestep=ext.timestep, seed=ext.seed,
                              options=dataclasses.asdict(seg.options), clip=clip)


def device_configuration(devices=None) -> dict:
    """The process configuration round-off can depend on: platform, device kind, the devices a
    process runs on and has, the processes."""
    import jax

    local = jax.local_devices()
    used = list(devices or local)
    return {"platform": used[0].platform, "device_kind": used[0].device_kind,
            "devices": len(used), "local_devices": len(local),
            "processes": jax.process_count()}


def run_fingerprint(labels: dict, *, inputs: dict, formats, processes: int, shard_size: int) -> dict:
    """The refusal fingerprint of a run: the labels and, for COCO shards, the inputs and their
    layout (files per image: later runs may add inputs to the folder)."""
    if "coco" not in formats:
        return {"labels": labels}
    return {"labels": labels, "inputs": inputs,
            "layout": {"processes": processes, "shard_size": shard_size}}
