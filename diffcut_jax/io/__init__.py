"""Images and results in and out, used by every stage; imports nothing else of the package.

- `paths`: the one path layer, local disks and buckets (`gs://`, `s3://`): whole-object writes,
  exclusive creation, local copies for memory-mapped readers, start-up checks, append logs.
- `imageio`: image decoding (files and objects), label and overlay PNGs.
- `image_ops`: resizing with PyTorch's conventions, and the working size of an input.
- `coco_output`: segments as COCO RLE results (`segment --format coco`).
- `shards`: COCO results of a dataset run in per-process shards: resumable, merged into coco.json.
- `input_list`: input paths at any count, listed once to a file and read back by index.
- `progress`: progress of long work on stderr (tqdm), with a count per status.
- `cache`: the user's cache root and checked, atomically written entries (text classifiers).
"""
