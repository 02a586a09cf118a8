"""The compiled parts: CULane F1's span rasteriser and spline samples, raw output parity, the resize taps and NV12
decoding. Optional: without a C compiler the install still succeeds and their modules use their
numpy paths (the same numbers, slower). -ffp-contract=off: no fused multiply-add, so sums round as numpy's do."""
from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off"]
MODULES = {"parity._colour": "parity/_colour.c",
           "parity.metrics._culane_spans": "parity/metrics/_culane_spans.c",
           "parity.metrics._culane_spline": "parity/metrics/_culane_spline.c",
           "parity.metrics._tensors": "parity/metrics/_tensors.c",
           "parity.preprocessing._taps": "parity/preprocessing/_taps.c"}
setup(ext_modules=[Extension(name, [source], extra_compile_args=FLAGS, optional=True) for name, source in MODULES.items()])
