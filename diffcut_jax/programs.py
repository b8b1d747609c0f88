"""Every program a user runs, built on abstract weights at its real shapes (nothing allocated).

    for prog in programs.catalogue():                 # the table of docs/performance.md
        print(prog.name, programs.memory(prog))         # XLA's memory analysis, GiB

Each `Program` is the jitted function the library itself runs (the segmenter's batch function,
the evaluators' and the dataset engine's `shard_map`ped device steps, the labeller's step, the
coherence map) with `jax.ShapeDtypeStruct` arguments: the full-size model's parameters come from
`nnx.eval_shape` of the preset configs (`diffcut_jax/presets/`), so lowering and compiling costs
seconds and no memory. `benchmarks/memory_analysis.py` prints the table and `tests/test_memory_budget.py`
holds every program to its budget.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcut_jax import presets

# Temporaries allowed per program: a 16 GiB accelerator then still holds the weights.
BUDGET_GIB = 8.0
DEFAULT_CLIP_PRESET = "clip-convnext-large-d-320"


@dataclass(frozen=True)
class Program:
    name: str
    fn: Callable  # the library's jitted function (possibly with static arguments bound)
    args: tuple  # abstract (or small concrete) arguments
    images: int  # images per call

    def lower(self):
        # jit of a jitted function inlines it: the same program, also for a bound partial.
        return jax.jit(self.fn).lower(*self.args)


def memory(program: Program) -> dict:
    """XLA's memory analysis of the compiled program (this backend), in GiB."""
    m = program.lower().compile().memory_analysis()
    gib = lambda b: round(b / 2**30, 3)  # noqa: E731
    return {"temp_gib": gib(m.temp_size_in_bytes), "argument_gib": gib(m.argument_size_in_bytes),
            "output_gib": gib(m.output_size_in_bytes)}


def _abstract(x):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


@functools.lru_cache(maxsize=8)
def abstract_extractor(model: str = "ssd-1b", dtype: str = "float32", attention: str = "auto",
                       image_size: int = 1024, backend: str | None = None):
    """The preset's real architecture with `jax.ShapeDtypeStruct` parameters and the numerics of
    `backend` (`testing.random_extractor(..., abstract=True)`), cached."""
    from diffcut_jax.testing import random_extractor

    return random_extractor(model, dtype=dtype, image_size=image_size, attention=attention,
                            backend=backend, abstract=True)


@functools.lru_cache(maxsize=2)
def abstract_clip(name: str = DEFAULT_CLIP_PRESET):
    """(graph, abstract params, abstract logit scale) of the preset open_clip model."""
    from diffcut_jax.models.layers import Numerics
    from diffcut_jax.models.open_clip import OpenCLIP, OpenCLIPConfig

    cfg = OpenCLIPConfig.from_open_clip(presets.load(name))
    graph, params = nnx.split(nnx.eval_shape(
        lambda: OpenCLIP(cfg, numerics=Numerics(), rngs=nnx.Rngs(0))))
    return graph, params, cfg.embed_dim


def _classifier(vocabulary: str, embed_dim: int):
    from diffcut_jax.naming.clip_model import TextClassifier
    from diffcut_jax.naming.vocabulary import parse_vocabulary

    vocab = parse_vocabulary(vocabulary)
    owner = np.repeat(np.arange(len(vocab)), [len(c) for c in vocab.classes]).astype(np.int32)
    return TextClassifier(jax.ShapeDtypeStruct((owner.size, embed_dim), jnp.float32),
                          owner, vocab.names, vocab.classes)


def _scalar():
    return jax.ShapeDtypeStruct((), jnp.float32)


def diffcut(batch: int = 1, *, refinement: bool = False, size: int = 1024,
            model: str = "ssd-1b", dtype: str = "float32", backend: str | None = None,
            **options) -> Program:
    """The segmenter's batch function (`DiffCut.__call__`): square images at the working size."""
    from diffcut_jax.segmentation import FeatureModel, SegmenterOptions, segment_fn

    ex = abstract_extractor(model, dtype, image_size=size, backend=backend)
    opts = SegmenterOptions(image_size=size, refinement=refinement, **options)
    fn = segment_fn(FeatureModel.of(ex), opts, (size, size), (size, size))
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    args = (ex.params, images, _abstract(ex.noise_for((size, size))), _scalar(), _scalar())
    name = (f"DiffCut batch function, {size} x {size}"
            + {"autosc": ", AutoSC", "kway": ", K-way"}.get(opts.method, "")
            + (", refinement" if refinement else ""))
    return Program(name, fn, args, batch)


def engine_step(per_device: int = 1, *, refinement: bool = False, size: int = 1024,
                model: str = "ssd-1b", dtype: str = "float32", backend: str | None = None,
                devices=None, **options) -> Program:
    """The dataset engine's device step (`label_dataset`, `segment_files`, the `segment`
    command): `streaming.batcher.batch_program`, `DiffCut`'s per-image program `shard_map`ped
    over `devices` (default one device), `per_device` images on each."""
    from diffcut_jax.segmentation import FeatureModel, SegmenterOptions
    from diffcut_jax.streaming.batcher import batch_program

    devices = tuple(devices or jax.devices()[:1])
    ex = abstract_extractor(model, dtype, image_size=size, backend=backend)
    opts = SegmenterOptions(image_size=size, refinement=refinement, **options)
    fn, _ = batch_program(FeatureModel.of(ex), opts.static, devices)
    batch = per_device * len(devices)
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    args = (ex.params, images, _abstract(ex.noise_for((size, size))), _scalar(), _scalar())
    name = (f"dataset engine step, {size} x {size}"
            + {"autosc": ", AutoSC", "kway": ", K-way"}.get(opts.method, "")
            + (", refinement" if refinement else ""))
    return Program(name, fn, args, batch)


def _config(name: str, overrides: dict | None = None):
    cfg = importlib.import_module(f"diffcut_jax.configs.{name}").get_config()
    for key, value in (overrides or {}).items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def evaluator(config: str, overrides: dict | None = None, *, model: str = "ssd-1b",
              dtype: str = "float32", backend: str | None = None, devices=None) -> list[Program]:
    """The evaluator's device steps for a config at its per-device batch, on a 1-device mesh
    (what one device runs): the prediction and, with PAMR on a background dataset, the
    refinement after the host's background merge. Open-vocabulary configs: the confusion step.
    `devices`: the mesh (default: one device); the batch is then the per-device batch times
    their number."""
    from diffcut_jax.data import benchmarks
    from diffcut_jax.evaluation.evaluator import data_mesh, device_steps
    from diffcut_jax.evaluation.matching import histogram_rows
    from diffcut_jax.segmentation import FeatureModel, SegmenterOptions

    cfg = _config(config, overrides)
    options = SegmenterOptions(**cfg.segmentation)
    devices = jax.devices()[:1] if devices is None else list(devices)
    s, m, b = options.image_size, cfg.mask_size, cfg.per_device_batch_size * len(devices)
    ex = abstract_extractor(model, dtype, image_size=s, backend=backend)
    mesh = data_mesh(devices)
    fmodel = FeatureModel.of(ex)
    h, w, _ = ex.feature_shape_for((s, s))
    images = jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((b, m, m), jnp.int32)
    noise = _abstract(ex.noise_for((s, s)))
    label = f"{config} evaluator step" + (" + PAMR" if options.refinement else "")
    if "openvocab" in cfg:
        from diffcut_jax.evaluation.openvocab import confusion_step
        from diffcut_jax.naming.labelling import LabelOptions, label_step

        lo = LabelOptions(**cfg.openvocab)
        graph, clip_params, embed_dim = abstract_clip()
        clip_size = lo.clip_image_size or s
        step = label_step(graph, h * w, (clip_size, clip_size))
        classifier = _classifier(lo.vocabulary, embed_dim)
        fn = confusion_step(fmodel, options, step, mesh=mesh, mask_size=(m, m),
                            num_classes=len(classifier.names), feature_batch=cfg.feature_batch or None)
        args = (ex.params, clip_params, images, labels, noise, _scalar(), _scalar(), classifier,
                _scalar())
        return [Program(f"{label}, masks {m}, CLIP {clip_size}", fn, args, b)]
    bench = benchmarks.get(cfg.benchmark, cfg.label_convention)
    rows = histogram_rows(bench.num_classes, bench.background)
    columns = h * w + 1
    predict, refine = device_steps(fmodel, bench, options, mesh=mesh, mask_size=(m, m), rows=rows,
                                   columns=columns, feature_batch=cfg.feature_batch or None)
    out = [Program(f"{label} (prediction), masks {m}", predict,
                   (ex.params, images, labels, noise, _scalar(), _scalar()), b)]
    if refine is not None:
        masks = jax.ShapeDtypeStruct((b, m, m), jnp.int32)
        mapping = jax.ShapeDtypeStruct((b, columns), jnp.int32)
        out.append(Program(f"{label} (refinement after the merge), masks {m}", refine,
                           (images, masks, mapping, labels), b))
    return out


def labeller(batch: int = 1, *, size: int = 1024, clip_size: int = 1024,
             vocabulary: str = "voc20", capacity: int = 1024) -> Program:
    """The labeller's step (`Labeller.__call__`, `segment --vocabulary`): masks at `size`, CLIP
    at `clip_size`, `capacity` segments (a 32 x 32 feature map's worst case)."""
    from diffcut_jax.naming.labelling import label_step

    graph, params, embed_dim = abstract_clip()
    fn = label_step(graph, capacity, (clip_size, clip_size))
    args = (params, jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
            jax.ShapeDtypeStruct((batch, size, size), jnp.int32), _classifier(vocabulary, embed_dim),
            _scalar())
    return Program(f"labeller step, masks {size}, CLIP {clip_size}, {capacity} segments", fn, args,
                   batch)


def features(batch: int = 1, *, size: int = 1024, model: str = "ssd-1b",
             dtype: str = "float32") -> Program:
    """The extractor alone (`extractor(images)`; the `coherence` command's first program)."""
    ex = abstract_extractor(model, dtype, image_size=size)
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return Program(f"features (extractor; coherence command), {size} x {size}",
                   functools.partial(ex._extract, size=(size, size)),
                   (ex.params, images, _abstract(ex.noise_for((size, size)))), batch)


def coherence_map(size: int = 1024, *, model: str = "ssd-1b") -> Program:
    """The `coherence` command's map of one patch over the feature map."""
    from diffcut_jax.coherence import _coherence_jit

    ex = abstract_extractor(model, image_size=size)
    feats = jax.ShapeDtypeStruct(ex.feature_shape_for((size, size)), jnp.float32)
    return Program("coherence map", _coherence_jit,
                   (feats, jax.ShapeDtypeStruct((2,), jnp.int32), feats), 1)


def lowered_for(program: Program, platform: str) -> dict:
    """Export `program` for `platform` ("cuda", "tpu", "cpu") with `jax.export`, which lowers on
    any machine, and count what a GPU pays for in host round trips: `while` loops and
    conditionals (`case`/`if`) in the StableHLO module."""
    exported = jax.export.export(jax.jit(program.fn), platforms=(platform,))(*program.args)
    text = exported.mlir_module()
    return {"platform": platform, "while": text.count("stablehlo.while"),
            "conditional": text.count("stablehlo.case") + text.count("stablehlo.if"),
            "custom_calls": sorted(set(re.findall(r"custom_call @([\w.]+)", text))),
            "module_kib": round(len(text) / 1024)}


def flops_per_image(program: Program) -> float:
    """XLA's HLO cost analysis of the lowered program (loop bodies counted once), per image."""
    cost = program.lower().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) / program.images


def accelerator_programs(backend: str, devices=None) -> list[Program]:
    """The programs lowered for accelerators in CI: the `DiffCut` batch function at 1024 x 1024
    (the backend's UNet dtype and numerics, level NCut formulation; with PAMR, AutoSC and the
    K-way NCut), the voc20 evaluator step and the dataset engine's step, both `shard_map`ped
    over `devices`, and the labeller step."""
    from diffcut_jax.features.extractor import default_dtype

    gpu_like = {"cuda": "gpu", "rocm": "gpu"}.get(backend, backend)
    kw = dict(dtype=jnp.dtype(default_dtype(gpu_like)).name, backend=gpu_like)
    return [diffcut(1, formulation="level", **kw), diffcut(1, refinement=True, formulation="level", **kw),
            diffcut(1, method="autosc", **kw), diffcut(1, method="kway", **kw),
            *evaluator("voc20", {"segmentation.formulation": "level"}, devices=devices, **kw),
            engine_step(1, formulation="level", devices=devices, **kw), labeller(1)]


def catalogue(model: str = "ssd-1b", dtype: str = "float32") -> list[Program]:
    """The programs of docs/performance.md's memory table, at the paper's sizes and the configs' settings."""
    progs = [diffcut(b, refinement=r, model=model, dtype=dtype) for r in (False, True)
             for b in (1, 16)]
    progs += [diffcut(16, refinement=r, model=model, dtype=dtype, method="kway") for r in (False, True)]
    progs += evaluator("voc20", model=model, dtype=dtype)
    progs += evaluator("voc20", {"segmentation.refinement": True}, model=model, dtype=dtype)
    progs += evaluator("openvoc_voc20", model=model, dtype=dtype)
    progs += evaluator("openvoc_coco_object", model=model, dtype=dtype)
    progs += [engine_step(8, model=model, dtype=dtype)]
    progs += [labeller(1), labeller(8), labeller(1, clip_size=2048)]
    progs += [features(b, model=model, dtype=dtype) for b in (1, 16)]
    progs.append(coherence_map(model=model))
    return progs
