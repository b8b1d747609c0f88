"""Parity with the PyTorch implementations (diffusers, transformers) on tiny random models.

The torch models are built from the tiny configs (same structure as SSD-1B / SD1.4), given random
weights, saved with `save_pretrained` (safetensors) and loaded through the real loader.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import diffcut_jax as dc  # noqa: E402
from diffcut_jax.features import extractor as ex_lib  # noqa: E402
from diffcut_jax.testing import tiny_spec  # noqa: E402

# Model, TFDS or torch work per test: left out of the quick subset (-m "not slow").
pytestmark = pytest.mark.slow

SIZE = 128
TIMESTEP = 50


def _randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and "norm" in name.split(".")[-2]:
                p.copy_(1.0 + 0.1 * noise) if name.endswith("weight") else p.copy_(0.1 * noise)
            else:
                fan_in = max(1, p[0].numel()) if p.ndim > 1 else p.shape[0]
                p.copy_(noise / np.sqrt(fan_in))


def _clip_config(cfg):
    cfg = {k: v for k, v in cfg.items() if k != "architectures"}
    return transformers.CLIPTextConfig(**cfg)


def _build_torch(family, root):
    spec = tiny_spec(family)
    models = {}
    cfg = {k: v for k, v in spec["unet"]["config"].items()}
    models["unet"] = diffusers.UNet2DConditionModel(**cfg)
    models["vae"] = diffusers.AutoencoderKL(**spec["vae"]["config"])
    models["text_encoder"] = transformers.CLIPTextModel(_clip_config(spec["text_encoder"]["config"]))
    if "text_encoder_2" in spec:
        models["text_encoder_2"] = transformers.CLIPTextModelWithProjection(
            _clip_config(spec["text_encoder_2"]["config"])
        )
    for i, (part, m) in enumerate(models.items()):
        _randomize(m, seed=10 + i)
        m.eval()
        m.save_pretrained(str(root / part), safe_serialization=True)
    return models


@pytest.fixture(scope="module", params=["sdxl", "sd"])
def setup(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"tiny-{family}")
    models = _build_torch(family, root)
    extractor = dc.load_extractor(root, dtype=jnp.float32, image_size=SIZE, timestep=TIMESTEP)
    return family, root, models, extractor


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _torch_prompt(family, models):
    ids1 = torch.tensor([[ex_lib.BOS, ex_lib.EOS] + [49407] * 75])
    with torch.no_grad():
        out1 = models["text_encoder"](ids1, output_hidden_states=True)
        if family == "sd":
            return out1.last_hidden_state, None
        ids2 = torch.tensor([[ex_lib.BOS, ex_lib.EOS] + [0] * 75])
        out2 = models["text_encoder_2"](ids2, output_hidden_states=True)
    context = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    return context, out2.text_embeds


def _torch_features(family, models, images, noise):
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    vae = models["vae"]
    with torch.no_grad():
        latent = vae.encode(2 * x - 1).latent_dist.mean * vae.config.scaling_factor
    a, s = ex_lib.noise_schedule(None, TIMESTEP)
    noisy = a * latent + s * torch.from_numpy(np.asarray(noise)).permute(0, 3, 1, 2)
    context, pooled = _torch_prompt(family, models)
    b = x.shape[0]
    unet = models["unet"]
    block = unet.down_blocks[-1] if family == "sdxl" else unet.down_blocks[-2]
    captured = {}
    hook = block.attentions[-1].transformer_blocks[-1].attn1.register_forward_hook(
        lambda mod, inp, out: captured.setdefault("feat", out)
    )
    kwargs = {}
    if pooled is not None:
        kwargs["added_cond_kwargs"] = {
            "text_embeds": pooled.expand(b, -1),
            "time_ids": torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]], dtype=torch.float32).expand(b, -1),
        }
    with torch.no_grad():
        unet(noisy, TIMESTEP, encoder_hidden_states=context.expand(b, -1, -1), **kwargs)
    hook.remove()
    feat = captured["feat"]
    side = SIZE // 32
    return latent.permute(0, 2, 3, 1).numpy(), feat.reshape(b, side, side, -1).numpy()


def test_features_match_attn1_output(setup):
    family, _, models, extractor = setup
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, SIZE, SIZE, 3))
    noise = jax.random.normal(jax.random.PRNGKey(2), (1,) + extractor.latent_shape)
    ours = extractor(images, noise=noise)
    assert ours.shape == (2,) + extractor.feature_shape
    _, ref = _torch_features(family, models, images, noise)
    assert _rel(ours, ref) < 1e-4


def test_vae_latent_alone(setup):
    family, root, models, extractor = setup
    images = jax.random.uniform(jax.random.PRNGKey(3), (2, SIZE, SIZE, 3))
    ours = extractor.encode_latent(images)
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = models["vae"].encode(2 * x - 1).latent_dist.mean * models["vae"].config.scaling_factor
    assert _rel(ours, ref.permute(0, 2, 3, 1).numpy()) < 1e-4


def test_prompt_embeddings_and_pooled_alone(setup):
    family, root, models, extractor = setup
    cond = extractor.params["conditioning"]
    context, pooled = _torch_prompt(family, models)
    assert _rel(cond["context"], context.numpy()) < 1e-4
    if family == "sdxl":
        assert _rel(cond["pooled"], pooled.numpy()) < 1e-4
    else:
        assert cond["pooled"] is None
