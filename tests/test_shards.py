"""`segment`'s dataset plumbing without a model: input lists read by index, COCO shards
(resume, merge in input order, each input once), the run fingerprint, TFDS specs."""
from __future__ import annotations

import json

import pytest

from diffcut_jax.io import input_list, shards


def test_inputs_listed_lazily_in_sorted_order_and_read_by_index(tmp_path):
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    (folder / "a").mkdir()
    for rel in ("z.jpg", "b/y.png", "a/x.JPG", "a/notes.txt", "m.webp"):
        (folder / rel).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n\n{tmp_path}/missing.jpg\n{folder}/z.jpg\n")
    problems: list[str] = []
    paths = input_list.write_path_list(
        input_list.iter_paths([str(folder), str(tmp_path / "nothing*.png"), str(tmp_path / "no")],
                              [str(listing), str(tmp_path / "nolist.txt")], problems),
        tmp_path / "paths.txt")
    # Folders: each directory's files sorted, then its subfolders; a repeated path listed once.
    expected = [f"{folder}/m.webp", f"{folder}/z.jpg", f"{folder}/a/x.JPG", f"{folder}/b/y.png",
                f"{tmp_path}/missing.jpg"]
    assert len(paths) == 5 and [paths[i] for i in range(5)] == expected == list(paths)
    with pytest.raises(IndexError):
        paths[5]
    assert [p.split(":")[0] for p in problems] == [
        str(tmp_path / "nothing*.png"), str(tmp_path / "no"), f"--inputs_from={tmp_path / 'nolist.txt'}"]
    again = input_list.write_path_list(iter(expected), tmp_path / "again.txt")
    assert again.digest == paths.digest
    assert input_list.write_path_list(iter(expected[:4]), tmp_path / "less.txt").digest != paths.digest


def _run_doc(processes=2, tau=0.5):
    return {"fingerprint": {"labels": {"tau": tau, "pamr_dilations": (1, 2)},
                            "inputs": {"paths": 10, "sha1": "x"},
                            "layout": {"processes": processes, "shard_size": 3}},
            "categories": None, "info": {"model": "m"}}


def _entry(process, position, failed=False):
    index = process + 2 * position
    e = {"position": position, "index": index, "input": f"im{index}.png"}
    if failed:
        return {**e, "error": "not an image", "kind": "unreadable"}
    return {**e, "image": {"file_name": f"im{index}.png", "height": 4, "width": 5},
            "annotations": [{"segment_id": 0, "area": 20}], "record": {"segments": 1}}


def test_shards_resume_and_merge_in_input_order(tmp_path):
    shards.check_run(tmp_path, _run_doc())
    shards.check_run(tmp_path, _run_doc())  # the same run: accepted
    with pytest.raises(shards.RunMismatchError, match=r"labels\.tau: earlier run 0\.5, this run 0\.6; "
                                                      r"layout\.processes: earlier run 2, this run 1"):
        shards.check_run(tmp_path, _run_doc(processes=1, tau=0.6))
    # 10 inputs, 2 processes: positions 0-4 each, shards of 3 (the last of each holds 2).
    for p in range(2):
        w = shards.ShardWriter(tmp_path, p, 3)
        w.open(0)
        for pos in (2, 0, 1):  # completion order differs from input order
            w.add(_entry(p, pos, failed=(p, pos) == (1, 1)))
        w.close()
        w.open(1)
        w.add(_entry(p, 3))
        w.close(complete=False)  # SIGTERM part-way
        assert w.resume() == (3, {3}, {1: [_entry(p, 3)]})
    with pytest.raises(ValueError, match=r"process\(es\) \[0, 1\] of 2 have not finished"):
        shards.merge(tmp_path)
    for p in range(2):
        w = shards.ShardWriter(tmp_path, p, 3)
        _, _, reopened = w.resume()
        w.open(1, reopened[1])
        w.add(_entry(p, 4))
        w.close()
        shards.mark_done(tmp_path, p, 5, 2)
    path, counts = shards.merge(tmp_path)
    doc = json.loads(path.read_text())
    assert counts == {"images": 9, "annotations": 9, "unreadable": 1, "failed": 0}
    assert [im["file_name"] for im in doc["images"]] == [f"im{i}.png" for i in range(10) if i != 3]
    assert [im["id"] for im in doc["images"]] == list(range(1, 10))
    assert [(a["id"], a["image_id"]) for a in doc["annotations"]] == [(i, i) for i in range(1, 10)]
    assert doc["info"]["failures"] == [{"index": 3, "input": "im3.png", "error": "not an image",
                                        "kind": "unreadable"}]
    assert doc["info"]["inputs"] == 10 and doc["categories"] == [{"id": 1, "name": "segment"}]

    w = shards.ShardWriter(tmp_path, 1, 3)  # an input twice: refused, naming both shards
    w.open(1)
    w.add(_entry(1, 3))
    w.add(_entry(1, 4))
    w.add(_entry(0, 2) | {"index": 9})
    w.close()
    with pytest.raises(ValueError, match=r"input 9 \(im9.png\) is in coco-1-00001.json and in "
                                         r"coco-1-00001.json"):
        shards.merge(tmp_path)


def test_tfds_specs():
    tfds_images = pytest.importorskip("diffcut_jax.data.tfds_images")
    assert tfds_images.parse_spec("coco/2017:validation") == ("coco/2017", "validation")
    assert tfds_images.parse_spec("coco/2017:1.1.0/validation") == ("coco/2017:1.1.0", "validation")
    assert tfds_images.parse_spec("voc20:validation[:10]") == ("voc20", "validation[:10]")
    assert tfds_images.parse_spec("mnist/test") == ("mnist", "test")
    with pytest.raises(ValueError, match="expected NAME"):
        tfds_images.parse_spec("voc20")
