"""The one compiled part: CULane F1's span rasteriser. Optional: without a C compiler the install
still succeeds and parity.metrics.culane_spans uses its numpy path (the same spans, slower)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("parity.metrics._culane_spans", ["parity/metrics/_culane_spans.c"],
                             extra_compile_args=["-O3"], optional=True)])
