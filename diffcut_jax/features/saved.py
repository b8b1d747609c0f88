"""Converted parameters, saved once and loaded without conversion.

    seg = DiffCut.from_pretrained("segmind/SSD-1B")
    seg.save("ssd-1b-jax")                               # or save_extractor(extractor, dir)
    seg = DiffCut.from_pretrained("ssd-1b-jax")          # the same segmenter, no conversion

A saved directory holds `params.safetensors` (the parameter pytree in Flax layout, one tensor per
leaf, named by its path: `unet/down_blocks.1.attentions.0.proj_in.kernel`,
`conditioning/context`) and `diffcut_jax.json` (the format version, the UNet and VAE configs,
the scheduler config, the prompt the conditioning was encoded from, the source model).

Loading builds the modules abstractly from the saved configs (`nnx.eval_shape`) and fills them:
every parameter must be in the file with its shape, and every tensor of the file must be used,
else `CheckpointError` names the keys. Unlike the diffusers conversion there is no name mapping,
no transposition and no text encoder to run. Safetensors is memory-mapped, so reading is bound by
the disk. Parameters keep their saved dtype unless `param_dtype` asks for another; the compute
dtype is chosen at load as for any checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from flax import nnx

from diffcut_jax.features import checkpoint as ckpt

FORMAT = 1
MANIFEST = "diffcut_jax.json"
WEIGHTS = "params.safetensors"


def is_saved(model) -> bool:
    """Whether `model` is a directory (local or on a bucket) written by `save_extractor`."""
    from diffcut_jax.io.paths import as_path, is_url

    if isinstance(model, str) and not is_url(model) and _looks_like_hub_id(model):
        return False
    try:
        return (as_path(model) / MANIFEST).is_file()
    except (TypeError, ValueError):
        return False


def _looks_like_hub_id(model: str) -> bool:
    """`owner/name` with no such local folder: asked of the hub, not of the disk."""
    return model.count("/") == 1 and not Path(model).exists()


def flatten(params) -> dict[str, jnp.ndarray]:
    """The extractor's parameter pytree -> {path: array} (NNX states by their module paths)."""
    flat = {}
    for part in ("unet", "vae"):
        for path, var in nnx.to_flat_state(params[part]):
            value = var.get_value() if hasattr(var, "get_value") else var.value
            flat[f"{part}/" + ".".join(map(str, path))] = value
    for name, value in params["conditioning"].items():
        if value is not None:
            flat[f"conditioning/{name}"] = value
    return flat


def save_extractor(extractor, directory: str | Path) -> Path:
    """Write the extractor's converted parameters and configs to `directory` (created; or a
    bucket's folder, `gs://...`: each file uploaded whole)."""
    from safetensors.flax import save_file

    from diffcut_jax.io.paths import as_path, atomic_write, makedirs, write_text

    directory = as_path(directory)
    makedirs(directory)
    flat = {k: jnp.asarray(v) for k, v in flatten(extractor.params).items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(flat, str(p)))
    manifest = {
        "format": FORMAT, "unet_config": dataclasses.asdict(extractor.unet_config),
        "vae_config": dataclasses.asdict(extractor.vae_config),
        "scheduler": extractor.provenance.get("scheduler", {}),
        "prompt": extractor.provenance.get("prompt"),
        "source_model": extractor.provenance.get("model"),
        "tensors": len(flat),
    }
    # The manifest last: a directory without it is not taken for a saved one.
    write_text(directory / MANIFEST, json.dumps(manifest, indent=1))
    return directory


def _config(cls, fields: dict):
    """A frozen config dataclass from its saved dict (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def fill(abstract: nnx.State, tensors, prefix: str, *, dtype=None, part: str) -> nnx.State:
    """`abstract` (from `nnx.eval_shape`) filled with the tensors named `prefix/<path>`.
    All names and shapes are checked before any tensor is read; errors name the keys."""
    wanted = {}
    missing, misshaped = [], []
    for path, var in nnx.to_flat_state(abstract):
        target = var.get_value() if hasattr(var, "get_value") else var.value
        key = f"{prefix}/" + ".".join(map(str, path))
        if key not in tensors.shape:
            missing.append(key)
        elif tuple(tensors.shape[key]) != tuple(target.shape):
            misshaped.append(f"{key} {list(tensors.shape[key])} (the model needs {list(target.shape)})")
        wanted[path] = (key, var, target)
    ckpt.raise_if_unfit(f"{part}: saved parameters", missing, misshaped)
    filled = [(path, var.replace(jnp.asarray(tensors.read(key), dtype=dtype or target.dtype)))
              for path, (key, var, target) in wanted.items()]
    tensors.used.update(key for key, _, _ in wanted.values())
    return nnx.from_flat_state(filled)


_DTYPES = {"F16": jnp.float16, "BF16": jnp.bfloat16, "F32": jnp.float32, "F64": jnp.float64}


class _Tensors:
    """The saved file: names and shapes from the header, tensors read one at a time."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        if not path.is_file():
            raise ckpt.CheckpointError(f"saved parameters not found: {path}")
        try:
            self._file = safe_open(str(path), framework="flax")
        except Exception as e:  # noqa: BLE001 - safetensors raises its own types
            raise ckpt.CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
        self.path = path
        slices = {k: self._file.get_slice(k) for k in self._file.keys()}
        self.shape = {k: tuple(v.get_shape()) for k, v in slices.items()}
        self.dtype = {k: _DTYPES.get(v.get_dtype(), v.get_dtype()) for k, v in slices.items()}
        self.used: set[str] = set()

    def read(self, key: str):
        return self._file.get_tensor(key)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """What a saved directory holds, built and filled: the extractor is made from it by
    `extractor.load_extractor` (which owns the extractor; this module only reads and writes)."""

    unet_graph: Any
    vae_graph: Any
    params: dict
    unet_config: Any
    vae_config: Any
    manifest: dict


def load(directory: str | Path, *, dtype, param_dtype=None, vae_dtype=jnp.float32,
         vae_precision: str = "torch", prompt: str | None = None, attention: str = "auto") -> Loaded:
    """The modules and parameters of a saved directory (arguments as `extractor.load_extractor`;
    `dtype` is the UNet compute dtype, already resolved)."""
    from diffcut_jax.io.cache import local_copy
    from diffcut_jax.io.paths import as_path
    from diffcut_jax.models import unet, vae
    from diffcut_jax.models.layers import Numerics

    directory = as_path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except ValueError as e:
        raise ckpt.CheckpointError(f"{directory / MANIFEST}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise ckpt.CheckpointError(f"{directory / MANIFEST}: format {manifest.get('format')!r}, "
                                   f"this version reads {FORMAT}")
    if (prompt or None) != (manifest.get("prompt") or None):
        raise ValueError(f"{directory} was saved with prompt {manifest.get('prompt')!r}; its text "
                         f"encoders are not saved, so it cannot encode prompt {prompt!r}")
    ucfg = _config(unet.UNetConfig, manifest["unet_config"])
    vcfg = _config(vae.VAEConfig, manifest["vae_config"])
    # A bucket's weights are fetched once into the user's cache, then memory-mapped like a
    # local file (`io/cache.local_copy`: keyed by the object's version).
    tensors = _Tensors(local_copy(directory / WEIGHTS) if (directory / WEIGHTS).exists()
                       else directory / WEIGHTS)

    # Parameters keep the file's dtype unless asked for another.
    stored = next((v for k, v in tensors.dtype.items() if k.startswith("unet/")), jnp.float32)
    unet_p = Numerics(param_dtype=param_dtype or stored, dtype=dtype, attention=attention)
    vae_p = Numerics(param_dtype=vae_dtype, dtype=vae_dtype, attention=attention, policy=vae_precision)
    unet_graph, unet_abstract = ckpt.abstract_module(lambda r: unet.UNetEncoder(ucfg, numerics=unet_p, rngs=r))
    vae_graph, vae_abstract = ckpt.abstract_module(lambda r: vae.VAEEncoder(vcfg, numerics=vae_p, rngs=r))
    params = {
        "unet": fill(unet_abstract, tensors, "unet", part=f"{directory}: unet"),
        "vae": fill(vae_abstract, tensors, "vae", part=f"{directory}: vae"),
        "conditioning": {},
    }
    for name in ("context", "pooled"):
        key = f"conditioning/{name}"
        params["conditioning"][name] = jnp.asarray(tensors.read(key)) if key in tensors.shape else None
        tensors.used.add(key)
    if params["conditioning"]["context"] is None:
        raise ckpt.CheckpointError(f"{tensors.path}: missing tensor conditioning/context")
    if (ucfg.addition_embed_type == "text_time") != (params["conditioning"]["pooled"] is not None):
        raise ckpt.CheckpointError(f"{tensors.path}: conditioning/pooled must be present exactly "
                                   "for SDXL-family UNets")
    ckpt.raise_if_unfit(f"{tensors.path}: saved parameters", (), (),
                        unexpected=set(tensors.shape) - tensors.used)
    return Loaded(unet_graph=unet_graph, vae_graph=vae_graph, params=params, unet_config=ucfg,
                  vae_config=vcfg, manifest=manifest)
