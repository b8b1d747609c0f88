"""Images through the segmenter at scale: decoded ahead, batched by working size over devices,
results back in input order. Below the dataset engine (`engine/`), beside the segmenter, which
uses it for `DiffCut.segment_files`.

- `inputs`: `Item`s from paths (Grain's threaded decoding; a lazy iterable or a listed share of
  one process) or from a TFDS split (tf.data), with resumed positions passed through undecoded.
- `batcher`: the device step: images of one working size batched over a mesh of local devices,
  one cached `shard_map`ped program per (model, options, devices, batch, working size),
  dispatched asynchronously.
- `ordered`: `segment_in_order`, the loop that feeds the batcher and yields every item's result
  in input order within a bounded window of held items.
- `memory`: what an out-of-memory error is, and the one-line message that says what to lower.
"""
