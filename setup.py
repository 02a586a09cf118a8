"""The compiled parts: CULane F1's span rasteriser and the resize taps. Optional: without a C compiler
the install still succeeds and their modules use their numpy paths (the same numbers, slower).
-ffp-contract=off: no fused multiply-add, so float32 sums round as numpy's do."""
from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off"]
setup(ext_modules=[Extension("parity.metrics._culane_spans", ["parity/metrics/_culane_spans.c"], extra_compile_args=FLAGS, optional=True),
                   Extension("parity.preprocessing._taps", ["parity/preprocessing/_taps.c"], extra_compile_args=FLAGS, optional=True)])
