"""Reading user images robustly and writing label maps, overlays and heat maps atomically."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from diffcut_jax.io.paths import atomic_write, is_url

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit


class ImageReadError(ValueError):
    """An input that is not a usable image; the message is the one-line reason."""


def read_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to float32 RGB (H, W, 3) in [0, 1].

    Grayscale, RGBA/LA (alpha dropped), palette, CMYK and 16-bit images become RGB; EXIF rotation
    is applied. Raises ImageReadError with a one-line reason for anything unusable. `path` may be
    a URL (`gs://`, `s3://`): the object is fetched in one request (the storage client retries
    transient failures), then decoded.
    """
    if is_url(path):
        data = _fetch(path)
        if not data:
            raise ImageReadError("empty file (0 bytes)")  # the reason a local file gives
        return decode_rgb(data, max_pixels=max_pixels)
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror})") from e
    if size == 0:
        raise ImageReadError("empty file (0 bytes)")
    return _decode(path, max_pixels)


def _fetch(url) -> bytes:
    from diffcut_jax.io.paths import as_path, redact

    try:
        p = as_path(url)
        return p.fs.cat_file(p.path)
    except FileNotFoundError:
        raise ImageReadError("cannot read file (no such object)") from None
    except PermissionError:
        raise ImageReadError("cannot read file (permission denied)") from None
    except OSError as e:
        raise ImageReadError(f"cannot read {redact(url)} ({type(e).__name__})") from None


def decode_rgb(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`read_rgb` of encoded bytes (a dataset record): the same decoding, the same reasons."""
    import io

    if not data:
        raise ImageReadError("empty image (0 bytes)")
    return _decode(io.BytesIO(data), max_pixels)


def _decode(source, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageReadError(f"too large: {w} x {h} pixels (limit {max_pixels})")
                if w == 0 or h == 0:
                    raise ImageReadError(f"zero-size image ({w} x {h})")
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb_array(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"too large ({e})") from None
    except PermissionError as e:
        raise ImageReadError(f"cannot read file ({e.strerror})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"truncated or corrupt image ({e})") from None


def _to_rgb_array(im) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode == "F":  # float images have no fixed range: scale by their maximum
            scale = max(float(arr.max()), 1.0)
        else:  # 16-bit data (32-bit "I" holding 8-bit values is scaled as 8-bit)
            scale = 255.0 if mode == "I" and arr.max() <= 255 else 65535.0
        gray = np.clip(arr / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode != "RGB":
        im = im.convert("RGB")  # L, LA, RGBA, P, PA, CMYK, YCbCr, 1, ...
    return np.asarray(im, dtype=np.float32) / 255.0


def write_labels_png(path: Path, labels: np.ndarray) -> None:
    """Label map as PNG: 8-bit up to 255, 16-bit above."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.min() < 0 or labels.max() > 65535:
        raise ValueError(f"labels out of PNG range: [{labels.min()}, {labels.max()}]")
    img = Image.fromarray(labels.astype(np.uint8)) if labels.max() <= 255 else \
        Image.fromarray(labels.astype(np.uint16))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def read_labels_png(path: Path) -> np.ndarray:
    from PIL import Image

    from diffcut_jax.io.paths import as_path

    with as_path(path).open("rb") as fh, Image.open(fh) as im:
        return np.asarray(im).astype(np.int32)


def palette(n: int) -> np.ndarray:
    """n distinct colours (uint8 (n, 3)), golden-ratio hues."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    sat = 0.65 + 0.35 * ((np.arange(n) // 7) % 2)
    return (255 * _hsv_to_rgb(hues, sat, np.full(n, 0.95))).astype(np.uint8)


def _hsv_to_rgb(h, s, v):
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ])
    return table[i, np.arange(len(h))]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: the photo blended with one colour per segment."""
    colours = palette(int(labels.max()) + 1).astype(np.float32) / 255.0
    out = (1 - alpha) * image + alpha * colours[labels]
    return (255 * np.clip(out, 0, 1) + 0.5).astype(np.uint8)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map [0, 1] to a blue-cyan-yellow-red ramp (float RGB)."""
    stops = np.array([[0.05, 0.05, 0.5], [0.0, 0.6, 0.9], [0.95, 0.9, 0.1], [0.85, 0.1, 0.05]])
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    i = np.minimum(np.floor(x).astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return (1 - f) * stops[i] + f * stops[i + 1]


def write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(np.asarray(rgb, np.uint8), mode="RGB")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def class_overlay(image: np.ndarray, class_map: np.ndarray, num_classes: int,
                  alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: the photo ([0, 1]) blended with a fixed colour per class id (`palette`), so
    that colours agree across images of one vocabulary; -1 (no class) shows the photo."""
    class_map = np.asarray(class_map)
    image = np.asarray(image, np.float32)
    colours = palette(max(num_classes, 1))
    mixed = (1 - alpha) * image + alpha * colours[np.clip(class_map, 0, None)] / 255.0
    mixed = np.where(class_map[..., None] >= 0, mixed, image)
    return (255 * np.clip(mixed, 0, 1) + 0.5).astype(np.uint8)


def overlay_with_legend(image: np.ndarray, class_map: np.ndarray, names,
                        alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: the photo ([0, 1]) blended with one colour per class, and a legend panel on the right
    (a swatch, the class name and its share of the image, for every class present, largest
    first). Colours are fixed per class id, so they agree across images of one vocabulary."""
    from PIL import Image, ImageDraw, ImageFont

    class_map = np.asarray(class_map)
    colours = palette(max(len(names), 1))
    blended = class_overlay(image, class_map, len(names), alpha)
    counts = np.bincount(class_map[class_map >= 0].ravel(), minlength=len(names))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    font = ImageFont.load_default()
    line = 16
    height, width = blended.shape[:2]
    text_w = max([int(font.getlength(f"{names[c]} 100.0%")) for c in present] + [60])
    panel_w = 12 + line + 8 + text_w + 12
    canvas = Image.new("RGB", (width + panel_w, max(height, 12 + line * len(present))), "white")
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    total = max(int(counts.sum()), 1)
    for i, c in enumerate(present):
        y = 6 + i * line
        draw.rectangle([width + 12, y, width + 12 + line - 4, y + line - 4],
                       fill=tuple(int(v) for v in colours[c]), outline="black")
        draw.text((width + 12 + line + 4, y), f"{names[c]} {100 * counts[c] / total:.1f}%",
                  fill="black", font=font)
    return np.asarray(canvas)
