"""The dataset-labelling engine: a dataset of images in, label maps and COCO results out,
resumable, over every local device and over processes. `label_dataset` is the library call;
the `segment` command is its flags, model loading and one call (launch/segment.py).

- `options`: `DatasetOptions`, every option of a dataset run, declared once (the command's
  flags are made from it).
- `inputs`: the inputs of a run, listed once: files, folders, globs and list files, or a TFDS
  split; what identifies them for a resumed run.
- `fingerprint`: what a rerun into the same directory must share (the labels' model, options
  and vocabulary; for COCO shards the inputs and their layout) and the device configuration.
- `outputs`: per-image outputs: names, label and overlay PNGs, the class files, records and
  COCO entries.
- `writing`: the write-behind thread and the tally of results (`summary.jsonl`, failures).
- `run`: `DatasetRun` (prepare: refuse or resume; run: stream, write behind, finish, merge) and
  `label_dataset`.
"""
