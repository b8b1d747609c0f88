r"""Benchmark evaluation: `diffcut-jax eval` = `python -m diffcut_jax.launch.eval`.

    diffcut-jax eval --config=voc20 --workdir=runs/voc20 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/pascal [--config.segmentation.tau=0.35]

`--config` takes a config by name (`voc20`, `voc20:vega`: the files shipped in
`diffcut_jax/configs/`) or a path to a config file. The `openvoc_<benchmark>` configs run the
open-vocabulary mode instead: segments named by CLIP and scored without matching.

Builds the benchmark's TFDS dataset from the raw download on first use, then segments every
validation image on all devices (data parallel) and matches segments to classes (docs/protocol.md).
Shows images/s and the running mIoU; at the end prints the per-class IoU table and writes
`results.json`, `per_class.csv`, `config.json` and `per_image.jsonl` to --workdir. Multi-host: pass --distributed on
every host (jax.distributed.initialize); each host reads its own part of the split.

Preemptible: progress is checkpointed to --workdir/progress every --checkpoint_every batches and
on SIGTERM (then exit status 143). The same command, rerun, continues from the last checkpoint
and ends with the same results; a workdir of another config or dataset is refused
(diffcut_jax/evaluation/resume.py).
"""
from __future__ import annotations

import csv
import json
import signal
import sys
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from diffcut_jax.io.progress import Progress
from diffcut_jax.streaming.memory import is_out_of_memory, out_of_memory_message

from . import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Benchmark config: a name (voc20[:model]) or a file "
                                "(path/to/config.py[:model]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where results.json, per_class.csv and config.json go.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own, ~/tensorflow_datasets).")
flags.DEFINE_string("manual_dir", None, "The raw download (needed until the dataset is built).")
common.define_distributed_flags()
flags.DEFINE_integer("checkpoint_every", 25, "Checkpoint the progress every this many batches "
                     "(and on SIGTERM); a rerun resumes from it. 0: only on SIGTERM.", lower_bound=0)


def config_path(value: str) -> str:
    """`name[:arg]` -> the shipped config file's path (`path.py[:arg]` is kept as it is)."""
    name, sep, arg = value.partition(":")
    if name.endswith(".py") or "/" in name or "\\" in name:
        return value
    from importlib import resources

    from diffcut_jax.data.benchmarks import BENCHMARKS

    configs = resources.files("diffcut_jax.configs")
    path = configs.joinpath(f"{name}.py")
    if path.is_file():
        return f"{path}{sep}{arg}"
    if name in BENCHMARKS:  # a benchmark record without a config file of its own
        return f"{configs.joinpath('common.py')}:{name}" + (f",{arg}" if arg else "")
    raise SystemExit(f"error: --config={value}: no config named {name!r}; "
                     f"choose from {sorted(BENCHMARKS)} or give a path")


def resolve_config_names(argv: list[str]) -> list[str]:
    """Rewrite `--config=<name>` (or `--config <name>`) before absl parses the flags."""
    out = list(argv)
    for i, a in enumerate(out):
        if a.startswith("--config="):
            out[i] = "--config=" + config_path(a[len("--config="):])
        elif a == "--config" and i + 1 < len(out):
            out[i + 1] = config_path(out[i + 1])
    return out


def validate(cfg) -> None:
    from diffcut_jax.data import benchmarks

    benchmarks.get(cfg.benchmark, cfg.label_convention)  # names the problem if unknown
    if is_openvocab(cfg):
        from diffcut_jax.naming.labelling import LabelOptions
        from diffcut_jax.naming.vocabulary import parse_vocabulary

        parse_vocabulary(LabelOptions(**cfg.openvocab).vocabulary)
    if cfg.per_device_batch_size < 1 or cfg.max_images < 0 or cfg.mask_size < 1:
        raise ValueError("config.per_device_batch_size and config.mask_size must be >= 1 and "
                         "config.max_images >= 0")


def class_table(result) -> str:
    rows = result.per_class()
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'class':<{width}}  {'IoU %':>6}"]
    for r in rows:
        iou = "   n/a" if r["iou"] is None else f"{100 * r['iou']:6.1f}"
        lines.append(f"{r['name']:<{width}}  {iou}")
    return "\n".join(lines)


def write_outputs(workdir: Path, cfg, result, extra: dict) -> None:
    from diffcut_jax.io.paths import atomic_write, makedirs, write_text

    makedirs(workdir)
    summary = {
        "benchmark": result.benchmark.name, "title": result.benchmark.title, "model": cfg.model.path,
        "miou": result.miou, "pixel_accuracy": result.pixel_accuracy,
        "images": result.accumulator.images, "num_classes": result.benchmark.num_classes,
        **extra, "per_class": result.per_class(), "config": cfg.to_dict(),
    }
    write_text(workdir / "results.json", json.dumps(summary, indent=1, default=list))

    def write_csv(p):
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["class", "name", "iou", "tp", "fp", "fn"])
            w.writeheader()
            w.writerows(result.per_class())

    atomic_write(workdir / "per_class.csv", write_csv)
    write_text(workdir / "config.json", cfg.to_json_best_effort(indent=1))


class UsageError(Exception):
    """A problem with the command's input: printed as `error: ...`, exit status 2."""


def prepare_data(cfg):
    """Build the benchmark's dataset if needed (process 0); returns (benchmark, builder, split,
    examples in the split, examples of this process, batch size per process)."""
    import jax

    from diffcut_jax.data import benchmarks, builders, pipeline
    from diffcut_jax.data.raw_layouts import MissingDataError

    bench = benchmarks.get(cfg.benchmark, cfg.label_convention)
    builder = builders.builder(cfg.benchmark, FLAGS.data_dir, cfg.label_convention)
    try:
        if jax.process_index() == 0:
            builders.prepare(builder, FLAGS.manual_dir)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("dataset prepared")
        if not builders.is_built(builder):
            raise MissingDataError(f"{bench.title}: dataset not built at {builder.data_path}")
    except (MissingDataError, ValueError) as e:
        raise UsageError(e) from e
    split = cfg.split if not cfg.max_images else f"{cfg.split}[:{cfg.max_images}]"
    batch_size = cfg.per_device_batch_size * jax.local_device_count()
    try:
        total = pipeline.num_examples(builder, split)
        local_total = pipeline.num_examples(
            builder, pipeline.split_for_process(split, jax.process_index(), jax.process_count()))
    except (KeyError, ValueError) as e:
        raise UsageError(f"split {split!r}: {e}") from e
    return bench, builder, split, total, local_total, batch_size


def batches(cfg, builder, split, batch_size, skip_batches: int):
    """This process's batches, after the first `skip_batches` (a resumed run)."""
    import jax

    from diffcut_jax.data import pipeline
    from diffcut_jax.evaluation.evaluator import batches_from_tf

    dataset, _ = pipeline.eval_batches(
        builder, batch_size=batch_size, image_size=cfg.segmentation.image_size,
        mask_size=cfg.mask_size, split=split, process_index=jax.process_index(),
        process_count=jax.process_count(), skip_batches=skip_batches)
    return batches_from_tf(dataset)


def fingerprint(cfg, builder, split, total, batch_size) -> dict:
    """What must match for a checkpoint to be resumed: the config (less the input prefetch, which
    changes no result), the dataset and split, and how the split is cut into batches."""
    import jax

    config = cfg.to_dict()
    config.pop("prefetch", None)
    return {"config": config, "dataset": {"name": builder.info.full_name, "split": split,
                                          "examples": total},
            "processes": jax.process_count(), "devices": jax.device_count(),
            "batch_per_process": batch_size}


def make_evaluator(cfg, bench):
    """The model (config.model) and the data-parallel evaluator (config.segmentation)."""
    from diffcut_jax.evaluation.evaluator import Evaluator
    from diffcut_jax.features.extractor import load_extractor
    from diffcut_jax.segmentation import SegmenterOptions

    options = SegmenterOptions(**cfg.segmentation)
    if cfg.feature_batch > cfg.per_device_batch_size:
        sys.stderr.write(f"note: config.feature_batch={cfg.feature_batch} exceeds "
                         f"config.per_device_batch_size={cfg.per_device_batch_size}: features run "
                         f"in chunks of {cfg.per_device_batch_size} (a chunk never exceeds the "
                         "per-device batch; padding it would compute features of blank images)\n")
    model = dict(cfg.model)
    extractor = load_extractor(model.pop("path"), image_size=options.image_size, **model)
    if is_openvocab(cfg):
        from diffcut_jax.evaluation.openvocab import OpenVocabEvaluator
        from diffcut_jax.naming.labelling import Labeller, LabelOptions
        from diffcut_jax.naming.vocabulary import parse_vocabulary

        label = LabelOptions(**cfg.openvocab)
        sys.stderr.write(common.clip_loading_message(cfg.clip_model.path,
                                                     parse_vocabulary(label.vocabulary)))
        labeller = Labeller.from_pretrained(
            cfg.clip_model.path, label.vocabulary, dtype=cfg.clip_model.dtype or "float32",
            image_size=label.clip_image_size or options.image_size, square=options.square,
            normalize_input=label.clip_normalize, cache=common.text_cache_dir(), progress=True)
        return OpenVocabEvaluator(extractor, bench, options, labeller, mask_size=cfg.mask_size,
                                  feature_batch=cfg.feature_batch or None)
    return Evaluator(extractor, bench, options, mask_size=cfg.mask_size,
                     feature_batch=cfg.feature_batch or None)


def evaluator_oom_message(cfg) -> str:
    """Which evaluator program ran out of memory, at which sizes, and what to lower."""
    seg = cfg.segmentation
    s, m = seg.image_size, cfg.mask_size
    details = (f"per-device batch {cfg.per_device_batch_size}, images {s} x {s}, masks {m} x {m}, "
               f"PAMR {'on' if seg.refinement else 'off'}, features in chunks of "
               f"{cfg.feature_batch or cfg.per_device_batch_size}")
    advice = (f"lower --config.per_device_batch_size (now {cfg.per_device_batch_size}) or "
              f"--config.feature_batch (now {cfg.feature_batch})")
    if is_openvocab(cfg):
        details += f", CLIP at {cfg.openvocab.clip_image_size or s}"
        advice += ", or --config.openvocab.clip_image_size"
    return out_of_memory_message(f"the {cfg.benchmark} evaluator step", details, advice)


def is_openvocab(cfg) -> bool:
    """Open-vocabulary configs (`openvoc_*`) carry `config.openvocab`."""
    return "openvocab" in cfg


def report(cfg, result, bench, workdir: Path, *, checkpoint_seconds: float = 0.0,
           resumed_images: int = 0) -> None:
    """Per-image records (every process), then the class table, summary line and files (process 0)."""
    import jax

    from diffcut_jax.io.paths import makedirs, write_text

    openvocab = is_openvocab(cfg)
    expected = None if openvocab else bench.published_miou(
        cfg.backbone, cfg.segmentation.method, cfg.segmentation.refinement)
    extra = {
        "published_miou": expected, "seconds": result.seconds,
        # The rate of this run: images restored from a checkpoint took no time here.
        "images_per_second": (result.accumulator.images - resumed_images) / max(result.seconds, 1e-9),
        "checkpoint_seconds": checkpoint_seconds, "resumed_images": resumed_images,
        "input_wait_share": result.input_wait_seconds / max(result.seconds, 1e-9),
        "devices": jax.device_count(), "processes": jax.process_count(),
        "protocol": "open-vocabulary" if openvocab else "unsupervised (Hungarian matching)",
    }
    if openvocab:  # the original's own number: per-image Jaccard, averaged over images
        extra["per_image_jaccard"] = result.per_image_jaccard
    # Per image (this process's images): segments, valid and correctly matched pixels.
    makedirs(workdir)
    name = "per_image.jsonl" if jax.process_count() == 1 else f"per_image.{jax.process_index()}.jsonl"
    write_text(workdir / name, "".join(json.dumps(r) + "\n" for r in result.per_image))
    if jax.process_index() == 0:
        print(class_table(result))
        line = (f"{bench.title}: mIoU {100 * result.miou:.2f}%  pixel accuracy "
                f"{100 * result.pixel_accuracy:.2f}%  ({result.accumulator.images} images, "
                f"{extra['images_per_second']:.2f} img/s)")
        if expected is not None:
            line += f"  published: {expected:.1f}%"
        if openvocab:
            line += f"  per-image Jaccard (the original's score): {100 * result.per_image_jaccard:.2f}%"
        print(line)
        write_outputs(workdir, cfg, result, extra)
        print(f"results written to {workdir}")


def run(args: list[str]) -> int:
    if args:
        sys.stderr.write(f"error: unexpected arguments {args}\n")
        return 2
    cfg = FLAGS.config
    if cfg is None:
        sys.stderr.write("error: --config is required (e.g. --config=voc20)\n")
        return 2
    if not FLAGS.workdir:
        sys.stderr.write("error: --workdir is required\n")
        return 2
    import jax

    from diffcut_jax.evaluation import resume
    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.io import paths

    workdir = paths.as_path(FLAGS.workdir)
    try:
        validate(cfg)
        # A missing bucket, missing credentials or a denied write: one line, before the dataset
        # is built and before any model loads.
        paths.check_output(workdir, "--workdir")
        if FLAGS.manual_dir:
            paths.check_input(FLAGS.manual_dir, "--manual_dir")
        common.initialize_distributed()
        bench, builder, split, total, local_total, batch_size = prepare_data(cfg)
        store = resume.ProgressStore(workdir / "progress",
                                     fingerprint(cfg, builder, split, total, batch_size))
        start = store.agreed_resume_point()
        skip = 0 if start is None else int(start["batches"])
        data = batches(cfg, builder, split, batch_size, skip)
    except (UsageError, ValueError) as e:  # ResumeMismatchError is a ValueError
        sys.stderr.write(f"error: {e}\n")
        return 2
    t0 = time.perf_counter()
    problem = common.unavailable_model(cfg.model.path,
                                       cfg.clip_model.path if is_openvocab(cfg) else None)
    if problem is not None:
        return common.model_error_exit(problem)
    try:
        evaluator = make_evaluator(cfg, bench)
    except (CheckpointError, ValueError) as e:
        return common.model_error_exit(e)
    sys.stderr.write(
        f"{bench.title}: {total} image(s), {jax.device_count()} device(s) in {jax.process_count()} "
        f"process(es), batch {batch_size} per process; model loaded in "
        f"{time.perf_counter() - t0:.1f} s\n")
    state = None
    if start is not None:
        state = (skip, start["processes"][jax.process_index()])
        sys.stderr.write(f"resuming after batch {skip} ({len(state[1]['per_image'])} image(s) of "
                         f"this process done) from {store.folder}\n")
    progress = Progress(local_total, done=0 if state is None else len(state[1]["per_image"]))
    policy = resume.CheckpointPolicy(store, evaluator, FLAGS.checkpoint_every)
    previous = signal.signal(signal.SIGTERM, policy.on_sigterm)
    try:
        result = evaluator.evaluate(
            data, on_image=lambda _id, acc: progress.update("ok", f"mIoU {100 * acc.miou():.1f}%"),
            prefetch=cfg.prefetch, resume=state, after_batch=policy)
    except resume.Preempted as e:
        sys.stderr.write(f"\n{e} in {store.folder}; rerun the same command to continue\n")
        return 128 + signal.SIGTERM
    except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
        if not is_out_of_memory(e):
            raise
        sys.stderr.write("\nerror: " + evaluator_oom_message(cfg) + "\n")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    if result.accumulator.images != total:
        sys.stderr.write(f"error: evaluated {result.accumulator.images} of {total} images\n")
        return 1
    resumed = 0 if start is None else sum(int(p["images"]) for p in start["processes"])
    report(cfg, result, bench, workdir, checkpoint_seconds=policy.seconds, resumed_images=resumed)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("results written")
    if jax.process_index() == 0:
        paths.remove_tree(store.folder)  # done: results.json is the record
    return 0


_run = common.entry_point(run)


def cli() -> None:
    sys.argv = resolve_config_names(sys.argv)
    _run()

if __name__ == "__main__":
    cli()
