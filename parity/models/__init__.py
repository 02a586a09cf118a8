"""Models and checkpoints: how a lane model is built, what input it takes, how its outputs decode
into lanes x[frame, lane, row], and the checkpoint files that hold its weights.

`rowanchor` is the reference adapter (a row-anchor classifier in the style of Ultra-Fast-Lane-
Detection, with its training and vehicle pipelines); `checkpoint` reads and writes a checkpoint:
a plain state_dict (`torch.load(weights_only=True)`) plus a JSON sidecar naming the adapter, the
config, the training method and its provenance.

This package may import the shared top-level modules, `parity.cases` and `parity.preprocessing`.
"""
