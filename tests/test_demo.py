"""The web demo: its model side (`DemoSession`, no Gradio needed), and the page in a real headless
Chromium (Debian's package, installed by .ci/run) driven by Playwright against
`diffcut-jax demo` on tiny random checkpoints: pick a sample, read the segment count, name the
segments with a vocabulary (legend), click for the coherence map, send bad uploads and go on.
The screenshot is stored in .artifacts/demo_browser.png (and in the test's tmp folder)."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcut_jax.demo import DemoError, DemoSession, legend_html, sample_images, synthetic_scene
from diffcut_jax.segmenter import DiffCut
from diffcut_jax.testing import tiny_spec, write_random_checkpoint, write_random_open_clip
from tests.helpers import REPO, SHARED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What a root, offline, headless Chromium needs (the machine refuses background connections).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    write_random_open_clip(root / "clip", "tiny", seed=1)
    return root


def _bad_uploads(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.png").write_text("this is not an image")
    Image.fromarray(synthetic_scene("beach")).save(folder / "whole.jpg", quality=90)
    raw = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "whole.jpg").unlink()
    Image.fromarray(np.zeros((700, 700, 3), np.uint8)).save(folder / "huge.png")
    return {"notes.png": "not an image", "truncated.jpg": "truncated or corrupt",
            "huge.png": "too large"}


@pytest.mark.slow
def test_demo_session(models, tmp_path, monkeypatch):
    seg = DiffCut.from_pretrained(models / "ckpt", image_size=64, tau=0.5)
    session = DemoSession(seg, clip_model=str(models / "clip"), max_pixels=400_000)
    samples = sample_images(tmp_path / "samples", SHARED / "images")
    assert list(samples)[:2] == ["meadow (drawn)", "beach (drawn)"] and "coco.jpg" in samples
    image = session.read(samples["meadow (drawn)"])
    notes = []
    out = session.segment(image, 0.5, False, progress=lambda f, desc: notes.append(desc))
    assert notes == ["compiling for 64 x 64 (once per size)"]
    n = int(out.labels.max()) + 1
    assert out.status.startswith(f"**{n} segments**") and out.overlay.shape == image.shape
    assert out.overlay.dtype == np.uint8 and out.legend == []
    notes.clear()
    session.segment(image, 0.3, False, progress=lambda f, desc: notes.append(desc))
    assert notes == ["segmenting"]  # tau is traced: nothing to compile

    legend = [{"class": "sky", "colour": "#102030", "share": 0.75}]  # named: the browser test's
    assert 'background:#102030' in legend_html(legend) and "sky</span> 75%" in legend_html(legend)
    with pytest.raises(DemoError, match="vocabulary: .*duplicate"):
        session.segment(image, 0.5, False, "sky;sky")

    state = {}
    heat, text = session.coherence(image, 10, 20, cache=state)
    assert heat.shape == image.shape and "patch 0, 0 of 2 x 2" in text
    # Further clicks on the same image reuse its features: the UNet does not run again.
    def no_second_run(*args, **kwargs):
        raise AssertionError("features computed twice")
    monkeypatch.setattr(type(seg.extractor), "__call__", no_second_run)
    again, text = session.coherence(image, 500, 300, cache=state)
    assert "patch 1, 1 of 2 x 2" in text and not np.array_equal(again, heat)
    monkeypatch.undo()
    with pytest.raises(DemoError, match="outside"):
        session.coherence(image, 1000, 0)
    for name, reason in _bad_uploads(tmp_path / "bad").items():
        with pytest.raises(DemoError, match=reason):
            session.read(tmp_path / "bad" / name)
    with pytest.raises(DemoError, match="upload one or pick a sample"):
        session.read(None)
    no_clip = DemoSession(seg)
    with pytest.raises(DemoError, match="--clip_model"):
        no_clip.segment(image, 0.5, False, "sky;grass")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(proc, url: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"demo did not answer at {url}:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
def test_demo_in_a_real_browser(models, tmp_path):
    pytest.importorskip("gradio")
    playwright = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", GRADIO_ANALYTICS_ENABLED="False")
    with open(log, "w") as fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "diffcut_jax.launch.demo", f"--model={models / 'ckpt'}",
             f"--clip_model={models / 'clip'}", "--image_size=128", "--tau=0.5",
             f"--samples={SHARED / 'images'}", f"--port={port}", "--max_pixels=400000"],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    bad = _bad_uploads(tmp_path / "bad")
    try:
        _wait_for_server(server, url, log)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(60_000)
            expect = playwright.expect
            expect.set_options(timeout=60_000)
            page.goto(url, wait_until="domcontentloaded")

            # A sample: the overlay appears and the page says how many segments. (`expect`
            # retries until it holds: the page updates asynchronously, with progress overlays.)
            page.locator("#sample input").click()
            page.get_by_role("option", name="meadow (drawn)").click()
            status = page.locator("#status")
            expect(status).to_contain_text(re.compile(r"\d+ segments · working size 96 x 128"),
                                           timeout=240_000)  # the first image of a size compiles
            count = int(re.search(r"(\d+) segments", status.inner_text()).group(1))
            assert count >= 2, status.inner_text()
            expect(page.locator("#overlay img")).to_be_visible()

            # A vocabulary: the legend lists the classes present, with their shares.
            page.locator("#vocabulary textarea").fill("sky;grass,lawn;house,building;tree;sun")
            page.locator("#segment").click()
            expect(status).to_contain_text(re.compile(rf"{count} segments .* \d+ class"))
            expect(page.locator("#legend .legend-row").first).to_be_visible()
            legend = page.locator("#legend .legend-name").all_inner_texts()
            assert legend and set(legend) <= {"sky", "grass", "house", "tree", "sun"}

            # A click on the overlay: the coherence map of that point.
            box = page.locator("#overlay img").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.2)
            expect(page.locator("#coherence img")).to_be_visible()
            expect(page.locator("#coherence-status")).to_contain_text("patch 0, 3 of 3 x 4")
            screenshot = tmp_path / "demo_browser.png"
            page.screenshot(path=str(screenshot), full_page=True)
            (REPO / ".artifacts").mkdir(exist_ok=True)
            shutil.copy(screenshot, REPO / ".artifacts" / "demo_browser.png")

            # Bad uploads: a clear message each, and the server goes on.
            upload = page.locator("#upload input[type=file]")
            for name, reason in bad.items():
                upload.set_input_files(str(tmp_path / "bad" / name))
                expect(page.get_by_text(reason).first).to_be_visible()
                page.locator("#upload button[aria-label='Clear']").first.click()
            before = page.locator("#overlay img").get_attribute("src")
            upload.set_input_files(str(SHARED / "images" / "coco.jpg"))
            expect(page.locator("#overlay img")).not_to_have_attribute("src", before)  # still serving
            browser.close()
        assert server.poll() is None, log.read_text()[-3000:]
        text = log.read_text()  # Gradio prints the messages it shows with their traceback:
        assert text.count("Traceback") == text.count("gradio.exceptions.Error: ") == len(bad), text[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
