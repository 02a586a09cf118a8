"""Preprocessing: a recorded frame -> the model's input tensor, and controlled ways to get it wrong.

`pipeline` is the declarative spec (decode, crop, resize, quantise, normalise, layout) with the
"training" and "vehicle" recipes; `resample` is the one separable resampler behind every resize
convention; `perturb` is the registry of seeded, severity-graded perturbations that hook into a
pipeline's stages; `preview` draws what the model sees at each severity. NV12 decoding comes from
the shared `parity.colour`, the same code the synthetic recorder encodes with.

This package may import the shared top-level modules and `parity.cases`; nothing downstream.
"""
