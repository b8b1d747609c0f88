"""Stage 2, the cut: a feature map to segments by recursive normalized cut, AutoSC or the K-way
normalized cut.

- `ncut`: `recursive_ncut`, the depth-first ("stack") formulation and the dispatch to the other.
- `ncut_level`: the level-synchronous ("level") formulation for accelerators.
- `spectral`: Fiedler vectors of one region, or of every region of a batch.
- `graph`: affinities, exact-zero rows, thresholds, canonical labels.
- `autosc`: AutoSC, which picks the number of clusters itself.
- `kway`: `kway_ncut`, the discrete K-way NCut (proximal linearization) on the same graph.
- `batching`: batching rules that keep a vmapped NCut one batched loop.
- `buckets`: the fixed block sizes regions are gathered into.
- `labels`: label maps numbered by first occurrence, made consecutive, compared as partitions.
"""
