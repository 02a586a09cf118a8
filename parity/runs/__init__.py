"""Runs: the commands that push cases through runners and write the results tables.

`replay` (every frame, every runner, each pipeline), `sweep` (perturbation x severity) and
`localize` (which layer to keep in fp32) all feed runners through `batch` (one prepared batch to
every runner: outputs checked, timed, decoded, raw parity against the reference). `inputs` loads
and validates what a run reads; `windows` picks the contiguous frames a sweep or a rank evaluates;
`folder` owns a run's output folder (lock, in-progress marker, manifest of parts, resume);
`executor` runs units of work (a case, a case x condition) serially, in a process pool or on Ray;
`units` scores one checkpoint x case x runner x pipeline x perturbation x severity into cached
sufficient statistics (what `parity.decisions` ranks); `schema` declares every results-table column (name, type, unit,
meaning) once; `tables` writes and reads those tables.

This package may import the shared top-level modules and every stage before it: `parity.cases`,
`parity.preprocessing`, `parity.models`, `parity.runners` and `parity.metrics`.
"""
