"""Training: the loop that produces checkpoints of the reference model from cases with GT.

`loop` holds the seeded training loop (`parity train`) and the held-out evaluation written into
every checkpoint's sidecar. Robustness recipes (adversarial training, weight averaging, soups, ...)
are added here as small files on the same loop.

This package may import the shared top-level modules and the stages it trains on: `parity.cases`,
`parity.preprocessing`, `parity.models`, `parity.runners`, `parity.metrics` and `parity.runs`.
"""
