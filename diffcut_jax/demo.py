"""The local web demo (`diffcut-jax demo`, Gradio; `pip install -e ".[demo]"`).

    session = DemoSession(DiffCut.from_pretrained(model), clip_model=...)   # gradio-free
    app = build_app(session, samples)                                        # gr.Blocks
    app.queue().launch()

`DemoSession` is what the page calls: read an upload (clear errors for anything that is not a
usable image), segment it with the chosen tau and refinement, name the segments with an optional
vocabulary, and the coherence map of a clicked point. The model loads once; each working size
(and refinement setting) compiles once, and the page says so while it compiles. tau is traced,
so moving the slider never recompiles. The CLIP model loads at the first vocabulary; each
vocabulary's text classifier is kept (the last few).
"""
from __future__ import annotations

import collections
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffcut_jax.io import imageio

DEMO_MAX_PIXELS = 40_000_000  # larger uploads are refused with a message (the server keeps going)


class DemoError(ValueError):
    """A problem with the user's input, shown on the page."""


@dataclass
class Segmented:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    labels: np.ndarray  # (H, W) int32
    overlay: np.ndarray  # (H, W, 3) uint8
    status: str
    legend: list[dict] = field(default_factory=list)  # named: {class, colour, share}
    size: tuple[int, int] = (0, 0)  # working size


def synthetic_scene(kind: str, height: int = 384, width: int = 512) -> np.ndarray:
    """A drawn sample scene (uint8 RGB), so that the demo has samples without shipping photos."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(zlib.crc32(kind.encode()))  # the same texture in every process
    img = np.zeros((height, width, 3), np.float32)
    horizon = 0.55 * height
    sky = np.stack([0.35 + 0.3 * y / horizon, 0.6 + 0.2 * y / horizon, np.full_like(y, 0.95)], -1)
    if kind == "beach":
        ground = np.where((y > horizon + 0.25 * (height - horizon))[..., None],
                          np.array([0.93, 0.84, 0.6]), np.array([0.1, 0.35, 0.65]))
    else:
        ground = np.broadcast_to(np.array([0.25, 0.6, 0.2]), img.shape)
    img = np.where((y < horizon)[..., None], sky, ground)
    sun = (y - 0.2 * height) ** 2 + (x - 0.78 * width) ** 2 < (0.09 * height) ** 2
    img[sun] = [1.0, 0.85, 0.2]
    if kind == "meadow":  # a house with a roof, and a tree
        house = (x > 0.15 * width) & (x < 0.4 * width) & (y > 0.45 * height) & (y < 0.75 * height)
        img[house] = [0.75, 0.3, 0.25]
        roof = (y < 0.45 * height) & (y > 0.3 * height) & (np.abs(x - 0.275 * width) < (y - 0.3 * height) * 0.9)
        img[roof] = [0.35, 0.2, 0.15]
        crown = (y - 0.45 * height) ** 2 + (x - 0.62 * width) ** 2 < (0.12 * height) ** 2
        trunk = (np.abs(x - 0.62 * width) < 0.015 * width) & (y > 0.5 * height) & (y < 0.72 * height)
        img[trunk] = [0.4, 0.25, 0.1]
        img[crown] = [0.1, 0.4, 0.12]
    img = img + rng.normal(0, 0.02, img.shape)  # a little texture
    return (255 * np.clip(img, 0, 1) + 0.5).astype(np.uint8)


SYNTHETIC = ("meadow", "beach")


def sample_images(cache: Path, folder: str | Path | None = None) -> dict[str, Path]:
    """name -> file: the drawn scenes (written once to `cache`), then the images of `folder`."""
    from PIL import Image

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind in SYNTHETIC:
        path = cache / f"{kind}.png"
        if not path.exists():
            Image.fromarray(synthetic_scene(kind)).save(path)
        out[f"{kind} (drawn)"] = path
    if folder is not None:
        from diffcut_jax.io import paths
        from diffcut_jax.io.cache import local_copy

        # A bucket's images are copied once into the user's cache: the browser is served files.
        for p in sorted(paths.as_path(folder).iterdir(), key=lambda q: q.name):
            if p.suffix.lower() in imageio.IMAGE_SUFFIXES:
                out[p.name] = local_copy(p)
    return out


def legend_html(legend: list[dict]) -> str:
    if not legend:
        return ""
    rows = "".join(
        f'<div class="legend-row"><span style="display:inline-block;width:14px;height:14px;'
        f'background:{e["colour"]};margin-right:6px;vertical-align:middle"></span>'
        f'<span class="legend-name">{e["class"]}</span> {100 * e["share"]:.0f}%</div>'
        for e in legend)
    return f'<div id="legend-rows">{rows}</div>'


class DemoSession:
    """The demo's model side, independent of Gradio."""

    def __init__(self, segmenter, *, clip_model: str | None = None, clip_image_size: int = 0,
                 max_pixels: int = DEMO_MAX_PIXELS, keep_vocabularies: int = 4):
        self.segmenter = segmenter
        self.clip_model, self.clip_image_size = clip_model, clip_image_size
        self.max_pixels = max_pixels
        self._compiled: set = set()
        self._clip = None
        self._labellers: collections.OrderedDict = collections.OrderedDict()
        self._keep = keep_vocabularies

    def read(self, path) -> np.ndarray:
        if not path:
            raise DemoError("no image: upload one or pick a sample")
        name = Path(path).name
        try:
            return imageio.read_rgb(path, max_pixels=self.max_pixels)
        except imageio.ImageReadError as e:
            raise DemoError(f"{name}: {e}") from None

    def segment(self, image: np.ndarray, tau: float, refinement: bool, vocabulary: str = "",
                progress=None) -> Segmented:
        """Segments (and, with a vocabulary, classes) of `image` (H, W, 3) in [0, 1]."""
        seg = self.segmenter.with_options(tau=float(tau), refinement=bool(refinement))
        h, w = image.shape[:2]
        size = seg.working_size(h, w)
        key = (tuple(size), bool(refinement))
        if progress is not None:
            progress(0.1, desc=(f"compiling for {size[0]} x {size[1]} (once per size)"
                                if key not in self._compiled else "segmenting"))
        t = time.perf_counter()
        labels = np.asarray(seg(image))
        self._compiled.add(key)
        seconds = time.perf_counter() - t
        n = int(labels.max()) + 1
        status = f"**{n} segments** · working size {size[0]} x {size[1]} · {seconds:.2f} s"
        if not vocabulary.strip():
            return Segmented(image, labels, imageio.overlay(image, labels), status, size=size)
        if progress is not None:
            progress(0.6, desc="naming the segments with CLIP")
        named = self.labeller(vocabulary, seg)(image, labels)
        class_map = np.asarray(named.class_map[0])
        names = list(named.names)
        colours = imageio.palette(len(names))
        shares: dict[int, int] = {}
        for s in named.segments(0):
            shares[s["class_id"]] = shares.get(s["class_id"], 0) + s["pixels"]
        legend = [{"class": names[c], "colour": "#%02x%02x%02x" % tuple(colours[c]),
                   "share": p / labels.size} for c, p in sorted(shares.items(), key=lambda kv: -kv[1])]
        overlay = imageio.class_overlay(image, class_map, len(names))
        status += f" · {len(legend)} class{'es' if len(legend) != 1 else ''}"
        return Segmented(image, labels, overlay, status, legend, size)

    def labeller(self, vocabulary: str, seg):
        from diffcut_jax.naming.clip_model import load_clip
        from diffcut_jax.naming.labelling import Labeller

        if self.clip_model is None:
            raise DemoError("no CLIP model: start the demo with --clip_model to name segments")
        key = vocabulary.strip()
        if key not in self._labellers:
            if self._clip is None:
                self._clip = load_clip(self.clip_model)
            try:
                self._labellers[key] = Labeller(
                    self._clip, key, image_size=self.clip_image_size or seg.options.image_size,
                    square=seg.options.square)
            except ValueError as e:  # the vocabulary's own problem, named
                raise DemoError(f"vocabulary: {e}") from None
            while len(self._labellers) > self._keep:
                self._labellers.popitem(last=False)
        self._labellers.move_to_end(key)
        return self._labellers[key]

    def coherence(self, image: np.ndarray, x: int, y: int, cache: dict | None = None
                  ) -> tuple[np.ndarray, str]:
        """The coherence map of the patch under pixel (x, y), over the photo. `cache` (the page's
        state for this image) keeps its features: further clicks do not run the UNet again."""
        from diffcut_jax.coherence import coherence_map, coherence_overlay

        h, w = image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise DemoError(f"point ({x}, {y}) is outside the {w} x {h} image")
        cache = {} if cache is None else cache
        if "features" not in cache:
            size = self.segmenter.working_size(h, w)
            cache["features"] = self.segmenter.extractor(image[None], size=size)[0]
        feats = cache["features"]
        fh, fw = feats.shape[:2]
        patch = (min(int(y * fh / h), fh - 1), min(int(x * fw / w), fw - 1))
        sim = np.asarray(coherence_map(feats, patch))
        text = (f"patch {patch[0]}, {patch[1]} of {fh} x {fw} · similarity "
                f"{sim.min():.2f} to {sim.max():.2f}")
        return coherence_overlay(image, sim, patch), text


def build_app(session: DemoSession, samples: dict[str, Path], *, title: str = "DiffCut (JAX)"):
    """The page: upload or sample, tau and refinement, optional vocabulary; overlay, segment count,
    legend; click the overlay for the coherence map."""
    try:
        import gradio as gr
    except ImportError as e:
        raise ImportError('the demo needs Gradio: pip install -e ".[demo]"') from e

    def load(path):
        try:
            return session.read(path)
        except DemoError as e:
            raise gr.Error(str(e)) from None

    def run(upload, sample, tau, refinement, vocabulary, progress=gr.Progress()):
        path = upload or (samples.get(sample) if sample else None)
        image = load(path)
        try:
            out = session.segment(image, tau, refinement, vocabulary or "", progress=progress)
        except DemoError as e:
            raise gr.Error(str(e)) from None
        return out.overlay, out.status, legend_html(out.legend), {"image": out.image}, None, ""

    def pick_sample(sample, tau, refinement, vocabulary, progress=gr.Progress()):
        return run(None, sample, tau, refinement, vocabulary, progress)

    def clicked(state, evt: gr.SelectData):
        if not state:
            raise gr.Error("segment an image first")
        x, y = (int(v) for v in evt.index)
        try:
            heat, text = session.coherence(state["image"], x, y, cache=state)
        except DemoError as e:
            raise gr.Error(str(e)) from None
        return heat, f"Point ({x}, {y}): {text}", state  # with the features, for the next click

    # Gradio passes the click by the parameter's type; this module's annotations are strings
    # (`from __future__ import annotations`) and `gr` is local, so give it the class itself.
    clicked.__annotations__["evt"] = gr.SelectData

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\nZero-shot segmentation: diffusion features cut by a recursive "
                    "normalized cut. Upload an image or pick a sample; click the result for the "
                    "semantic coherence of a point.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload an image", type="filepath", elem_id="upload")
                sample = gr.Dropdown(choices=list(samples), value=None, label="... or a sample",
                                     elem_id="sample")
                tau = gr.Slider(0.05, 0.99, value=session.segmenter.options.tau, step=0.01,
                                label="tau (lower: fewer, larger segments)", elem_id="tau")
                refinement = gr.Checkbox(value=session.segmenter.options.refinement,
                                         label="PAMR refinement", elem_id="refinement")
                vocabulary = gr.Textbox(label="Vocabulary (optional): classes by ';', synonyms "
                                        "by ','", placeholder="cat,kitty;dog;grass;sky",
                                        elem_id="vocabulary")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                overlay = gr.Image(label="Segments (click a point)", type="numpy",
                                   interactive=False, elem_id="overlay")
                status = gr.Markdown(elem_id="status")
                legend = gr.HTML(elem_id="legend")
                heat = gr.Image(label="Semantic coherence of the clicked point", type="numpy",
                                interactive=False, elem_id="coherence")
                heat_status = gr.Markdown(elem_id="coherence-status")
        state = gr.State()
        inputs = [upload, sample, tau, refinement, vocabulary]
        outputs = [overlay, status, legend, state, heat, heat_status]
        button.click(run, inputs, outputs)
        upload.upload(run, inputs, outputs)
        sample.input(pick_sample, [sample, tau, refinement, vocabulary], outputs)
        overlay.select(clicked, [state], [heat, heat_status, state])
    return app


def serve(app, *, host: str = "127.0.0.1", port: int = 7860, max_file_size: str = "50mb") -> None:
    """Serve the page (blocks until stopped). The theme uses local fonts only: web fonts would be
    fetched from the internet, which a machine offline waits for."""
    import gradio as gr

    theme = gr.themes.Base(font=["sans-serif"], font_mono=["monospace"])
    app.queue().launch(server_name=host, server_port=port, show_error=True, theme=theme,
                       max_file_size=max_file_size, share=False, quiet=True)
