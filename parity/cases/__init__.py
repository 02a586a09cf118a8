"""Cases: recorded drives as parity reads them, and everything that makes, finds, imports, exports
or shows them.

`format` is the on-disk case (schema v1: case.json, frames, GT lanes) with its validation and
writer; `discovery` turns paths, globs and suite names into case folders; `camera` is the pinhole
model of case.json's camera; `lanes` moves lane arrays between sets of anchor rows; `synth` is the
procedural recorder and `suites` its named scenarios; `importers` and `exporters` speak TuSimple,
CULane, image folders and video; `logs` reads drive logs (ROS 1/2 bags, MCAP) and keeps a case's
frames inside them; `preview` draws contact sheets.

This package is the start of the flow: it may import only the shared top-level modules
(`parity.errors`, `parity.atomic`, `parity.provenance`, `parity.colour`).
"""
