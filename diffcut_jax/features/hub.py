"""Find a diffusers checkpoint: a local directory, or a hub id downloaded with huggingface_hub.

Only the files the extractor needs are fetched (config.json and one safetensors file per part,
the fp16 variant when there is one, tokenizer files when asked for).
"""
from __future__ import annotations

import functools
import json
import socket
from dataclasses import dataclass
from pathlib import Path

from diffcut_jax.features.checkpoint import CheckpointError

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
WEIGHT_NAMES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
}
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


class ModelNotAvailableError(CheckpointError):
    """The model is neither a local directory nor downloadable (e.g. offline, not cached)."""


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    parts: tuple[str, ...]  # parts present (text_encoder_2 only for the SDXL family)

    def config(self, part: str) -> dict:
        path = self.root / part / "config.json"
        if not path.exists():
            raise CheckpointError(f"missing config: {path}")
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from e

    def weights(self, part: str, prefer_fp16: bool = True) -> Path:
        return weight_file(self.root / part, WEIGHT_NAMES[part], prefer_fp16)


def weight_file(folder: Path, stem: str, prefer_fp16: bool = True) -> Path:
    """The safetensors file (or sharded index) of one part, fp16 variant first if preferred."""
    variants = [".fp16", ""] if prefer_fp16 else ["", ".fp16"]
    for v in variants:
        for name in (f"{stem}{v}.safetensors", f"{stem}{v}.safetensors.index.json"):
            if (folder / name).exists():
                return folder / name
    found = sorted(p.name for p in folder.glob("*")) if folder.exists() else []
    hint = " (only .bin weights: convert them to safetensors)" if any(n.endswith(".bin") for n in found) else ""
    raise CheckpointError(
        f"no safetensors weights in {folder}: expected {stem}.safetensors or {stem}.fp16.safetensors"
        f"{hint}; found {found or 'nothing'}"
    )


def _local(root: Path) -> CheckpointFiles:
    if not root.is_dir():
        raise CheckpointError(f"model directory not found: {root}")
    missing = [p for p in ("unet", "vae", "text_encoder") if not (root / p).is_dir()]
    if missing:
        raise CheckpointError(
            f"{root} is not a diffusers checkpoint: missing folder(s) {missing} "
            "(expected unet/, vae/, text_encoder/ and, for SDXL models, text_encoder_2/)"
        )
    parts = tuple(p for p in PARTS if (root / p).is_dir())
    return CheckpointFiles(root, parts)


def hub_unreachable() -> str | None:
    """None if the hub can be asked, else why not (offline mode, or its endpoint refuses a
    connection). Offline, every hub call would otherwise be retried with backoff (five times,
    over a minute) before the local cache is tried."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _endpoint_unreachable(constants.ENDPOINT)


@functools.lru_cache(maxsize=None)
def _endpoint_unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """One connection attempt per endpoint and process."""
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host} is unreachable ({e})"
    return None


def _download_hint(repo_id: str) -> str:
    return (
        f"To get the weights, on a machine with network access run\n"
        f"  hf download {repo_id} --include 'unet/*' 'vae/*' 'text_encoder*/*' "
        f"'tokenizer*/*' --local-dir /path/to/{repo_id.split('/')[-1]}\n"
        f"(or any diffusers `save_pretrained` directory with safetensors weights), then pass that "
        f"directory instead of the hub id."
    )


def _hub_id(model: str | Path) -> str | None:
    """`model` as a hub id (`owner/name`, not an existing path), else None."""
    path = Path(model).expanduser()
    if path.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
        return None
    return str(model)


def resolve(model: str | Path, *, prefer_fp16: bool = True, tokenizers: bool = False) -> CheckpointFiles:
    """A local diffusers directory, or a hub id (downloaded, or found in the local hub cache)."""
    from diffcut_jax.io.paths import is_url

    if is_url(model):  # a diffusers folder on a bucket: its needed files, copied once
        # As a local folder: the scheduler config is read where there is one.
        return _local(_bucket_folder(model, lambda names: ["scheduler/scheduler_config.json",
                                                           *wanted_files(names, prefer_fp16, tokenizers)]))
    repo_id = _hub_id(model)
    if repo_id is None:
        return _local(Path(model).expanduser())
    return _resolve_hub(repo_id, prefer_fp16, tokenizers)


def wanted_files(files, prefer_fp16: bool, tokenizers: bool) -> list[str]:
    """The files of a diffusers folder the extractor reads (glob patterns, relative names):
    configs, one weight file (or sharded index and shards) per part, and tokenizers when asked.
    `files`: the folder's files, or None when unknown (every variant)."""
    want = []
    for part in PARTS:
        want.append(f"{part}/config.json")
        stem = WEIGHT_NAMES[part]
        names = [f"{stem}{v}.safetensors{x}" for v in ((".fp16", "") if prefer_fp16 else ("", ".fp16"))
                 for x in ("", ".index.json")]
        if files is None:
            want += [f"{part}/{n}" for n in names]
            continue
        for n in names:
            if f"{part}/{n}" in files:
                want.append(f"{part}/{n}")
                if n.endswith(".index.json"):
                    want.append(f"{part}/{n.replace('.safetensors.index.json', '')}*.safetensors")
                break
    if tokenizers:
        want += [f"tokenizer{s}/{f}" for s in ("", "_2") for f in _TOKENIZER_FILES]
    return want


def _bucket_folder(url, select) -> Path:
    """A local copy of the files `select(names)` picks from the folder `url` (gs://, s3://):
    fetched once into the user's cache (`io/cache.local_folder`), reused while unchanged."""
    import fnmatch

    from diffcut_jax.io import paths

    folder = paths.as_path(url)
    try:
        if not folder.is_dir():
            raise CheckpointError(f"model folder not found: {paths.redact(url)}")
        base = folder.path.rstrip("/") + "/"
        names = {q[len(base):] for q in folder.fs.find(folder.path)}
    except (OSError, PermissionError) as e:
        raise ModelNotAvailableError(f"{paths.redact(url)}: cannot be read ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
    picked = sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in select(names)))
    from diffcut_jax.io.cache import local_folder

    return local_folder(folder, picked)


@functools.lru_cache(maxsize=16)
def _resolve_hub(repo_id: str, prefer_fp16: bool, tokenizers: bool) -> CheckpointFiles:
    """Once per process and repository: the commands find every model before loading any, then
    load them (errors are not cached)."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as e:  # a runtime dependency, but say so clearly
        raise ModelNotAvailableError(f"huggingface_hub is needed to fetch {repo_id!r}: pip install huggingface_hub") from e

    def patterns(files):
        return wanted_files(files, prefer_fp16, tokenizers)

    try:
        offline = hub_unreachable()
        if offline:
            raise ConnectionError(offline)
        files = set(HfApi().list_repo_files(repo_id))
        root = snapshot_download(repo_id, allow_patterns=patterns(files))
    except Exception as online_error:  # offline, no network, not found, gated...
        try:
            root = snapshot_download(repo_id, allow_patterns=patterns(None), local_files_only=True)
            return _local(Path(root))
        except Exception:
            reason = f"{type(online_error).__name__}: {str(online_error).splitlines()[0] if str(online_error) else ''}"
            raise ModelNotAvailableError(
                f"model {repo_id!r} is not a local directory, not in the local hub cache, and could "
                f"not be downloaded ({reason}).\n{_download_hint(repo_id)}"
            ) from None
    return _local(Path(root))


# ---------------------------------------------------------------- open_clip models

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_TORCH_WEIGHTS = "open_clip_pytorch_model.bin"


@dataclass(frozen=True)
class OpenCLIPFiles:
    root: Path
    config: Path
    weights: Path  # safetensors, or the PyTorch pickle where that is all there is

    def source(self):
        """The weights as a `TensorSource` (PyTorch pickles need torch, only for this)."""
        from diffcut_jax.features.checkpoint import SafetensorsSource

        if self.weights.suffix == ".safetensors":
            return SafetensorsSource(self.weights)
        return TorchPickleSource(self.weights)


class TorchPickleSource:
    """`open_clip_pytorch_model.bin` through torch (optional: only repositories without
    safetensors need it). Loaded with `weights_only=True`, memory-mapped."""

    def __init__(self, path: Path):
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{path}: only PyTorch weights ({path.name}) here, and torch is not installed. "
                f"Either `pip install torch` (CPU build is enough; it is used only to read this "
                f"file), or convert once elsewhere:\n  python -c \"import torch, safetensors.torch "
                f"as st; st.save_file({{k: v.contiguous() for k, v in torch.load('{path.name}', "
                f"map_location='cpu', weights_only=True).items()}}, '{OPEN_CLIP_WEIGHTS}')\"\n"
                f"and put {OPEN_CLIP_WEIGHTS} beside {OPEN_CLIP_CONFIG}.") from None
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict ({e})") from e
        sd = sd.get("state_dict", sd)
        self._sd = {k: v for k, v in sd.items() if hasattr(v, "shape")}
        self.path = path

    def keys(self):
        return self._sd.keys()

    def shape(self, key):
        return tuple(self._sd[key].shape)

    def read(self, key):
        return self._sd[key].float().numpy() if self._sd[key].is_floating_point() else self._sd[key].numpy()


def _open_clip_local(root: Path) -> OpenCLIPFiles:
    if not root.is_dir():
        raise CheckpointError(f"CLIP model directory not found: {root}")
    config = root / OPEN_CLIP_CONFIG
    if not config.exists():
        found = sorted(p.name for p in root.iterdir())
        raise CheckpointError(f"{root} is not an open_clip model: no {OPEN_CLIP_CONFIG} "
                              f"(found {found or 'nothing'})")
    for name in (OPEN_CLIP_WEIGHTS, OPEN_CLIP_TORCH_WEIGHTS):
        if (root / name).exists():
            return OpenCLIPFiles(root, config, root / name)
    raise CheckpointError(f"{root}: no weights ({OPEN_CLIP_WEIGHTS} or {OPEN_CLIP_TORCH_WEIGHTS})")


def _open_clip_hint(repo_id: str) -> str:
    return (f"To get the weights, on a machine with network access run\n"
            f"  hf download {repo_id} {OPEN_CLIP_CONFIG} {OPEN_CLIP_WEIGHTS} "
            f"--local-dir /path/to/{repo_id.split('/')[-1]}\n"
            f"then pass that directory (--clip_model=/path/to/...) instead of the hub id.")


def resolve_open_clip(model: str | Path) -> OpenCLIPFiles:
    """A local open_clip directory (hub layout), a folder on a bucket, or a hub id (downloaded,
    or from the cache)."""
    from diffcut_jax.io.paths import is_url

    if is_url(model):
        return _open_clip_local(_bucket_folder(model, lambda names: [
            OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS if OPEN_CLIP_WEIGHTS in names else OPEN_CLIP_TORCH_WEIGHTS]))
    repo_id = _hub_id(model)
    if repo_id is None:
        return _open_clip_local(Path(model).expanduser())
    return _resolve_open_clip_hub(repo_id)


@functools.lru_cache(maxsize=16)
def _resolve_open_clip_hub(repo_id: str) -> OpenCLIPFiles:
    """Once per process and repository (errors are not cached)."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as e:
        raise ModelNotAvailableError(f"huggingface_hub is needed to fetch {repo_id!r}") from e
    try:
        offline = hub_unreachable()
        if offline:
            raise ConnectionError(offline)
        files = set(HfApi().list_repo_files(repo_id))
        weights = OPEN_CLIP_WEIGHTS if OPEN_CLIP_WEIGHTS in files else OPEN_CLIP_TORCH_WEIGHTS
        root = snapshot_download(repo_id, allow_patterns=[OPEN_CLIP_CONFIG, weights])
    except Exception as online_error:
        try:
            root = snapshot_download(repo_id, allow_patterns=[OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS,
                                                              OPEN_CLIP_TORCH_WEIGHTS],
                                     local_files_only=True)
            return _open_clip_local(Path(root))
        except Exception:
            first = str(online_error).splitlines()[0] if str(online_error) else ""
            raise ModelNotAvailableError(
                f"CLIP model {repo_id!r} is not a local directory, not in the local hub cache, and "
                f"could not be downloaded ({type(online_error).__name__}: {first}).\n"
                f"{_open_clip_hint(repo_id)}") from None
    return _open_clip_local(Path(root))
