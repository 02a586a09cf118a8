"""Where units of work run: in this process, in a local process pool, or as Ray tasks on a cluster.

A unit is a module-level function and a small picklable payload (paths, names, specs; never a live
object), so every executor runs exactly the same code on exactly the same inputs and returns
the same result; the parent writes every part and the manifest (one writer per run folder).

- `serial` (the default): units one after another in this process; a unit may ask which comes next
  (`upcoming_payload`: a replay prepares its case's first batches while it scores the one before).
- `--workers N`: a local pool of N processes, each limited to `--threads` compute threads (default:
  cores / N) so torch and ONNX Runtime do not oversubscribe the machine. Workers fork from a fork
  server that imported torch, ONNX Runtime and parity's stages once and never computes (a fork of a
  process that ran torch inherits thread pools that do not survive it; spawned workers each spent
  ~1 s importing torch: the scale bench's sweep on 2 workers went from 1.60x to 1.75x the speed of
  1 worker, AMD EPYC, 3 interleaved rounds). `ExecutorSpec.start` starts the
  server as soon as a run knows its executor, so its imports overlap the run's own set-up. A worker
  takes the parent's working directory and environment at the pool's start, as a spawned one would.
- `--executor ray [--ray-address ADDR]`: Ray tasks, one CPU-slot of `--threads` each, on an existing
  cluster (or a local instance when no address is given). Workers need parity installed and the
  case and checkpoint paths readable (a shared file system); see docs/scale.md.

Each process keeps the runners it activated (per checkpoint and runner list) for the units that
follow, as a serial run keeps them for its cases. Results are identical whatever the executor and
N for the same `--threads`: torch's CPU kernels sum in an order that depends on the thread count
(1.5e-5 in the reference model's logits between 1 and 2 threads), so the thread count is part of a
run's settings and of its resume key.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from contextlib import ExitStack
from dataclasses import dataclass

from ..errors import ParityError, UsageError

EXECUTORS = ("serial", "local", "ray")
_FORKSERVER = "forkserver" in mp.get_all_start_methods()
# What every unit needs and a worker would otherwise import itself (a module that is not installed is skipped).
_PRELOAD = ("torch", "onnxruntime", "pyarrow.parquet", "parity.runs.replay", "parity.runs.sweep", "parity.decisions.rank",
            "parity.runners.torch_runner", "parity.runners.onnxrt", "parity.metrics.scoring")


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = "serial"  # serial | local | ray
    workers: int = 1
    threads: int | None = None  # compute threads per unit (None: the libraries' default, serial only)
    ray_address: str | None = None

    @classmethod
    def from_options(cls, executor: str | None, workers: int | None, threads: int | None, ray_address: str | None) -> "ExecutorSpec":
        workers = 1 if workers is None else workers
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        if threads is not None and threads < 1:
            raise UsageError(f"--threads must be at least 1, not {threads}")
        kind = executor or ("local" if workers > 1 else "serial")
        if kind not in EXECUTORS:
            raise UsageError(f"--executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
        if ray_address and kind != "ray":
            raise UsageError("--ray-address needs --executor ray")
        if kind != "serial" and threads is None:
            threads = max(1, (os.cpu_count() or 1) // workers)
        return cls(kind, workers, threads, ray_address)

    def start(self) -> "ExecutorSpec":
        """Start what this executor needs ahead of its first unit (the local pool's fork server)."""
        if self.kind == "local" and _FORKSERVER:
            from multiprocessing import forkserver

            forkserver.set_forkserver_preload(list(_PRELOAD))
            forkserver.ensure_running()
        return self

    def describe(self) -> dict:
        return {"executor": self.kind, "workers": self.workers, "threads": self.threads, "ray_address": self.ray_address}


_UPCOMING: list = []  # the payload this process runs after the current unit: serial runs only


def upcoming_payload() -> dict | None:
    """The payload this process runs after the current unit, where it knows: the serial executor runs
    them in order. None in a pool or on Ray, whose next unit may go to any process."""
    return _UPCOMING[0] if _UPCOMING else None


def run_units(spec: ExecutorSpec, fn, payloads: list, on_result):
    """Run fn(payload) for every payload and call on_result(i, result, error) as each finishes
    (error: None, or {"error", "exit_code", "traceback"} for a unit that raised). A failing unit
    never stops the others."""
    if not payloads:
        return
    if spec.kind == "serial":
        from ..runners.base import set_compute_threads

        # in this process: no OMP_NUM_THREADS (too late for the libraries loaded here, and inherited by
        # every process started after, which would then compute with other thread counts)
        set_compute_threads(spec.threads)
        try:
            for i, p in enumerate(payloads):
                _UPCOMING[:] = payloads[i + 1 : i + 2]
                on_result(i, *_call(fn, p))
        finally:
            _UPCOMING.clear()
        return
    if spec.kind == "local":
        from concurrent.futures import ProcessPoolExecutor, as_completed

        spec.start()
        ctx = mp.get_context("forkserver" if _FORKSERVER else "spawn")
        with ProcessPoolExecutor(max_workers=min(spec.workers, len(payloads)), mp_context=ctx,
                                 initializer=_init_pool_worker, initargs=(spec.threads, os.getcwd(), dict(os.environ))) as pool:
            futures = {pool.submit(_call, fn, p): i for i, p in enumerate(payloads)}
            for f in as_completed(futures):
                try:
                    result, error = f.result()
                except Exception as exc:  # the worker process died (killed, out of memory): that unit failed
                    result, error = None, {"error": f"worker died: {type(exc).__name__}: {exc}", "exit_code": 1, "traceback": ""}
                on_result(futures[f], result, error)
        return
    _run_ray(spec, fn, payloads, on_result)


def _run_ray(spec: ExecutorSpec, fn, payloads, on_result):
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed (pip install 'parity[ray]')") from None
    started = False
    if not ray.is_initialized():
        kw = {"address": spec.ray_address} if spec.ray_address else {"num_cpus": spec.workers * (spec.threads or 1)}
        ray.init(**kw, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        task = ray.remote(num_cpus=spec.threads or 1, max_retries=0)(_ray_call)
        pending = {task.remote(fn, p, spec.threads): i for i, p in enumerate(payloads)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            i = pending.pop(ref)
            try:
                result, error = ray.get(ref)
            except Exception as exc:  # the task's process died
                result, error = None, {"error": f"ray task failed: {type(exc).__name__}: {exc}", "exit_code": 1, "traceback": ""}
            on_result(i, result, error)
    finally:
        if started:
            ray.shutdown()


def _ray_call(fn, payload, threads):
    _init_worker(threads)
    return _call(fn, payload)


def _init_pool_worker(threads: int | None, cwd: str, env: dict) -> None:
    # a fork server keeps the directory and environment it started with; the pool's are the parent's now
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    _init_worker(threads)


def _init_worker(threads: int | None) -> None:
    from ..runners.base import set_compute_threads

    if threads is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    set_compute_threads(threads)


def _call(fn, payload):
    try:
        return fn(payload), None
    except Exception as exc:  # reported with the unit; the others go on
        return None, {"error": f"{type(exc).__name__}: {exc}", "exit_code": exc.exit_code if isinstance(exc, ParityError) else 1,
                      "traceback": traceback.format_exc(limit=8)}


# -- runners kept by each process -------------------------------------------------------------------
_ACTIVE: dict = {}
_STACK = ExitStack()


def active_runners(checkpoint_path: str, runner_names: list[str], cache_dir: str | None, engines: list[str] = (),
                   trt_timing_cache: str | None = None, captures: list[dict] = (), onnx_spec: dict | None = None):
    """(checkpoint, [activated runners]) for this process, made once per checkpoint x runner list
    (captures: CaptureSpec dicts, read again here: a worker gets paths, never arrays)."""
    from ..models.onnx_only import load_model
    from ..runners import create, prebuilt_engine
    from ..runners.artifacts import ArtifactCache

    ckpt = load_model(checkpoint_path, onnx_spec)
    key = (ckpt.sha256, tuple(runner_names), cache_dir, tuple(engines), trt_timing_cache, repr(list(captures)))
    if key not in _ACTIVE:
        cache = ArtifactCache(cache_dir)
        runners = [create(n, ckpt, cache, trt_timing_cache=trt_timing_cache) for n in runner_names]
        runners += [prebuilt_engine(p) for p in engines]
        if captures:
            from ..runners.captured import CaptureRunner
            from ..runners.captures import CaptureSpec, load_capture

            runners += [CaptureRunner(load_capture(CaptureSpec(**c))) for c in captures]
        for r in runners:
            _STACK.enter_context(r)
        _ACTIVE[key] = (ckpt, runners)
    return _ACTIVE[key]


def release_runners() -> None:
    """Deactivate every runner this process holds (the end of a serial run)."""
    _STACK.close()
    _ACTIVE.clear()
