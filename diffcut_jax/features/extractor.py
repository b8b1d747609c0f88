"""The diffusion feature extractor (docs/algorithm.md §1): images in [0, 1] -> patch features.

    extractor = load_extractor("segmind/SSD-1B")          # or a local diffusers directory
    feats = extractor(images)                             # (B, H, W, 3) -> (B, S/32, S/32, C)

The jitted boundary is `extract(params, images, noise) -> features`, pure; `params` is an explicit
pytree (UNet and VAE states plus the constant prompt embeddings). The text encoders run once at
load time for the prompt embeddings and are then dropped.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcut_jax.features import checkpoint as ckpt
from diffcut_jax.features import hub, saved
from diffcut_jax.io.image_ops import resize_bilinear
from diffcut_jax.models import clip, unet, vae
from diffcut_jax.models.layers import Numerics

BOS, EOS = 49406, 49407
# The tokenizers' pad ids (docs/algorithm.md §1.3) when no tokenizer files are at hand.
DEFAULT_PAD_IDS = {"text_encoder": 49407, "text_encoder_2": 0}
MAX_LENGTH = 77


def default_dtype(backend: str | None = None):
    """The UNet's compute dtype per backend (docs/performance.md, "Precision", benchmarks/precision.py):
    float16 on GPUs, as the original (its features are 8x closer to float32's than bfloat16's,
    at the same tensor-core rate); bfloat16 on TPUs (no native float16); float32 on CPUs."""
    backend = backend or jax.default_backend()
    return {"gpu": jnp.float16, "tpu": jnp.bfloat16}.get(backend, jnp.float32)


def _pad_id(root: Path, part: str) -> int:
    folder = root / ("tokenizer" if part == "text_encoder" else "tokenizer_2")
    try:
        special = json.loads((folder / "special_tokens_map.json").read_text())
        vocab = json.loads((folder / "vocab.json").read_text())
        pad = special["pad_token"]
        pad = pad["content"] if isinstance(pad, dict) else pad
        return int(vocab[pad])
    except (OSError, ValueError, KeyError):
        return DEFAULT_PAD_IDS[part]


def prompt_ids(root: Path, part: str, prompt: str | None) -> np.ndarray:
    """(1, 77) token ids: the empty prompt needs no tokenizer; other prompts use the checkpoint's."""
    pad = _pad_id(root, part)
    if not prompt:
        return np.array([[BOS, EOS] + [pad] * (MAX_LENGTH - 2)], np.int32)
    try:
        from transformers import CLIPTokenizer
    except ImportError as e:
        raise ImportError("a non-empty prompt needs the tokenizer: pip install transformers") from e
    folder = root / ("tokenizer" if part == "text_encoder" else "tokenizer_2")
    if not folder.is_dir():
        raise ckpt.CheckpointError(f"a non-empty prompt needs the tokenizer files in {folder}")
    tok = CLIPTokenizer.from_pretrained(str(folder))
    return np.asarray(
        tok(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"], np.int32
    )[None]


def scheduler_config(root: Path | None) -> dict[str, Any]:
    """The checkpoint's scheduler/scheduler_config.json ({} without one: the defaults)."""
    if root is not None and (root / "scheduler" / "scheduler_config.json").exists():
        return json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return {}


def noise_schedule(root: Path | None, timestep: int) -> tuple[float, float]:
    """(sqrt(abar_t), sqrt(1 - abar_t)) of the "scaled_linear" DDPM schedule (or the checkpoint's)."""
    return schedule_from_config(scheduler_config(root), timestep)


def schedule_from_config(cfg: dict[str, Any], timestep: int) -> tuple[float, float]:
    start, end = cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012)
    n = cfg.get("num_train_timesteps", 1000)
    kind = cfg.get("beta_schedule", "scaled_linear")
    if kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    else:
        raise ckpt.CheckpointError(f"scheduler beta_schedule {kind!r} is not supported")
    if not 0 <= timestep < n:
        raise ValueError(f"timestep must be in [0, {n}), got {timestep}")
    abar = np.cumprod(1.0 - betas)[timestep]
    return float(np.sqrt(abar)), float(np.sqrt(1.0 - abar))


def _size(image_size) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive multiples of 32, got {(h, w)}")
    return int(h), int(w)


@dataclass
class Conditioning:
    context: jnp.ndarray  # (1, 77, D)
    pooled: jnp.ndarray | None  # (1, P) SDXL family; its time ids follow the working size


def encode_prompt(files: hub.CheckpointFiles, prompt: str | None, sdxl: bool) -> Conditioning:
    """Prompt embeddings (docs/algorithm.md §1.3). Text encoders run in float32 and are freed after."""
    outputs = {}
    for part in ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",):
        if part not in files.parts:
            raise ckpt.CheckpointError(f"{files.root}: missing {part}/ (needed by this UNet)")
        cfg = clip.CLIPTextConfig.from_transformers(files.config(part), with_projection=part == "text_encoder_2")
        graphdef, params = ckpt.load_module(
            lambda r, cfg=cfg: clip.CLIPTextModel(cfg, rngs=r),
            ckpt.SafetensorsSource(files.weights(part)),
            ignore=clip.IGNORE_PATTERNS, rename=clip.strip_text_model_prefix, part=f"{files.root}/{part}",
        )
        ids = jnp.asarray(prompt_ids(files.root, part, prompt))
        # One compiled program per encoder instead of hundreds of eager ops (cold start).
        run = jax.jit(lambda p, i, g=graphdef: nnx.merge(g, jax.tree.map(
            lambda x: x.astype(jnp.float32), p))(i))
        out = run(params, ids)
        outputs[part] = jax.device_get(out)
        del graphdef, params, out
    if sdxl:
        te1, te2 = outputs["text_encoder"], outputs["text_encoder_2"]
        context = np.concatenate([te1.hidden_states[-2], te2.hidden_states[-2]], axis=-1)
        return Conditioning(jnp.asarray(context), jnp.asarray(te2.text_embeds))
    return Conditioning(jnp.asarray(outputs["text_encoder"].last_hidden_state), None)


class DiffusionFeatureExtractor:
    """Callable: images (B, H, W, 3) in [0, 1] -> features (B, S_h/32, S_w/32, C), float32.

    The working size S is `image_size` unless a call passes `size=(h, w)`; one compiled function
    per (batch, input size, working size).
    """

    def __init__(self, *, unet_graph, vae_graph, params, unet_config, vae_config, size, timestep,
                 schedule, seed, provenance: dict | None = None):
        # Where the weights came from (model, prompt, scheduler config): what `save` records.
        self.provenance = provenance or {}
        self.unet_config = unet_config
        self.vae_config = vae_config
        self.image_size = size
        self.timestep = timestep
        self.schedule = schedule
        self.seed = seed
        self.params = params
        self.unet_graph = unet_graph
        self.vae_graph = vae_graph
        self._noise = {}
        self._latent = jax.jit(lambda p, im: nnx.merge(vae_graph, p)(im.astype(jnp.float32)))
        self._extract = jax.jit(
            functools.partial(extract, unet_graph=unet_graph, vae_graph=vae_graph,
                              timestep=timestep, schedule=schedule),
            static_argnames=("size",),
        )

    def feature_shape_for(self, size) -> tuple[int, int, int]:
        s = 8 * self.unet_config.feature_stride
        return size[0] // s, size[1] // s, self.unet_config.feature_channels

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return self.feature_shape_for(self.image_size)

    def latent_shape_for(self, size) -> tuple[int, int, int]:
        return size[0] // 8, size[1] // 8, self.vae_config.latent_channels

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.latent_shape_for(self.image_size)

    def noise_for(self, size) -> jnp.ndarray:
        """The one noise draw (from `seed`) for a working size, shared by every image."""
        size = _size(size)
        if size not in self._noise:
            key = jax.random.PRNGKey(self.seed)
            self._noise[size] = jax.random.normal(key, (1,) + self.latent_shape_for(size), jnp.float32)
        return self._noise[size]

    @property
    def noise(self) -> jnp.ndarray:
        return self.noise_for(self.image_size)

    def function(self, size=None):
        """Features as a pure function for your own transformations:
        `f(extractor.params, images) -> (B, h, w, C)` at the working size `size` (default
        `image_size`), the noise draw bound; equals `extractor(images, size=size)`."""
        size = _size(size or self.image_size)
        with jax.ensure_compile_time_eval():
            noise = self.noise_for(size)
        return functools.partial(extract, noise=noise, unet_graph=self.unet_graph,
                                 vae_graph=self.vae_graph, size=size, timestep=self.timestep,
                                 schedule=self.schedule)

    def encode_latent(self, images: jnp.ndarray) -> jnp.ndarray:
        """The VAE alone: images (B, S_h, S_w, 3) in [0, 1] -> scaled posterior mean."""
        return self._latent(self.params["vae"], images)

    def __call__(self, images: jnp.ndarray, noise: jnp.ndarray | None = None, *, size=None) -> jnp.ndarray:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) in [0, 1], got shape {images.shape}")
        size = _size(size or self.image_size)
        noise = self.noise_for(size) if noise is None else noise
        if noise.shape[1:] != self.latent_shape_for(size):
            raise ValueError(
                f"noise must be (1 or B, {', '.join(map(str, self.latent_shape_for(size)))}), got {noise.shape}"
            )
        return self._extract(self.params, images, noise, size=size)


def extract(params, images, noise, *, unet_graph, vae_graph, size, timestep, schedule):
    """The pure forward: (params, images, noise) -> features; `size` the static working size."""
    if images.shape[1:3] != size:
        images = jax.vmap(lambda im: resize_bilinear(im.astype(jnp.float32), size))(images)
    vae = nnx.merge(vae_graph, params["vae"])
    # One image at a time: at 1024 x 1024 the VAE's first stage alone holds ~0.5 GB of
    # activations per image, and an image is already enough work for an accelerator.
    latent = jax.lax.map(lambda im: vae(im[None].astype(jnp.float32))[0], images)
    a, s = schedule
    noisy = a * latent + s * noise.astype(jnp.float32)
    b = images.shape[0]
    cond = params["conditioning"]
    context = jnp.broadcast_to(cond["context"], (b,) + cond["context"].shape[1:])
    kwargs = {}
    if cond.get("pooled") is not None:
        h, w = size
        kwargs = dict(
            text_embeds=jnp.broadcast_to(cond["pooled"], (b,) + cond["pooled"].shape[1:]),
            time_ids=jnp.broadcast_to(jnp.asarray([h, w, 0, 0, h, w], jnp.float32), (b, 6)),
        )
    feats = nnx.merge(unet_graph, params["unet"])(noisy, timestep, context, **kwargs)
    return feats.astype(jnp.float32)


def load_extractor(
    model: str | Path = "segmind/SSD-1B",
    *,
    dtype=None,
    param_dtype=None,
    vae_dtype=jnp.float32,
    vae_precision: str = "torch",
    timestep: int = 50,
    image_size=1024,
    seed: int = 0,
    prompt: str | None = None,
    prefer_fp16: bool = True,
    attention: str = "auto",
) -> DiffusionFeatureExtractor:
    """Build the extractor from a diffusers checkpoint (local directory or hub id).

    Args:
      model: local diffusers directory or hub id (downloaded with huggingface_hub, only the needed
        files, fp16 variant first), or a directory written by `save_extractor` / `DiffCut.save`
        (converted parameters, loaded without conversion; `saved.py`).
      dtype: UNet compute dtype; default float16 on GPUs, bfloat16 on TPUs, float32 on CPUs.
      param_dtype: UNet parameter dtype; default = dtype.
      vae_dtype: VAE parameter and compute dtype (float32: the XL VAE overflows in fp16;
        bfloat16 has the range, see docs/usage.md, "Diffusion features" for its cost in accuracy).
      vae_precision: products of a float32 VAE: "torch" (default) as the original under PyTorch's
        defaults, float32 matmuls and TF32 convolutions on NVIDIA GPUs (HIGH on TPUs, exact on
        CPUs); "highest": every product in float32 (docs/performance.md, "Precision").
      attention: "auto" (cuDNN's fused kernel on NVIDIA GPUs for bf16/fp16, query-chunked XLA
        where the logits would be large, plain XLA otherwise), "xla", "cudnn" or "chunked".
      timestep: diffusion timestep t of the noisy latent (paper: 50).
      image_size: working size S (int) or (height, width), multiples of 32; inputs are resized.
      seed: seed of the one noise draw shared by every image (pass `noise=` to calls to override).
      prompt: text prompt (default: the empty prompt, as the paper).
    """
    dtype = dtype or default_dtype()
    size = _size(image_size)
    if saved.is_saved(model):  # converted before (`save_extractor`): no conversion
        got = saved.load(model, dtype=dtype, param_dtype=param_dtype, vae_dtype=vae_dtype,
                         vae_precision=vae_precision, prompt=prompt, attention=attention)
        manifest = got.manifest
        return DiffusionFeatureExtractor(
            unet_graph=got.unet_graph, vae_graph=got.vae_graph, params=got.params,
            unet_config=got.unet_config, vae_config=got.vae_config, size=size, timestep=timestep,
            schedule=schedule_from_config(manifest.get("scheduler", {}), timestep), seed=seed,
            provenance={"model": manifest.get("source_model"), "prompt": manifest.get("prompt"),
                        "scheduler": manifest.get("scheduler", {}), "saved": str(model),
                        "dtype": jnp.dtype(dtype).name})
    param_dtype = param_dtype or dtype
    files = hub.resolve(model, prefer_fp16=prefer_fp16, tokenizers=bool(prompt))
    ucfg = unet.UNetConfig.from_diffusers(files.config("unet"))
    vcfg = vae.VAEConfig.from_diffusers(files.config("vae"))
    sdxl = ucfg.addition_embed_type == "text_time"
    cond = encode_prompt(files, prompt, sdxl)

    vae_p = Numerics(param_dtype=vae_dtype, dtype=vae_dtype, attention=attention, policy=vae_precision)
    vae_graph, vae_params = ckpt.load_module(
        lambda r: vae.VAEEncoder(vcfg, numerics=vae_p, rngs=r),
        ckpt.SafetensorsSource(files.weights("vae", prefer_fp16)),
        ignore=vae.IGNORE_PATTERNS, part=f"{files.root}/vae",
    )
    unet_p = Numerics(param_dtype=param_dtype, dtype=dtype, attention=attention)
    unet_graph, unet_params = ckpt.load_module(
        lambda r: unet.UNetEncoder(ucfg, numerics=unet_p, rngs=r),
        ckpt.SafetensorsSource(files.weights("unet", prefer_fp16)),
        ignore=unet.ignore_patterns(ucfg), part=f"{files.root}/unet",
    )
    params = {
        "unet": unet_params,
        "vae": vae_params,
        "conditioning": {"context": cond.context, "pooled": cond.pooled},
    }
    return DiffusionFeatureExtractor(
        unet_graph=unet_graph, vae_graph=vae_graph, params=params, unet_config=ucfg,
        vae_config=vcfg, size=size, timestep=timestep, schedule=noise_schedule(files.root, timestep),
        seed=seed, provenance={"model": str(model), "prompt": prompt, "dtype": jnp.dtype(dtype).name,
                               "scheduler": scheduler_config(files.root)},
    )
