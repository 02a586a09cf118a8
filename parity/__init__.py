"""parity: replay recorded lane cases through PyTorch and its deployed forms, and score the difference.

The package follows the data: `cases` -> `preprocessing` -> `models` -> `runners` -> `metrics` ->
`runs` -> `training` (see docs/architecture.md); `errors`, `atomic`, `provenance` and `colour` are
small shared pieces, `cli` the command line on top. Importing parity is cheap: torch, onnxruntime
and tensorrt are imported by the modules that use them, and `parity.replay` (the replay module:
`parity.replay.replay(parity.replay.ReplayConfig(...))`) is loaded on first use.
"""
__version__ = "0.1.0"

_LAZY = {"replay": "parity.runs.replay", "sweep": "parity.runs.sweep"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'parity' has no attribute {name!r}")
