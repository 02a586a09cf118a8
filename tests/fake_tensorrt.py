"""A test double of the `tensorrt` and `cuda.bindings.runtime` modules.

It records what parity asks of TensorRT (network flags, builder flags, workspace, optimization
profile, tensor shapes and addresses) and really computes: the "engine" carries the ONNX graph,
and execution reads the input from the device address parity set, runs it with onnxruntime and
writes the output to the address parity set. Device memory is host memory whose address stands in
for a device pointer.
"""
from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np


def make_cudart(gpu: str = "Fake GPU"):
    rt = types.ModuleType("cuda.bindings.runtime")
    allocs: dict[int, np.ndarray] = {}
    rt.allocs = allocs
    rt.copies = []
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def cudaMalloc(n):
        buf = np.empty(max(int(n), 1), np.uint8)
        allocs[buf.ctypes.data] = buf
        return (0, buf.ctypes.data)

    def cudaFree(ptr):
        allocs.pop(int(ptr))
        return (0,)

    def cudaMemcpyAsync(dst, src, n, kind, stream):
        device = int(dst) if kind == 1 else int(src)
        assert any(p <= device < p + b.nbytes for p, b in allocs.items()), "copy to or from memory that was not cudaMalloc'ed"
        ctypes.memmove(int(dst), int(src), int(n))
        rt.copies.append((kind, int(n)))
        return (0,)

    rt.cudaMalloc, rt.cudaFree, rt.cudaMemcpyAsync = cudaMalloc, cudaFree, cudaMemcpyAsync
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = lambda s: (0,)
    rt.cudaGetDeviceProperties = lambda dev: (0, types.SimpleNamespace(name=gpu.encode() + b"\x00"))
    return rt


def make_tensorrt(version: str = "10.9.0"):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log = []
    trt.batch_variant = None  # outputs -> outputs, applied after each execution

    class Logger:
        WARNING = 2

        def __init__(self, level=None):
            pass

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")  # TensorRT 11 has no FP16 flag: parity must not need one
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED", LAYER_NAMES_ONLY="LAYER_NAMES_ONLY")
    trt.LayerInformationFormat = types.SimpleNamespace(JSON="JSON")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF")
    trt.nptype = lambda dt: {"FLOAT": np.float32, "HALF": np.float16}[dt]

    class Network:
        def __init__(self, flags):
            self.flags, self.onnx = flags, None

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data):
            self.network.onnx = bytes(data)
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"timing-cache:" + bytes(self.data)

    class Config:
        def __init__(self):
            self.flags = {"TF32"}  # TensorRT's default: TF32 on
            self.pools, self.profiles, self.profiling_verbosity, self.timing_cache = {}, [], None, None

        def set_flag(self, f):
            self.flags.add(f)

        def clear_flag(self, f):
            self.flags.discard(f)

        def set_memory_pool_limit(self, pool, n):
            self.pools[pool] = n

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            header = {
                "version": trt.__version__, "network_flags": network.flags, "builder_flags": sorted(config.flags),
                "pools": config.pools, "profiles": [p.shapes for p in config.profiles],
                "profiling_verbosity": config.profiling_verbosity, "timing_cache": config.timing_cache is not None,
            }
            trt.log.append(("build", header))
            return json.dumps(header).encode() + b"\n" + network.onnx

    class Inspector:
        def __init__(self, engine):
            self.engine = engine

        def get_engine_information(self, fmt):
            half = any(i.data_type == TensorProto.FLOAT16 for i in self.engine.model.graph.initializer)
            layers = [{"Name": n.name, "Outputs": [{"Format/Datatype": "Half" if half and n.op_type in ("Conv", "Gemm", "MatMul") else "Float"}]}
                      for n in self.engine.model.graph.node]
            return json.dumps({"Layers": layers})

    class IDebugListener:
        def __init__(self):
            pass

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}
            self.listener, self.debug_all = None, False
            trt.log.append(("context", self))

        def set_debug_listener(self, listener):
            self.listener = listener
            return True

        def set_all_tensors_debug_state(self, flag):
            self.debug_all = bool(flag)
            return True

        def _call_back(self, feed):
            """Every intermediate value of the graph, handed to the debug listener from device memory."""
            session = self.engine.debug_session()
            for name, arr in zip(self.engine.values, session.run(self.engine.values, feed)):
                arr = np.ascontiguousarray(arr)
                _, ptr = trt.cudart.cudaMalloc(arr.nbytes)
                ctypes.memmove(ptr, arr.ctypes.data, arr.nbytes)
                dtype = "HALF" if arr.dtype == np.float16 else "FLOAT"
                self.listener.process_debug_tensor(ptr, "DEVICE", dtype, arr.shape, name, 7)
                trt.cudart.cudaFree(ptr)

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            batch = next(iter(self.shapes.values()))[0]
            return tuple(batch if d < 0 else d for d in self.engine.get_tensor_shape(name))

        def set_tensor_address(self, name, ptr):
            assert isinstance(ptr, int) and ptr, "tensor addresses are integer device pointers"
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            e = self.engine
            feed = {}
            for n in e.inputs:
                shape = self.shapes[n]
                feed[n] = np.ctypeslib.as_array((ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[n])).reshape(shape).copy()
            outs = e.session.run(e.outputs, feed)
            if self.debug_all and self.listener is not None:
                self._call_back(feed)
            if trt.batch_variant is not None:  # an engine whose kernels differ by batch position (TensorRT #4813)
                outs = [trt.batch_variant(o) for o in outs]
            for n, o in zip(e.outputs, outs):
                o = np.ascontiguousarray(o, dtype=np.float32)
                ctypes.memmove(self.addresses[n], o.ctypes.data, o.nbytes)
            return True

    class Engine:
        def __init__(self, header, model_bytes):
            self.header = header
            self.model = onnx.load_from_string(model_bytes)
            self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self._shapes = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape) for i in [*self.session.get_inputs(), *self.session.get_outputs()]}
            self.values = [o for n in self.model.graph.node if n.op_type not in ("Constant", "Shape") for o in n.output
                           if o not in self.outputs]
            self._debug = None

        def debug_session(self):
            """The graph with every float intermediate value made an output (what unfused debug tensors show)."""
            if self._debug is None:
                m = onnx.shape_inference.infer_shapes(self.model)
                info = {v.name: v for v in m.graph.value_info}
                keep = [v for v in self.values if v in info and info[v].type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
                m.graph.output.extend(info[v] for v in keep)
                self.values = keep
                self._debug = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            return self._debug

        @property
        def num_io_tensors(self):
            return len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return "INPUT" if name in self.inputs else "OUTPUT"

        def get_tensor_shape(self, name):
            return self._shapes[name]

        def get_tensor_dtype(self, name):
            return "FLOAT"  # keep_io_types: fp32 at the edges

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            head, _, body = bytes(plan).partition(b"\n")
            header = json.loads(head)
            if header["version"] != trt.__version__:
                return None  # what TensorRT does with an engine from another version
            return Engine(header, body)

    trt.Builder, trt.OnnxParser, trt.Runtime, trt.IDebugListener = Builder, Parser, Runtime, IDebugListener
    return trt


def install(monkeypatch, version: str = "10.9.0", gpu: str = "Fake GPU"):
    trt, rt = make_tensorrt(version), make_cudart(gpu)
    trt.cudart = rt  # the double's device memory, for the debug tensors it hands to a listener
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, rt
