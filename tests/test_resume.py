"""Progress checkpoints (evaluation/resume.py): the file format, corruption and fallback, and the
refusal of another run's workdir. The kill-and-resume runs of `eval` are in test_preemption.py."""
from __future__ import annotations

import io

import pytest

from diffcut_jax.evaluation import resume

FP = {"config": {"segmentation": {"tau": 0.5, "alpha": 10.0}, "benchmark": "voc20"},
      "dataset": {"name": "voc20/1.0.0", "split": "validation", "examples": 7}, "processes": 1}


def _state(images):
    return {"tp": [1.0, 2.0], "fp": [0.0, 1.0], "fn": [3.0, 0.5], "valid_pixels": 10 * images,
            "images": images, "per_image": [{"image_id": str(i)} for i in range(images)]}


def test_round_trip_and_keep(tmp_path):
    store = resume.ProgressStore(tmp_path / "p", FP, keep=2)
    assert store.latest() is None and store.agreed_resume_point() is None
    for k in (2, 4, 6):
        store.save(k, _state(k))
    assert [k for k, _ in store.paths()] == [6, 4]  # the oldest is removed
    payload = store.agreed_resume_point()
    assert payload["batches"] == 6 and payload["processes"] == [_state(6)]
    assert payload["fingerprint"] == resume.normalised(FP)
    assert not list((tmp_path / "p").glob("*.partial"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_damaged_newest_falls_back_to_previous(tmp_path, damage):
    log = io.StringIO()
    store = resume.ProgressStore(tmp_path, FP, keep=3, log=log)
    store.save(2, _state(2))
    newest = store.save(4, _state(4))
    data = newest.read_bytes()
    if damage == "truncate":  # a partial copy
        data = data[: len(data) - 17]
    elif damage == "flip":  # a corrupted block: same length, other bytes
        i = len(data) - 5
        data = data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1:]
    elif damage == "header":
        data = b"{not json" + data[data.index(b"\n"):]
    else:
        data = b""
    newest.write_bytes(data)
    payload = store.latest()
    assert payload["batches"] == 2
    assert "skipping checkpoint" in log.getvalue() and newest.name in log.getvalue()
    if damage in ("truncate", "flip"):
        assert ("truncated" in log.getvalue()) == (damage == "truncate")
        assert ("checksum" in log.getvalue()) == (damage == "flip")


def test_all_damaged_starts_over(tmp_path):
    store = resume.ProgressStore(tmp_path, FP, log=io.StringIO())
    store.save(2, _state(2)).write_bytes(b"garbage")
    assert store.latest() is None


def test_another_run_is_refused_with_the_differences_named(tmp_path):
    resume.ProgressStore(tmp_path, FP).save(2, _state(2))
    other = {**FP, "config": {"segmentation": {"tau": 0.4, "alpha": 10.0}, "benchmark": "voc20"},
             "dataset": {**FP["dataset"], "examples": 9}}
    with pytest.raises(resume.ResumeMismatchError) as err:
        resume.ProgressStore(tmp_path, other).agreed_resume_point()
    msg = str(err.value)
    assert "config.segmentation.tau: checkpoint 0.5, now 0.4" in msg
    assert "dataset.examples: checkpoint 7, now 9" in msg and "2 difference(s)" in msg
    assert "alpha" not in msg and str(tmp_path) in msg


def test_decode_names_the_problem():
    data = resume.encode({"a": 1})
    assert resume.decode(data) == {"a": 1}
    with pytest.raises(ValueError, match="format 0"):
        resume.decode(data.replace(b'"format": 1', b'"format": 0', 1))
    with pytest.raises(ValueError, match="no header line"):
        resume.decode(b"abc")


def test_sigterm_is_agreed_every_few_batches_not_every_batch(monkeypatch):
    """With several processes the SIGTERM flag is agreed (a collective that would drain the
    evaluation's pipeline) only at checkpoints and every `agree_every` batches; one process
    stops at the next batch with no collective at all."""
    import jax

    class Store:
        def __init__(self):
            self.saved = []

        def save(self, done, state):
            self.saved.append(done)

    class Evaluator:
        def local_state(self, result):
            return {}

    agreed = []
    monkeypatch.setattr(resume, "any_process", lambda flag: agreed.append(flag) or flag)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    store = Store()
    policy = resume.CheckpointPolicy(store, Evaluator(), every=6, agree_every=4)
    for done in range(1, 10):
        policy(done, None)
    assert len(agreed) == 3 and store.saved == [6]  # at 4, 6 (checkpoint), 8: and nothing else
    policy.terminated = True
    policy(10, None)  # not a boundary for agreement: runs on
    with pytest.raises(resume.Preempted):
        policy(12, None)
    assert store.saved == [6, 12]

    monkeypatch.setattr(jax, "process_count", lambda: 1)
    agreed.clear()
    one = resume.CheckpointPolicy(Store(), Evaluator(), every=0)
    one(1, None)
    one.terminated = True
    with pytest.raises(resume.Preempted):
        one(2, None)
    assert agreed == []
