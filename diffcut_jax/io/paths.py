"""One path layer for every file the project reads or writes: local disks and object stores.

    path = as_path("gs://bucket/runs/voc20")    # a UPath (fsspec: gcsfs, s3fs, ...); local: pathlib.Path
    atomic_write(path / "results.json", lambda tmp: tmp.write_text(text))   # whole or nothing
    create_exclusive(path / "run.json", data)   # False if it exists (a generation precondition)
    local = cache.local_copy(path / "weights.safetensors")  # io/cache.py: for readers of files
    check_output(path, "--workdir")             # at start-up: OutputLocationError, one line

A path with a scheme (`gs://`, `s3://`, `memory://`, anything fsspec knows) is a
`universal_pathlib` `UPath` on fsspec; anything else is a plain `pathlib.Path` and behaves as it
always did. Why this layer (and not etils.epath or TensorFlow's gfile): docs/architecture.md,
"Paths: local disks and buckets".

Object stores have no rename and no append, so every write here is a whole object:

- `atomic_write` writes a local temporary file and then either renames it into place (local) or
  uploads it as one object (a bucket). An upload becomes visible only when it completes (one
  request, or the final step of a resumable / multipart upload): a killed process leaves no
  object at all, never a partial one under the final name, so listings never show a partial
  upload as a finished file.
- `create_exclusive` is the one write two processes may race on: local `link()` (fails if the
  name exists), `ifGenerationMatch=0` on GCS, `If-None-Match: *` on S3.
- Appends (`summary.jsonl`) become numbered part objects (`AppendLog`).

Listings are never cached (`use_listings_cache=False`): other processes write into the same
folders (shards, done marks), and a cached listing would hide them.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import uuid
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@]*@")

# gcsfs >= 2025.x probes every bucket's type (zonal / hierarchical) over gRPC before its first
# use; against an emulator (and where gRPC egress is blocked) that probe waits 60 s per call.
# Set before gcsfs is imported; a user's own setting wins.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


class OutputLocationError(ValueError):
    """An output location that cannot be written (missing bucket, credentials, permission)."""


def is_url(path) -> bool:
    """Whether `path` names an object in a store (`scheme://...`) rather than a local file."""
    if isinstance(path, Path):
        return False
    if hasattr(path, "protocol") and hasattr(path, "fs"):  # a UPath
        return getattr(path, "protocol", "") not in ("", "file", "local")
    return bool(_SCHEME.match(os.fspath(path) if not isinstance(path, str) else path)) and \
        not str(path).startswith(("file://", "local://"))


def redact(path) -> str:
    """`path` as text for messages, without any user:secret@ part of a URL."""
    return _USERINFO.sub(r"\1", str(path))


def storage_options(protocol: str) -> dict:
    """fsspec options for a protocol: listings never cached (other processes write too)."""
    return {"use_listings_cache": False} if protocol in ("gs", "gcs", "s3", "s3a") else {}


def as_path(path):
    """A `pathlib.Path` for a local path, a `UPath` for a URL. Idempotent."""
    if isinstance(path, Path):
        return path
    if hasattr(path, "protocol") and hasattr(path, "fs"):
        return path
    text = os.fspath(path)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    m = _SCHEME.match(text)
    if not m:
        return Path(text)
    from upath import UPath

    return UPath(text, **storage_options(m.group(1).lower()))


def resolve_relative(line: str, folder) -> str:
    """A path read from a list file in `folder`: absolute paths and URLs as they are; a relative
    path is relative to the list's folder when that folder is a URL (an object store has no
    current directory), else to the current directory, as it always was."""
    if is_url(line) or os.path.isabs(line) or not is_url(folder):
        return line
    return str(as_path(folder) / line)


def makedirs(path) -> None:
    """Create a local folder and its parents. A bucket has no folders: nothing to do (and
    fsspec's `mkdir` would create a missing bucket, where a missing bucket is an error)."""
    if not is_url(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def remove_tree(path) -> None:
    """Delete a folder and everything in it (a bucket's prefix: every object under it); no error
    when it is absent."""
    if not is_url(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    path = as_path(path)
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass


def atomic_write(path, write) -> None:
    """`write(tmp)` to a local temporary file, then put it in place whole: renamed (local), or
    uploaded as one object (a bucket). No half-written file under the final name, ever."""
    if not is_url(path):
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return
    path = as_path(path)
    fd, name = tempfile.mkstemp(prefix="diffcut-upload-", suffix=PARTIAL_SUFFIX, dir=tempfile.gettempdir())
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        path.fs.put_file(str(tmp), path.path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    """`data` as the whole file `path`, atomically (`atomic_write`)."""
    if is_url(path):
        path = as_path(path)
        path.fs.pipe_file(path.path, data)  # one request: the object appears whole or not at all
        return
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def create_exclusive(path, data: bytes) -> bool:
    """Write `data` as `path` only if no such file exists: True if this call created it, False if
    it existed (another process won the race). Local: a temporary file hard-linked into place;
    GCS: ifGenerationMatch=0; S3: If-None-Match: *."""
    if not is_url(path):
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        try:
            tmp.write_bytes(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)
    path = as_path(path)
    try:
        path.fs.pipe_file(path.path, data, mode="create")
    except FileExistsError:
        return False
    return True


def remove_partials(folder, *, older_than_s: float = 0.0) -> int:
    """Delete a local run's leftover temporary files (`atomic_write`'s, of a killed process).
    `older_than_s`: only those not written for that long (other processes of a run may be
    writing theirs now). A bucket holds none: uploads are whole objects or nothing."""
    import time

    if is_url(folder):
        return 0
    n, now = 0, time.time()
    for p in Path(folder).rglob(f"*{PARTIAL_SUFFIX}"):
        try:
            if now - p.stat().st_mtime < older_than_s:
                continue
            p.unlink()
            n += 1
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            pass
    return n


def _describe(error: BaseException) -> str:
    """One line for a storage error, without credentials or request bodies."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    text = re.sub(r"(?i)(key|secret|token|signature|credential)[^\s,;]*=[^\s,;&]+", r"\1=<hidden>", text)
    return text[:300]


def check_output(path, what: str = "output") -> None:
    """Fail early, before any model loads, where `path` cannot be written: a missing bucket,
    missing or wrong credentials, a denied write. Writes and deletes one small object (a URL);
    locally, checks that the folder (or the nearest existing one above it, where it will be
    created) can be written, and creates nothing. Raises OutputLocationError with one line naming
    the URL or folder."""
    shown = redact(path)
    if not is_url(path):
        folder = Path(path).expanduser().absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputLocationError(f"{what} {shown}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputLocationError(f"{what} {shown}: writing is denied ({folder})")
        return
    try:
        path = as_path(path)
    except (ImportError, ValueError) as e:
        raise OutputLocationError(f"{what} {shown}: {_describe(e)} (pip install "
                                  "'diffcut_jax[cloud]' for gs:// and s3://)") from None
    probe = path / f".diffcut_jax-write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.fs.pipe_file(probe.path, b"")
        probe.fs.rm_file(probe.path)
    except ImportError as e:
        raise OutputLocationError(f"{what} {shown}: {_describe(e)} (pip install "
                                  "'diffcut_jax[cloud]' for gs:// and s3://)") from None
    except FileNotFoundError:
        raise OutputLocationError(f"{what} {shown}: the bucket does not exist") from None
    except PermissionError as e:
        raise OutputLocationError(f"{what} {shown}: writing is denied ({_describe(e)})") from None
    except Exception as e:  # noqa: BLE001 - credentials, network: the library's own types
        raise OutputLocationError(f"{what} {shown}: cannot write ({_describe(e)})") from None


def check_input(path, what: str = "input") -> None:
    """Fail early where `path` (a file or folder to read) is on a missing bucket or cannot be
    read; a local path is checked later, with the inputs."""
    if not is_url(path):
        return
    shown = redact(path)
    try:
        p = as_path(path)
        bucket = p.path.split("/", 1)[0]
        if not p.fs.exists(bucket):
            raise OutputLocationError(f"{what} {shown}: the bucket does not exist")
    except OutputLocationError:
        raise
    except FileNotFoundError:
        raise OutputLocationError(f"{what} {shown}: the bucket does not exist") from None
    except PermissionError as e:
        raise OutputLocationError(f"{what} {shown}: reading is denied ({_describe(e)})") from None
    except Exception as e:  # noqa: BLE001
        raise OutputLocationError(f"{what} {shown}: cannot read ({_describe(e)})") from None


class AppendLog:
    """A log of lines that only grows (`summary.jsonl`). Local: appended to the file, as always.
    A bucket has no append: lines are buffered and flushed as numbered whole objects,
    `<stem>-part<NNNNN><suffix>` (a flush every `every` lines and at `flush`/`close`); a rerun
    continues the numbering, so nothing written is overwritten. `read_log` reads either form."""

    def __init__(self, path, *, every: int = 64):
        self.path, self.every = as_path(path), max(1, int(every))
        self.remote = is_url(self.path)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.next_part = None

    @property
    def name(self) -> str:
        return self.path.name

    def _parts(self):
        return sorted(part_files(self.path))

    def write(self, line: str) -> None:
        if not self.remote:
            with open(self.path, "a") as fh:
                fh.write(line)
            return
        with self.lock:
            self.lines.append(line)
            full = len(self.lines) >= self.every
        if full:
            self.flush()

    def flush(self) -> None:
        if not self.remote:
            return
        with self.lock:
            lines, self.lines = self.lines, []
            if not lines:
                return
            if self.next_part is None:
                parts = self._parts()
                self.next_part = (int(_PART.search(parts[-1].name).group(1)) + 1) if parts else 0
            while True:  # a part number taken (a racing writer of the same name): the next one
                target = part_path(self.path, self.next_part)
                self.next_part += 1
                if create_exclusive(target, "".join(lines).encode("utf-8")):
                    return

    def close(self) -> None:
        self.flush()


_PART = re.compile(r"-part(\d{5,})")


def part_path(path, k: int):
    path = as_path(path)
    return path.with_name(f"{path.stem}-part{k:05d}{path.suffix}")


def part_files(path) -> list:
    """The part objects of an `AppendLog` at `path`, in order."""
    path = as_path(path)
    folder = path.parent
    pattern = re.compile(re.escape(path.stem) + r"-part(\d{5,})" + re.escape(path.suffix) + "$")
    if not folder.exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def read_log(path) -> str:
    """The whole text of an `AppendLog`: the file, then its parts (a bucket's form)."""
    path = as_path(path)
    text = path.read_text() if path.exists() else ""
    return text + "".join(p.read_text() for p in part_files(path))


class RetryCounter:
    """Counts the storage clients' retries of transient failures (5xx replies, timeouts) while
    active: gcsfs logs each retry, botocore (s3fs) each retry of a request. The clients retry by
    themselves; this only counts, for the run's summary. The records are counted, then dropped
    unless their logger would have shown them."""

    LOGGERS = {"gcsfs": "retrying after exception",
               "botocore.retryhandler": "Retry needed",
               "botocore.retries.standard": "Retry needed",
               "s3fs": "Retryable error"}

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()
        self._saved = []

    def _filter(self, marker, shown_level):
        def keep(record: logging.LogRecord) -> bool:
            if marker in str(record.msg):
                with self._lock:
                    self.count += 1
            return record.levelno >= shown_level

        return keep

    def __enter__(self):
        for name, marker in self.LOGGERS.items():
            logger = logging.getLogger(name)
            flt = self._filter(marker, logger.getEffectiveLevel())
            self._saved.append((logger, logger.level, flt))
            logger.addFilter(flt)
            logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        for logger, level, flt in self._saved:
            logger.removeFilter(flt)
            logger.setLevel(level)
        self._saved = []
