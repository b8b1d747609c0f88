"""The inputs of a dataset run, listed once: paths (files, folders walked lazily, globs, list
files of one path per line) into a file read back by index (`io/input_list.py`), or a TFDS
split; with what identifies them to a resumed run."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable


class RunInputs:
    """This process's view of a run's inputs: `paths` (a `PathList`) or `builder` and `split`,
    `total` (over every process), `identity` (for the fingerprint) and `problems` (input specs
    that gave nothing: a missing file, a glob matching nothing). A context manager: the listing
    file is removed on exit."""

    def __init__(self, *, paths=None, builder=None, split=None, total: int, identity: dict,
                 problems=(), list_file: Path | None = None):
        self.paths, self.builder, self.split = paths, builder, split
        self.total, self.identity, self.problems = total, identity, list(problems)
        self._list_file = list_file

    @property
    def is_tfds(self) -> bool:
        return self.builder is not None

    def close(self) -> None:
        if self._list_file is not None:
            Path(self._list_file).unlink(missing_ok=True)
            self._list_file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def list_inputs(out_dir: Path, process: int, inputs: Iterable = (), *, inputs_from: Iterable = (),
                tfds: str | None = None, data_dir=None, log=None) -> RunInputs:
    """List the inputs (ValueError: none, or paths given with a TFDS split); input specs that
    gave nothing are written to `log` as `skip:` lines. Paths are written to a hidden file in
    `out_dir` (`.inputs-<process>-*.txt`), read by index and removed by `close`; one left by a
    killed run of this process is removed first."""
    inputs, inputs_from = [str(p) for p in inputs], [str(p) for p in inputs_from]
    if tfds and (inputs or inputs_from):
        raise ValueError("a TFDS split (tfds) is segmented as a whole: give no input files with it")
    if tfds:
        from diffcut_jax.data import tfds_images

        name, split = tfds_images.parse_spec(tfds)
        builder = tfds_images.open_builder(name, data_dir)
        total = tfds_images.num_examples(builder, split)
        found = RunInputs(builder=builder, split=split, total=total, identity={
            "tfds": builder.info.full_name, "split": split, "examples": total})
    else:
        from diffcut_jax.io.input_list import iter_paths, write_path_list

        from diffcut_jax.io.paths import is_url

        # The listing is this process's scratch, read by index: beside the outputs on a disk, in
        # the temporary folder when the outputs are on a bucket (read by index, it must be local).
        scratch = tempfile.gettempdir() if is_url(out_dir) else out_dir
        for old in Path(scratch).glob(f".inputs-{process}-*.txt"):  # left by a killed run of ours
            if scratch == out_dir:
                old.unlink(missing_ok=True)
        fd, list_file = tempfile.mkstemp(prefix=f".inputs-{process}-", suffix=".txt", dir=scratch)
        os.close(fd)
        problems: list[str] = []
        paths = write_path_list(iter_paths(inputs, inputs_from, problems), list_file)
        for problem in problems if log is not None else ():
            log.write(f"skip: {problem}\n")
        found = RunInputs(paths=paths, total=len(paths), identity={"paths": len(paths), "sha1": paths.digest},
                          problems=problems, list_file=Path(list_file))
    if not found.total:
        found.close()
        raise ValueError("no input images (pass files, folders, globs, list files or a TFDS split)")
    return found
