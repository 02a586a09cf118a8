"""Deployment artifacts (ONNX export, fp16 ONNX; later TensorRT engines), built once and cached by content.

An artifact's key holds everything that decides its bytes (input hashes, options, library
versions); the cache folder is the key's digest. A build happens in a temporary folder renamed
into place, so an interrupted build never leaves a half-written artifact behind.

Nothing is handed out by its folder name alone: the first use in a process compares the file with
the sha256 its meta.json recorded, later uses its size and mtime (a mismatch: the sha256 again).
A file that fails, or a missing or unreadable meta.json, is said in one line and rebuilt.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from .. import atomic
from ..provenance import default_cache_dir, sha256_file, sha256_json

log = logging.getLogger(__name__)

OPSET = 17
FP16_MIN_POSITIVE = 1e-7  # onnxconverter-common's default clamp range for initializers
FP16_MAX_FINITE = 1e4
_VERIFIED: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) whose sha256 this process has checked


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def artifact_problem(folder: Path, filename: str) -> tuple[dict | None, str | None]:
    """(meta, None) when `folder/filename` is the artifact its meta.json describes, else (None, why)."""
    path = folder / filename
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return None, "has no meta.json"
    except (OSError, ValueError) as exc:
        return None, f"has an unreadable meta.json ({type(exc).__name__})"
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        return None, "has a meta.json without the artifact's sha256"
    if not path.is_file():
        return None, f"has no {filename}"
    stamp = _stamp(path)
    if _VERIFIED.get(str(path)) == stamp:
        return meta, None
    if sha256_file(path) != meta["sha256"]:
        _VERIFIED.pop(str(path), None)
        return None, f"holds a {filename} that is not the one built (sha256 differs from meta.json's)"
    _VERIFIED[str(path)] = stamp
    return meta, None


class ArtifactCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.builds = 0  # how many artifacts this cache object actually built (tests and logs)

    def get(self, kind: str, key: dict, filename: str, build) -> tuple[Path, dict]:
        """Path of `filename` for `key`, calling build(tmp_path) -> extra meta only on a miss."""
        digest = sha256_json({"kind": kind, **key})[:24]
        folder = self.root / kind / digest
        if folder.exists():
            meta, problem = artifact_problem(folder, filename)
            if meta is not None:
                return folder / filename, meta
            log.warning("%s: cached %s artifact %s: rebuilt", folder, kind, problem)
            self._discard(folder)
        self.root.joinpath(kind).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=self.root / kind))
        try:
            extra = build(tmp / filename) or {}
            meta = {"kind": kind, "key": key, "digest": digest, "sha256": sha256_file(tmp / filename), **extra}
            atomic.write_json(tmp / "meta.json", meta)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process finished the same artifact first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
            self.builds += 1
            log.info("built %s artifact %s", kind, digest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta, problem = artifact_problem(folder, filename)
        if meta is None:
            raise OSError(f"{folder}: the {kind} artifact just built fails verification: {problem}")
        return folder / filename, meta

    @staticmethod
    def _discard(folder: Path) -> None:
        """Move a failed artifact aside, then delete it (a reader holding it open keeps its file)."""
        aside = folder.with_name(f".{folder.name}.bad.{os.getpid()}")
        try:
            os.replace(folder, aside)
        except OSError:
            return  # someone else moved or rebuilt it; the build below races them fairly
        shutil.rmtree(aside, ignore_errors=True)


def export_onnx(checkpoint, cache: ArtifactCache) -> tuple[Path, dict]:
    """fp32 ONNX of the checkpoint's model with a dynamic batch dimension."""
    if getattr(checkpoint, "onnx_path", None) is not None:  # an ONNX-only model: the graph is the model
        return Path(checkpoint.onnx_path), {"sha256": checkpoint.sha256, "key": {"onnx_only": checkpoint.sha256}, "precision": "fp32"}
    from ..models.outputs import output_names

    adapter = checkpoint.adapter()
    outputs = list(output_names(adapter))
    key = {
        "weights_sha256": checkpoint.sha256,
        "adapter": checkpoint.meta["adapter"],
        "config": checkpoint.meta.get("config", {}),
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "torch": _installed_version("torch"),  # from its metadata: a cached export needs no torch import (~2.5 s)
    }

    def build(path: Path) -> dict:
        import torch

        model = checkpoint.build_model()
        dummy = torch.zeros(1, *adapter.input_shape())
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; it is kept because its
            # node names (/backbone/3/Conv) map back to module names for per-layer localisation.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(path),
                input_names=[adapter.input_name], output_names=outputs,
                dynamic_axes={adapter.input_name: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
        return {"precision": "fp32"}

    return cache.get("onnx", key, "model.onnx", build)


def fp16_converter() -> str:
    """nvidia-modelopt's AutoCast where it is installed (what TensorRT 11 expects), else onnxconverter-common."""
    import importlib.util

    try:
        if importlib.util.find_spec("modelopt.onnx.autocast") is not None:
            return "modelopt-autocast"
    except ModuleNotFoundError:  # a parent package is missing
        pass
    return "onnxconverter-common"


def _installed_version(dist: str, module: str | None = None) -> str:
    """A package's version from its installed metadata, without importing it: importing torch takes
    ~2.5 s, onnxconverter-common (and with it onnx) 2 s, of every command that only reads a cached
    artifact keyed by their versions."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:  # importable without metadata (a vendored copy)
        return str(importlib.import_module(module or dist).__version__)


def fp16_onnx(onnx_path: Path, cache: ArtifactCache, keep_fp32_nodes: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """fp16 graph with fp32 inputs/outputs; nodes named in `keep_fp32_nodes` stay fp32 behind Casts
    (AutoCast's nodes_to_exclude, onnxconverter-common's node_block_list).

    onnxconverter-common silently clamps initializers into [1e-7, 1e4]; the count of values it
    clamps is recorded in the artifact's meta and logged, never hidden.
    """
    converter = fp16_converter()
    if converter == "modelopt-autocast":
        import modelopt

        version = f"nvidia-modelopt {getattr(modelopt, '__version__', '?')}"
    else:
        version = f"onnxconverter-common {_installed_version('onnxconverter-common', 'onnxconverter_common')}"
    key = {
        "onnx_sha256": sha256_file(onnx_path),
        "converter": version,
        "keep_io_types": True,
        "min_positive_val": FP16_MIN_POSITIVE,
        "max_finite_val": FP16_MAX_FINITE,
        **({"keep_fp32_nodes": sorted(keep_fp32_nodes)} if keep_fp32_nodes else {}),
    }

    def build(path: Path) -> dict:
        import onnx

        model = onnx.load(str(onnx_path))
        clamped = {}
        if converter == "modelopt-autocast":
            import re

            from modelopt.onnx.autocast import convert_to_mixed_precision

            # AutoCast takes name patterns: anchor and escape so only these nodes stay fp32.
            m16 = convert_to_mixed_precision(
                onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True,
                nodes_to_exclude=[f"^{re.escape(n)}$" for n in keep_fp32_nodes] or None,
            )
        else:
            from onnxconverter_common import float16

            clamped = clamped_initializers(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # it warns per clamped value; we count them instead
                m16 = float16.convert_float_to_float16(
                    model, min_positive_val=FP16_MIN_POSITIVE, max_finite_val=FP16_MAX_FINITE, keep_io_types=True,
                    node_block_list=list(keep_fp32_nodes) or None,
                )
        onnx.save(m16, str(path))
        if clamped:
            log.warning("fp16 conversion clamped %d initializer values in %s", sum(clamped.values()), onnx_path)
        return {"precision": "fp16", "io_types": "fp32", "converter": converter, "clamped_initializers": clamped}

    return cache.get("onnx-fp16", key, "model.onnx", build)


def clamped_initializers(model) -> dict[str, int]:
    """Per initializer, how many values fp16 conversion will clamp (|v| > 1e4 or 0 < |v| < 1e-7)."""
    import numpy as np
    from onnx import numpy_helper

    out = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue
        a = np.abs(arr)
        n = int(((a > FP16_MAX_FINITE) | ((a > 0) & (a < FP16_MIN_POSITIVE))).sum())
        if n:
            out[init.name] = n
    return out
