"""Stage 3, masks: coarse segments to full-resolution label maps.

- `concepts`: concept assignment, every pixel to the segment of the most similar mean feature.
- `pamr`: PAMR refinement and the evaluation's 3 x 3 median.
- `label_blocks`: argmax over labels in blocks with a running maximum, never (pixels x capacity).
"""
