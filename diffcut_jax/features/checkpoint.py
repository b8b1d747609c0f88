"""diffusers / transformers checkpoints (safetensors) -> Flax NNX state, without torch.

`torch_to_nnx` is the one conversion function: PyTorch tensor names in, the filled NNX state out,
checked against the model's abstract state (`nnx.eval_shape`). Every target parameter must be
filled and every source tensor used or matched by an explicit ignore pattern. Shapes are asserted
before anything is read, and errors name the keys.

The NNX modules mirror PyTorch's module names, so a parameter path maps to a tensor name
mechanically: join with '.', and `kernel`/`scale`/`embedding` -> `weight` (conv kernels OIHW ->
HWIO, linear weights transposed).

Tensors are read one at a time (`safe_open(...).get_tensor`), only those that are kept.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias",
                  # bare parameters keep their names (timm's layer scale, CLIP's logit scale)
                  "gamma": "gamma", "logit_scale": "logit_scale"}


class CheckpointError(ValueError):
    """A checkpoint (directory, file or tensor) is missing or does not fit the model."""


class TensorSource(Protocol):
    """Named tensors with shapes known before reading (a safetensors file, a name/shape list)."""

    def keys(self) -> Iterable[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str) -> np.ndarray: ...

    # Optional: `origin(key)`, the name in the file when a source renames (errors show both).


class SafetensorsSource:
    """One safetensors file or a sharded set (`*.safetensors.index.json`), read per tensor."""

    def __init__(self, path: str | Path):
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint file not found: {path}")
        if path.name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{path}: not a safetensors index (no weight_map): {e}") from e
            files = sorted(set(weight_map.values()))
        else:
            weight_map, files = None, [path.name]
        self._handles = {}
        for name in files:
            fpath = path.parent / name
            if not fpath.exists():
                raise CheckpointError(f"checkpoint shard not found: {fpath} (listed in {path})")
            try:
                self._handles[name] = safe_open(str(fpath), framework="numpy")
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointError(f"{fpath}: cannot be read as safetensors ({e})") from e
        self._where = {}
        for name, handle in self._handles.items():
            for key in handle.keys():
                if weight_map is None or weight_map.get(key) == name:
                    self._where[key] = handle
        self.path = path

    def keys(self):
        return self._where.keys()

    def shape(self, key):
        return tuple(self._where[key].get_slice(key).get_shape())

    def read(self, key):
        try:
            return self._where[key].get_tensor(key)
        except Exception as e:
            raise CheckpointError(f"{self.path}: tensor {key!r} cannot be read ({e})") from e


def nnx_path_to_torch(path: Sequence) -> str:
    *parents, leaf = path
    if leaf not in _LEAF_TO_TORCH:
        raise CheckpointError(f"no PyTorch name for parameter {'.'.join(map(str, path))}")
    return ".".join([*(str(p) for p in parents), _LEAF_TO_TORCH[leaf]])


def _to_target_layout(leaf: str, array_or_shape, is_shape: bool):
    """PyTorch layout -> Flax layout (conv OIHW -> HWIO, linear (out, in) -> (in, out))."""
    ndim = len(array_or_shape) if is_shape else np.ndim(array_or_shape)
    if leaf == "kernel" and ndim == 4:
        perm = (2, 3, 1, 0)
    elif leaf == "kernel" and ndim == 2:
        perm = (1, 0)
    else:
        return tuple(array_or_shape) if is_shape else array_or_shape
    if is_shape:
        return tuple(array_or_shape[i] for i in perm)
    return np.transpose(array_or_shape, perm)


def _format(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def conversion_plan(
    source: TensorSource,
    abstract_state: nnx.State,
    *,
    ignore: Sequence[str] = (),
    rename: Callable[[str], str] = lambda k: k,
    part: str = "checkpoint",
) -> list[tuple[tuple, str]]:
    """Match every parameter of `abstract_state` to a source tensor by name and shape.

    Reads no tensor data. Returns [(nnx path, source name)] covering every parameter; raises
    CheckpointError listing every missing, misshaped and unexpected (neither used nor ignored)
    tensor.
    """
    by_name: dict[str, str] = {}
    for key in source.keys():
        new = rename(key)
        if new in by_name:
            raise CheckpointError(f"{part}: tensors {by_name[new]!r} and {key!r} both map to {new!r}")
        by_name[new] = key
    patterns = [re.compile(p) for p in ignore]
    origin = getattr(source, "origin", lambda k: k)

    def show(key):
        return key if origin(key) == key else f"{key} (from {origin(key)})"

    plan, missing, misshaped, bad = [], [], [], set()
    for path, var in nnx.to_flat_state(abstract_state):
        target = var.get_value() if hasattr(var, "get_value") else var.value
        name = nnx_path_to_torch(path)
        key = by_name.get(name)
        if key is None:
            missing.append(name)
            continue
        shape = _to_target_layout(path[-1], source.shape(key), is_shape=True)
        if shape != tuple(target.shape):
            bad.add(key)
            misshaped.append(
                f"{show(key)} {list(source.shape(key))} (the model needs {list(target.shape)} in Flax "
                f"layout, this gives {list(shape)})"
            )
            continue
        plan.append((path, key))
    used = {key for _, key in plan} | bad
    unexpected = sorted(
        show(k) for k in source.keys()
        if k not in used and not any(p.search(origin(k)) for p in patterns)
    )
    raise_if_unfit(f"{part}: checkpoint", missing, misshaped,
                   unexpected=unexpected, unexpected_what="neither used nor ignored")
    return plan


def raise_if_unfit(what: str, missing, misshaped, *, unexpected=(), unexpected_what="not used"):
    """One CheckpointError naming every missing, misshaped and unexpected tensor, if any."""
    problems = []
    if missing:
        problems.append(f"missing tensors: {_format(sorted(missing))}")
    if misshaped:
        problems.append(f"misshaped tensors: {_format(list(misshaped))}")
    if unexpected:
        problems.append(f"unexpected tensors ({unexpected_what}): {_format(sorted(unexpected))}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))


def torch_to_nnx(
    source: TensorSource,
    abstract_state: nnx.State,
    *,
    ignore: Sequence[str] = (),
    rename: Callable[[str], str] = lambda k: k,
    part: str = "checkpoint",
    dtype=None,
) -> nnx.State:
    """Fill `abstract_state` (from `nnx.eval_shape`) with the tensors of `source`.

    Args:
      source: the PyTorch-named tensors.
      abstract_state: the model's parameter state with ShapeDtypeStruct leaves.
      ignore: regular expressions (`re.search`) of source names deliberately not used.
      rename: maps a source name to the name the model expects (e.g. strips `text_model.`).
      part: names the checkpoint part in error messages.
      dtype: parameter dtype to cast to (default: each target's own dtype).

    Returns:
      The state with arrays, every parameter filled. Everything is validated (see
      `conversion_plan`) before the first tensor is read; tensors are then read one at a time.
    """
    plan = dict(conversion_plan(source, abstract_state, ignore=ignore, rename=rename, part=part))
    filled = []
    for path, var in nnx.to_flat_state(abstract_state):
        target = var.get_value() if hasattr(var, "get_value") else var.value
        arr = _to_target_layout(path[-1], source.read(plan[path]), is_shape=False)
        filled.append((path, var.replace(jnp.asarray(arr, dtype=dtype or target.dtype))))
        del arr
    return nnx.from_flat_state(filled)


def load_module(
    factory: Callable[[nnx.Rngs], nnx.Module],
    source: TensorSource,
    *,
    ignore: Sequence[str] = (),
    rename: Callable[[str], str] = lambda k: k,
    part: str = "checkpoint",
) -> tuple[nnx.GraphDef, nnx.State]:
    """Build the module abstractly, fill it from `source`; returns (graphdef, params)."""
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    return graphdef, torch_to_nnx(source, state, ignore=ignore, rename=rename, part=part)


def abstract_module(factory: Callable[[nnx.Rngs], nnx.Module]) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: factory(nnx.Rngs(0))))
