"""Models and checkpoints: how a lane model is built, what input it takes, how its outputs decode
into lanes x[frame, lane, row], and the checkpoint files that hold its weights.

`rowanchor` is the reference adapter (a row-anchor classifier in the style of Ultra-Fast-Lane-
Detection, with its training and vehicle pipelines); `ufld` and `ufldv2` are the authors' UFLD v1 and
v2 networks, configs, preprocessing and decoding; `outputs` names, runs and decodes one or several
outputs; `checkpoint` reads and writes a checkpoint: a plain state_dict (`torch.load(weights_only=True)`)
plus a JSON sidecar naming the adapter, the config, the training method and its provenance;
`foreign` imports the authors' checkpoints; `onnx_only` stands an ONNX file in for a checkpoint.

This package may import the shared top-level modules, `parity.cases` and `parity.preprocessing`.
"""
