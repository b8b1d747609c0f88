"""Find a diffusers checkpoint: a local directory, or a hub id downloaded with huggingface_hub.

Only the files the extractor needs are fetched (config.json and one safetensors file per part,
the fp16 variant when there is one, tokenizer files when asked for).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from diffcut_jax.checkpoint import CheckpointError

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


def _download_hint(repo_id: str) -> str:
    return (
        f"To get the weights, on a machine with network access run\n"
        f"  huggingface-cli download {repo_id} --include 'unet/*' 'vae/*' 'text_encoder*/*' "
        f"'tokenizer*/*' --local-dir /path/to/{repo_id.split('/')[-1]}\n"
        f"(or any diffusers `save_pretrained` directory with safetensors weights), then pass that "
        f"directory instead of the hub id."
    )


def resolve(model: str | Path, *, prefer_fp16: bool = True, tokenizers: bool = False) -> CheckpointFiles:
    """A local diffusers directory, or a hub id (downloaded, or found in the local hub cache)."""
    path = Path(model).expanduser()
    if path.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
        return _local(path)
    repo_id = str(model)
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as e:  # a runtime dependency, but say so clearly
        raise ModelNotAvailableError(f"huggingface_hub is needed to fetch {repo_id!r}: pip install huggingface_hub") from e

    def patterns(files):
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

    try:
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
