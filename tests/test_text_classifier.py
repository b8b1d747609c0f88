"""The text classifier: prompts encoded to their token length (length buckets) equal the full
context, and classifiers kept on disk are reused, missed when what determines them changes, and
never trusted when damaged (docs/openvocab.md, "The text classifier")."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from diffcut_jax.naming.clip_model import _TEXT_BATCH, VILD_TEMPLATES, ClipModel, load_clip
from diffcut_jax.naming.labelling import Labeller
from diffcut_jax.naming.vocabulary import PRESETS, parse_vocabulary
from tests.helpers import FIXTURES, CompileCounter

TINY = FIXTURES / "openclip" / "tiny_convnext_clip"


@pytest.fixture(scope="module")
def clip():
    return load_clip(TINY)


def _full_context(clip, texts):
    """The classifier's encoding before buckets: every prompt over the whole context."""
    ids = clip.tokenize(texts)
    out = []
    for start in range(0, len(ids), _TEXT_BATCH):
        chunk = np.zeros((_TEXT_BATCH, ids.shape[1]), np.int32)
        chunk[: len(ids[start:start + _TEXT_BATCH])] = ids[start:start + _TEXT_BATCH]
        out.append(np.asarray(clip.encode_text(chunk))[: len(ids[start:start + _TEXT_BATCH])])
    return np.concatenate(out)


def test_bucketed_prompts_equal_the_full_context(clip):
    buckets = clip.text_buckets()
    assert buckets == (16, 32, 77)
    long = "a photo of a " + "very " * 30 + "{}."  # past 32 tokens: the last bucket is used too
    with CompileCounter() as counter:
        for name in PRESETS:
            flat = [s for syn in parse_vocabulary(name).classes for s in syn]
            texts = [t.format(s) for s in flat for t in (*VILD_TEMPLATES, long)]
            lengths = np.argmax(clip.tokenize(texts), axis=1) + 1
            assert lengths.max() > 32 and np.percentile(lengths, 90) <= 16
            got = clip._encode_texts(texts)
            want = _full_context(clip, texts)
            rel = np.abs(got - want).max() / np.abs(want).max()
            assert rel < 1e-6, (name, rel)
    # One text program per bucket (the reference's 77-token program is the last bucket's).
    assert counter.count <= len(buckets)


def test_classes_chosen_on_the_open_clip_fixtures_are_unchanged(clip):
    z = np.load(FIXTURES / "openclip" / "tiny_convnext_clip.npz")
    images, masks = np.transpose(z["images"], (0, 2, 3, 1)), z["masks"]
    tc = clip.text_classifier(json.loads(str(z["classes"])))
    emb = np.asarray(clip.segment_embeddings(clip.dense_features(images), masks, num_segments=5))
    logits = clip.class_logits(emb.reshape(10, -1), tc)
    np.testing.assert_array_equal(np.argmax(logits, -1), z["predicted_class"])


class _Encodes:
    """Counts the text tower's runs; `fail` makes one an error."""

    def __init__(self, monkeypatch):
        self.calls, self.fail = 0, False
        real = ClipModel.encode_text

        def encode(model, ids):
            if self.fail:
                raise AssertionError("the text tower ran although the cache holds the classifier")
            self.calls += 1
            return real(model, ids)

        monkeypatch.setattr(ClipModel, "encode_text", encode)


def test_the_cache_serves_a_second_labeller_and_misses_on_every_change(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "clip"
    shutil.copytree(TINY, weights)
    cache = tmp_path / "cache"
    encodes = _Encodes(monkeypatch)
    vocab = "cat,kitty;dog;sky"

    first = Labeller(load_clip(weights), vocab, cache=cache)
    assert encodes.calls > 0 and len(list(cache.glob("*.npz"))) == 1
    encodes.fail = True
    second = Labeller.from_pretrained(weights, vocab, cache=cache, progress=True)
    np.testing.assert_array_equal(second.classifier.embeddings, first.classifier.embeddings)
    assert second.classifier.names == first.classifier.names
    assert "from the cache" in capsys.readouterr().err
    encodes.fail = False

    def misses(make) -> bool:
        before = encodes.calls
        make()
        return encodes.calls > before

    clip = load_clip(weights)
    assert misses(lambda: Labeller(clip, "cat,kitty;dog;grass", cache=cache))  # vocabulary
    assert misses(lambda: Labeller(clip, "cat,kitten;dog;sky", cache=cache))  # a synonym
    assert misses(lambda: clip.text_classifier(parse_vocabulary(vocab).entries,
                                               templates=VILD_TEMPLATES[:3], cache_dir=cache))
    assert misses(lambda: Labeller(load_clip(weights, dtype="bfloat16"), vocab, cache=cache))
    assert not misses(lambda: Labeller(clip, vocab, cache=cache))
    # Other weights in the same place: the file's identity (size, modification time) changed.
    f = weights / "open_clip_model.safetensors"
    stat = f.stat()
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert misses(lambda: Labeller(load_clip(weights), vocab, cache=cache))
    entries = sorted(cache.iterdir())
    assert misses(lambda: Labeller(clip, vocab, cache=False))  # bypassed: computed, not kept
    assert sorted(cache.iterdir()) == entries


def test_a_damaged_or_foreign_entry_is_ignored_and_rewritten(tmp_path, monkeypatch, clip):
    cache = tmp_path / "cache"
    want = Labeller(clip, "cat;dog", cache=cache).classifier.embeddings
    (entry,) = cache.glob("*.npz")
    good = entry.read_bytes()
    encodes = _Encodes(monkeypatch)
    for damaged in (good[: len(good) // 2], b"", b"not a zip file at all"):
        entry.write_bytes(damaged)
        got = Labeller(clip, "cat;dog", cache=cache).classifier.embeddings
        np.testing.assert_array_equal(got, want)
        assert encodes.calls > 0, "a damaged entry was trusted"
        assert entry.read_bytes() == good, "the damaged entry was not rewritten"
        encodes.calls = 0
    # Another classifier's file under this key's name (a foreign entry) is not trusted either.
    other = Labeller(clip, "sky;grass", cache=cache)
    other_entry = next(p for p in cache.glob("*.npz") if p != entry)
    entry.write_bytes(other_entry.read_bytes())
    np.testing.assert_array_equal(Labeller(clip, "cat;dog", cache=cache).classifier.embeddings, want)
    assert encodes.calls > 0 and other.classifier.names == ("sky", "grass")


def test_weights_made_in_memory_are_not_cached(tmp_path, clip):
    anonymous = ClipModel(clip.graph, clip.params, clip.config)
    assert anonymous.classifier_key(("cat",), VILD_TEMPLATES) is None
    Labeller(anonymous, "cat;dog", cache=tmp_path)
    assert not list(tmp_path.iterdir())
