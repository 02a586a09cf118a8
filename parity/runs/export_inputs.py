"""`parity export-inputs`: the exact tensors a replay (or a sweep) feeds, for an engine run elsewhere.

Same pipeline, same batching (batches of --batch-size from each case's first frame, one case at a
time), optionally under perturbations (every frame the perturbation's schedule feeds), optionally a
batch-invariance probe per case and pipeline (its first frame repeated over a whole batch: an
engine must give every row the same output). Written as trtexec `--loadInputs` raw files, one
Polygraphy `--load-inputs` JSON, or .npy files, with inputs.json (case, frames, pipeline spec hash,
tensor name, shape, dtype and sha256, one sha256 per frame) and the capture script. The ONNX graphs
the engine should be built from are written beside them with their sha256.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..models.outputs import output_names
from ..provenance import git_sha, sha256_file, sha256_json
from ..runners.captures import manifest as M
from ..runners.captures import numpy_files, polygraphy_json, trtexec
from .inputs import load_all_cases, resolve_pipeline

FORMATS = ("trtexec", "polygraphy", "npy")
POLYGRAPHY_FILE = "inputs.polygraphy.json"
SCRIPT = "capture_trt.py"


def _batches(case, pipe, batch_size, applied=None):
    """(frames, tensor) in the order a replay (or, perturbed, a sweep) prepares them."""
    if applied is None:
        frames = np.arange(len(case))
        prep = lambda idx: pipe.prepare(case, idx)  # noqa: E731
    else:
        fed, _ = applied.schedule(case.timestamps)
        frames = fed[fed >= 0]
        ppipe, hooks = applied.pipeline(pipe), applied.hooks()
        prep = lambda idx: ppipe.prepare(case, idx, hooks=hooks)  # noqa: E731
    for s in range(0, len(frames), batch_size):
        idx = frames[s : s + batch_size]
        yield [int(f) for f in idx], prep(idx)


def export_inputs(cases: list[str], checkpoint: str, out: str, fmt: str = "trtexec", pipelines: str = "vehicle",
                  batch_size: int = 16, perturb: str | None = None, severities=(), seed: int = 0, invariance_probe: bool = False,
                  graphs: str = "fp32,fp16", cache_dir: str | None = None, argv=(), onnx_spec: dict | None = None) -> Path:
    from ..models.onnx_only import load_model
    from ..preprocessing import perturb as P
    from ..runners.artifacts import ArtifactCache, export_onnx, fp16_onnx

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    spec = graphs
    graphs = [g.strip() for g in spec.split(",") if g.strip() and g.strip() != "none"]
    if set(graphs) - {"fp32", "fp16"}:
        raise UsageError(f"--graphs takes fp32, fp16 or none, not {spec!r}")
    loaded = load_all_cases(cases)
    ckpt = load_model(checkpoint, onnx_spec)
    adapter = ckpt.adapter()
    pipes = [resolve_pipeline(p.strip(), adapter.pipelines()) for p in pipelines.split(",") if p.strip()]
    perts = [P.get(n) for n in P.resolve(perturb)] if perturb else []
    if any(p.stage == "tensor" for p in perts):
        raise UsageError("--perturb: tensor-stage perturbations (fgsm) follow the model's gradients per frame; export-inputs cannot write them")
    if perts and not severities:
        raise UsageError("--perturb needs --severities")
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()):
        if not (dest / M.FILE).is_file():
            raise UsageError(f"{dest}: exists and is not an export folder; give an empty or new --out")
        shutil.rmtree(dest)  # an earlier export: replaced whole, so no file of it is left to mismatch
    dest.mkdir(parents=True, exist_ok=True)

    batches: list[M.Batch] = []
    feeds: list[dict] = []

    def add(kind, case, pipe, pname, sev, frames, x):
        bid = f"batch_{len(batches):04d}"
        file = {"trtexec": f"{bid}.raw", "npy": f"{bid}.npy", "polygraphy": POLYGRAPHY_FILE}[fmt]
        if fmt == "trtexec":
            trtexec.write_raw(dest / file, x)
        elif fmt == "npy":
            numpy_files.write_npy(dest / file, x)
        else:
            feeds.append({adapter.input_name: x})
        tensor = {"name": adapter.input_name, "shape": list(x.shape), "dtype": x.dtype.name, "sha256": M.tensor_sha256(x), "file": file,
                  **({"index": len(feeds) - 1} if fmt == "polygraphy" else {})}
        batches.append(M.Batch(bid, kind, case.name, pipe.name, sha256_json(pipe.to_dict()), pname, sev, frames, tensor, M.row_hashes(x)))

    for case in loaded:
        for pipe in pipes:
            for frames, x in _batches(case, pipe, batch_size):
                add("frames", case, pipe, "none", 0, frames, x)
            if invariance_probe:
                one = pipe.prepare(case, [0])
                add("invariance", case, pipe, "none", 0, [0] * batch_size, np.repeat(one, batch_size, axis=0))
            for p in perts:
                for sev in severities:
                    applied = P.Applied(p, sev, seed, case.name)
                    for frames, x in _batches(case, pipe, batch_size, applied):
                        add("frames", case, pipe, p.name, int(sev), frames, x)
    if fmt == "polygraphy":
        polygraphy_json.write_feeds(dest / POLYGRAPHY_FILE, feeds)
    cache = ArtifactCache(cache_dir)
    models = {}
    if graphs:
        path32, _ = export_onnx(ckpt, cache)
        for g in graphs:
            src = path32 if g == "fp32" else fp16_onnx(path32, cache)[0]
            name = "model.onnx" if g == "fp32" else "model.fp16.onnx"
            shutil.copyfile(src, dest / name)
            models[g] = {"file": name, "sha256": sha256_file(dest / name)}
    shutil.copyfile(Path(M.__file__).with_name("target_script.py"), dest / SCRIPT)
    doc = {
        "created": datetime.now(timezone.utc).isoformat(), "command": list(argv), "git_sha": git_sha(), "format": fmt,
        "checkpoint": {"path": os.path.abspath(ckpt.path), "sha256": ckpt.sha256, "name": ckpt.name},
        "input_name": adapter.input_name, "output_name": output_names(adapter)[0], "output_names": list(output_names(adapter)),
        "batch_size": batch_size,
        "cases": {c.name: {"sha256": c.content_hash(), "frames": len(c), "width": c.width, "height": c.height} for c in loaded},
        "pipelines": {p.name: {"sha256": sha256_json(p.to_dict()), "spec": p.to_dict()} for p in pipes},
        "perturbations": {p.name: [int(s) for s in severities] for p in perts}, "seed": seed,
        "invariance_probe": invariance_probe, "onnx": models, "capture_script": SCRIPT,
    }
    return M.write_manifest(dest, doc, batches)


def command_lines(manifest_path: Path) -> list[str]:
    """How to run the export on the target (printed after an export; docs/target.md explains them)."""
    m = M.read_manifest(manifest_path)
    d = m.folder
    fp16 = "model.fp16.onnx" if (d / "model.fp16.onnx").is_file() else "model.onnx"
    first = m.batches[0]
    lines = [f"on the target, in a copy of {d}:",
             f"  trtexec --onnx={fp16} --stronglyTyped --saveEngine=model.fp16.plan --profilingVerbosity=detailed "
             f"--minShapes={m.input_name}:1x{'x'.join(map(str, first.tensor['shape'][1:]))} "
             f"--optShapes={m.input_name}:{'x'.join(map(str, first.tensor['shape']))} "
             f"--maxShapes={m.input_name}:{'x'.join(map(str, first.tensor['shape']))}",
             f"  python3 {SCRIPT} --engine model.fp16.plan --inputs . --out capture-fp16 --precision fp16"]
    if m.doc.get("format") == "trtexec":
        lines.append(f"  or per batch: mkdir -p raw/BATCH && (cd raw/BATCH && trtexec --loadEngine=../../model.fp16.plan "
                     f"--loadInputs='{m.input_name}':../../BATCH.raw --shapes={m.input_name}:NxCxHxW --iterations=1 --warmUp=0 "
                     "--duration=0 --dumpRawBindingsToFile)")
    if m.doc.get("format") == "polygraphy":
        lines.append(f"  or: polygraphy run {fp16} --trt --load-inputs {POLYGRAPHY_FILE} --save-outputs outputs.json")
    lines.append("then here: parity replay --outputs NAME=CAPTURE (a capture folder, outputs.json, raw/, ...) --cases ...")
    return lines
