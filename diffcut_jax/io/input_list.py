"""Input paths at any count: listed once to a file, read back by index, never all in memory.

`segment` takes files, folders, globs and `--inputs_from` lists of a million lines. They are
listed lazily (folders walked one directory at a time, in sorted order; glob matches sorted per
pattern; list files read line by line) into a text file of one path per line, and `PathList`
reads that file by index through an array of line offsets (8 bytes a path): the random access a
Grain `MapDataset` source needs, and per-process shares by index arithmetic. Memory stays that of
the offsets, whatever the number of inputs.
"""
from __future__ import annotations

import array
import glob
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from diffcut_jax.io import paths as io_paths
from diffcut_jax.io.imageio import IMAGE_SUFFIXES

# A listed key and the path it is read from, where they differ (a relative line of a list on a
# bucket), share one line: NUL is the one character no path can hold.
_SEP = "\0"


def _walk(folder) -> Iterator[str]:
    """Image files under `folder`, recursively, in sorted order (one directory held at a time;
    on a bucket, one listing page of a prefix at a time)."""
    if io_paths.is_url(folder):
        folder = io_paths.as_path(folder)
        fs, proto = folder.fs, folder.protocol
        for root, dirs, files in fs.walk(folder.path):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    yield f"{proto}://{root.rstrip('/')}/{name}"
        return
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield os.path.join(root, name)


def _glob(spec: str) -> list[str]:
    if io_paths.is_url(spec):
        base = io_paths.as_path(spec)
        fs, proto = base.fs, base.protocol
        return sorted(f"{proto}://{q}" for q in fs.glob(base.path) if fs.isfile(q))
    return sorted(q for q in glob.glob(spec, recursive=True) if os.path.isfile(q))


def _lines(listing: str) -> Iterator[str]:
    """The paths of a list file (local or on a bucket), resolved against its folder where it is
    on a bucket (`paths.resolve_relative`): `key NUL path` where they differ."""
    folder = io_paths.as_path(listing).parent
    with io_paths.as_path(listing).open("r", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                path = io_paths.resolve_relative(line, folder)
                yield line if path == line else f"{line}{_SEP}{path}"


def iter_paths(specs: Iterable[str], inputs_from: Iterable[str] = (), problems: list | None = None
               ) -> Iterator[str]:
    """Files, folders (recursively: image suffixes only) and globs, then the lines of each
    `inputs_from` file (taken as they are: a listed path that is missing is an unreadable input,
    recorded when it is read). Problems with the specs themselves (nothing there, a folder without
    images, an unreadable list) are appended to `problems`."""
    problems = [] if problems is None else problems
    for spec in specs:
        p = io_paths.as_path(spec)
        if p.is_dir():
            found = False
            for q in _walk(p):
                found = True
                yield q
            if not found:
                problems.append(f"{spec}: folder holds no images")
        elif p.exists():
            yield spec
        elif any(c in spec for c in "*?["):
            found = _glob(spec)
            if not found:
                problems.append(f"{spec}: pattern matches no file")
            yield from found
        else:
            problems.append(f"{spec}: no such file or folder")
    for listing in inputs_from:
        try:
            yield from _lines(listing)
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"--inputs_from={listing}: cannot read the list ({e})")


class PathList:
    """Paths stored one per line in `file`, read by index: `len(paths)`, `paths[i]` (the key:
    the path as the user gave it), `paths.source(i)` (where it is read from: the key, or a
    relative line of a bucket's list resolved against the list's folder), and `digest` (SHA-1
    of the list, to tell whether a rerun has the same inputs)."""

    def __init__(self, file: Path, offsets: np.ndarray, digest: str):
        self.file, self._offsets, self.digest = Path(file), offsets, digest

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __iter__(self):
        with open(self.file, encoding="utf-8") as fh:
            for line in fh:
                yield line[:-1].split(_SEP, 1)[0]

    def __getitem__(self, i: int) -> str:
        return self._line(i).split(_SEP, 1)[0]

    def source(self, i: int) -> str:
        return self._line(i).split(_SEP, 1)[-1]

    def _line(self, i: int) -> str:
        if not 0 <= i < len(self):
            raise IndexError(f"path {i} of {len(self)}")
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        with open(self.file, "rb") as fh:  # one open per read: safe from any number of threads
            fh.seek(start)
            return fh.read(end - start - 1).decode("utf-8")


def write_path_list(paths: Iterable[str], file: Path) -> PathList:
    """Write `paths` (any iterable, consumed once) to `file`, dropping repeats of a path (by its
    absolute, normalised form; 8 bytes of hash each), and return the indexed list."""
    file = Path(file)
    seen: set[int] = set()
    offsets = array.array("q", [0])  # 8 bytes a path, not a Python int's 28
    sha = hashlib.sha1()
    with open(file, "wb") as fh:
        for path in paths:
            if "\n" in path:
                continue  # cannot be listed one per line (and no real image path holds one)
            where = path.split(_SEP, 1)[-1]
            where = where if io_paths.is_url(where) else os.path.abspath(where)
            key = int.from_bytes(hashlib.blake2b(where.encode(), digest_size=8).digest())
            if key in seen:
                continue
            seen.add(key)
            line = path.encode("utf-8") + b"\n"
            fh.write(line)
            sha.update(line)
            offsets.append(offsets[-1] + len(line))
    return PathList(file, np.frombuffer(offsets, np.int64), sha.hexdigest())
