"""Building blocks shared by the UNet and the VAE, in Flax NNX, NHWC.

Attribute names mirror diffusers' module names (`to_out` is a one-element list, `ff.net` holds
`[GEGLU, Dropout, Linear]`) so that a parameter's NNX path spells its PyTorch name; see
`diffcut_jax/features/checkpoint.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "chunked")


PRECISION_POLICIES = ("highest", "torch")
# float32 convolutions under the "torch" policy, per backend: NVIDIA GPUs use TF32, as PyTorch's
# cuDNN convolutions do by default (`torch.backends.cudnn.allow_tf32`); on TPUs DEFAULT would be a
# single bf16 pass, so HIGH (three passes) stands in for TF32; CPUs compute float32 exactly
# whatever the setting, and HIGHEST says so.
_TORCH_FLOAT32_CONV = {"gpu": jax.lax.Precision.DEFAULT, "tpu": jax.lax.Precision.HIGH}


@dataclass(frozen=True)
class Numerics:
    """How a model computes: parameter dtype and compute dtype (set separately), the attention
    kernel, and the precision of its products.

    Products in bf16/fp16 take the dtype's precision (DEFAULT). In float32, `policy` decides:
    "highest" computes every product in float32 (HIGHEST); "torch" follows the original's PyTorch
    defaults, float32 matmuls but convolutions at the backend's fast float32 mode (TF32 on NVIDIA
    GPUs; docs/performance.md, "Precision"). `backend` is the platform the model runs on ("cpu", "gpu",
    "tpu"; default: JAX's default backend when the model is built)."""

    param_dtype: jnp.dtype = jnp.float32
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"  # see `resolve_attention`
    attention_chunk: int = 1024  # query rows per block for "chunked"
    policy: str = "highest"
    backend: str | None = None

    def __post_init__(self):
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, "
                             f"got {self.attention!r}")
        if self.policy not in PRECISION_POLICIES:
            raise ValueError(f"precision policy must be one of {PRECISION_POLICIES}, "
                             f"got {self.policy!r}")

    @property
    def precision(self):
        """Matmuls (and convolutions under "highest")."""
        # float32 compute means float32 products: the GPU default would be TF32.
        return jax.lax.Precision.HIGHEST if jnp.dtype(self.dtype) == jnp.float32 else jax.lax.Precision.DEFAULT

    @property
    def conv_precision(self):
        if self.policy == "torch" and jnp.dtype(self.dtype) == jnp.float32:
            backend = {"cuda": "gpu", "rocm": "gpu"}.get(self.backend, self.backend)
            return _TORCH_FLOAT32_CONV.get(backend or jax.default_backend(), jax.lax.Precision.HIGHEST)
        return self.precision


def conv(cin, cout, kernel, p: Numerics, rngs, *, stride=1, padding=None, use_bias=True):
    pad = kernel // 2 if padding is None else padding
    return nnx.Conv(
        cin, cout, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
        use_bias=use_bias, dtype=p.dtype, param_dtype=p.param_dtype, precision=p.conv_precision,
        rngs=rngs,
    )


def linear(cin, cout, p: Numerics, rngs, *, use_bias=True):
    return nnx.Linear(cin, cout, use_bias=use_bias, dtype=p.dtype, param_dtype=p.param_dtype,
                      precision=p.precision, rngs=rngs)


def group_norm(c, groups, eps, p: Numerics, rngs):
    return nnx.GroupNorm(
        c, num_groups=groups, epsilon=eps, use_fast_variance=False,
        dtype=p.dtype, param_dtype=p.param_dtype, rngs=rngs,
    )


def layer_norm(c, eps, p: Numerics, rngs):
    return nnx.LayerNorm(
        c, epsilon=eps, use_fast_variance=False, dtype=p.dtype, param_dtype=p.param_dtype, rngs=rngs
    )


def timestep_embedding(t: jnp.ndarray, dim: int, *, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0) -> jnp.ndarray:
    """diffusers' `get_timestep_embedding` (sinusoidal), float32."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    emb = t.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(emb), jnp.cos(emb)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    def __init__(self, cin, cout, p: Numerics, rngs):
        self.linear_1 = linear(cin, cout, p, rngs)
        self.linear_2 = linear(cout, cout, p, rngs)

    def __call__(self, x):
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class ResnetBlock2D(nnx.Module):
    def __init__(self, cin, cout, temb_channels, *, groups, eps, p: Numerics, rngs):
        self.norm1 = group_norm(cin, groups, eps, p, rngs)
        self.conv1 = conv(cin, cout, 3, p, rngs)
        self.time_emb_proj = linear(temb_channels, cout, p, rngs) if temb_channels else None
        self.norm2 = group_norm(cout, groups, eps, p, rngs)
        self.conv2 = conv(cout, cout, 3, p, rngs)
        self.conv_shortcut = conv(cin, cout, 1, p, rngs) if cin != cout else None

    def __call__(self, x, temb=None):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nnx.Module):
    """Stride-2 3x3 conv. padding=0 is the VAE's variant: pad right and bottom by one first."""

    def __init__(self, c, *, padding, p: Numerics, rngs):
        self.padding = padding
        self.conv = conv(c, c, 3, p, rngs, stride=2, padding=padding)

    def __call__(self, x):
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


# "auto" streams the queries in chunks above this many logits per image (heads included).
_MATERIALISE_LIMIT = 2**22


def _cudnn_version() -> int | None:
    """The cuDNN version JAX was built against and found (e.g. 91000), or None if absent."""
    try:  # JAX's own probe; private, so any failure means "not detected"
        from jax._src.lib import cuda_versions
        return None if cuda_versions is None else int(cuda_versions.cudnn_get_version())
    except Exception:  # noqa: BLE001
        return None


def cudnn_attention_unsupported(dtype, head_dim: int, *, device=None,
                                cudnn_version: int | None = None) -> str | None:
    """Why cuDNN's fused attention cannot run here (None if it can): an NVIDIA GPU with cuDNN,
    bf16/fp16, head dim a multiple of 8 and at most 128, or 256 on Hopper and later (compute
    capability 9.0+). The same rules as JAX's own check, which raises only when the kernel runs.
    `device` and `cudnn_version` default to the first device and the detected cuDNN."""
    device = jax.devices()[0] if device is None else device
    if device.platform != "gpu" or not hasattr(device, "compute_capability"):
        return f"it needs an NVIDIA GPU, and this device is {device.platform}"
    version = _cudnn_version() if cudnn_version is None else cudnn_version
    if version is None:
        return "cuDNN is not detected"
    if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return f"it needs bfloat16 or float16 inputs, got {jnp.dtype(dtype).name}"
    capability = tuple(int(x) for x in str(device.compute_capability).split("."))
    limit = 256 if capability >= (9, 0) else 128
    if head_dim % 8 or head_dim > limit:
        why = "" if limit == 256 else " (256 from Hopper, compute capability 9.0, on)"
        return (f"head dim {head_dim} must be a multiple of 8 and at most {limit} on this GPU "
                f"(compute capability {device.compute_capability}){why}")
    return None


def resolve_attention(implementation: str, *, dtype, head_dim: int, queries: int, keys: int,
                      heads: int) -> str:
    """"auto" -> "cudnn" where cuDNN's fused kernel runs on this device
    (`cudnn_attention_unsupported`: e.g. not SD 1.4's head dim 160 before Hopper), else "chunked"
    where the logits would be large, else "xla". A forced "cudnn" that cannot run is an error
    that says why."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "cudnn":
        why = cudnn_attention_unsupported(dtype, head_dim)
        if why is not None:
            raise ValueError(f"attention='cudnn' cannot run: {why}; use 'auto', 'xla' or 'chunked'")
    if implementation != "auto":
        return implementation
    if cudnn_attention_unsupported(dtype, head_dim) is None:
        return "cudnn"
    return "chunked" if queries * keys * heads > _MATERIALISE_LIMIT else "xla"


def _xla_attention(q, k, v, *, causal: bool, precision, offset=0):
    """(B, T, H, D) x (B, S, H, D): softmax(q k^T / sqrt(D)) v with float32 logits and softmax."""
    scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1])).astype(q.dtype)
    logits = jnp.einsum("bthd,bshd->bhts", q * scale, k, precision=precision,
                        preferred_element_type=jnp.float32)
    if causal:
        rows = offset + jnp.arange(q.shape[1])[:, None]
        logits = jnp.where(rows >= jnp.arange(k.shape[1])[None, :], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshd->bthd", probs, v, precision=precision)


def _chunked_attention(q, k, v, *, chunk: int, causal: bool, precision):
    """Queries in blocks of `chunk` rows, one block at a time: each row keeps its full softmax,
    and only (chunk x keys) logits per head exist at once."""
    b, t, h, d = q.shape
    n = -(-t // chunk)
    qp = jnp.pad(q, ((0, 0), (0, n * chunk - t), (0, 0), (0, 0))).reshape(b, n, chunk, h, d)

    def block(args):
        qb, start = args
        return _xla_attention(qb, k, v, causal=causal, precision=precision, offset=start)

    out = jax.lax.map(block, (jnp.moveaxis(qp, 1, 0), jnp.arange(n) * chunk))
    return jnp.moveaxis(out, 0, 1).reshape(b, n * chunk, h, d)[:, :t]


def attention(q, k, v, heads: int, *, causal: bool = False, numerics: Numerics = Numerics()):
    """(B, T, H*D) projections -> (B, T, H*D), through the kernel `resolve_attention` picks:
    cuDNN's fused one, XLA's, or XLA's on query chunks (memory: never all T x S logits)."""
    b, t, c = q.shape
    s = k.shape[1]
    d = c // heads
    q, k, v = (x.reshape(x.shape[0], x.shape[1], heads, d) for x in (q, k, v))
    impl = resolve_attention(numerics.attention, dtype=q.dtype, head_dim=d, queries=t, keys=s,
                             heads=heads)
    if impl == "cudnn":
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
    elif impl == "chunked" and t > numerics.attention_chunk:
        out = _chunked_attention(q, k, v, chunk=numerics.attention_chunk, causal=causal,
                                 precision=numerics.precision)
    else:
        out = _xla_attention(q, k, v, causal=causal, precision=numerics.precision)
    return out.reshape(b, t, c)


class Attention(nnx.Module):
    """diffusers `Attention` (self- or cross-), without residual or norm."""

    def __init__(self, dim, context_dim, heads, *, bias, p: Numerics, rngs):
        self.heads = heads
        self.numerics = p
        self.to_q = linear(dim, dim, p, rngs, use_bias=bias)
        self.to_k = linear(context_dim, dim, p, rngs, use_bias=bias)
        self.to_v = linear(context_dim, dim, p, rngs, use_bias=bias)
        self.to_out = nnx.List([linear(dim, dim, p, rngs)])

    def __call__(self, x, context=None):
        context = x if context is None else context
        out = attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                        numerics=self.numerics)
        return self.to_out[0](out)


class GEGLU(nnx.Module):
    def __init__(self, dim, inner, p: Numerics, rngs):
        self.proj = linear(dim, inner * 2, p, rngs)

    def __call__(self, x):
        hidden, gate = jnp.split(self.proj(x), 2, axis=-1)
        return hidden * jax.nn.gelu(gate, approximate=False)


class FeedForward(nnx.Module):
    def __init__(self, dim, p: Numerics, rngs):
        inner = 4 * dim
        self.net = nnx.List([GEGLU(dim, inner, p, rngs), nnx.Dropout(0.0), linear(inner, dim, p, rngs)])

    def __call__(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nnx.Module):
    """Self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm with residual.

    `feature_only=True` builds just `norm1` and `attn1`: the call then returns attn1's output
    (DiffCut's feature layer) and nothing after it exists.
    """

    def __init__(self, dim, context_dim, heads, *, feature_only=False, p: Numerics, rngs):
        self.feature_only = feature_only
        self.norm1 = layer_norm(dim, 1e-5, p, rngs)
        self.attn1 = Attention(dim, dim, heads, bias=False, p=p, rngs=rngs)
        if not feature_only:
            self.norm2 = layer_norm(dim, 1e-5, p, rngs)
            self.attn2 = Attention(dim, context_dim, heads, bias=False, p=p, rngs=rngs)
            self.norm3 = layer_norm(dim, 1e-5, p, rngs)
            self.ff = FeedForward(dim, p, rngs)

    def __call__(self, x, context):
        a = self.attn1(self.norm1(x))
        if self.feature_only:
            return a
        x = x + a
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nnx.Module):
    """diffusers `Transformer2DModel` (continuous input); `feature_only` stops at the feature layer."""

    def __init__(self, c, context_dim, heads, layers, *, groups, linear_projection,
                 feature_only=False, p: Numerics, rngs):
        self.linear_projection = linear_projection
        self.feature_only = feature_only
        self.norm = group_norm(c, groups, 1e-6, p, rngs)
        self.proj_in = linear(c, c, p, rngs) if linear_projection else conv(c, c, 1, p, rngs)
        self.transformer_blocks = nnx.List([
            BasicTransformerBlock(
                c, context_dim, heads, feature_only=feature_only and i == layers - 1, p=p, rngs=rngs
            )
            for i in range(layers)
        ])
        if not feature_only:
            self.proj_out = linear(c, c, p, rngs) if linear_projection else conv(c, c, 1, p, rngs)

    def __call__(self, x, context):
        b, h, w, c = x.shape
        residual = x
        x = self.norm(x)
        if self.linear_projection:
            x = self.proj_in(x.reshape(b, h * w, c))
        else:
            x = self.proj_in(x).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.feature_only:
            return x.reshape(b, h, w, c)
        if self.linear_projection:
            x = self.proj_out(x).reshape(b, h, w, c)
        else:
            x = self.proj_out(x.reshape(b, h, w, c))
        return x + residual
