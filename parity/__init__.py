"""parity: replay recorded lane cases through PyTorch and its deployed forms, and score the difference.

Importing parity is cheap: torch, onnxruntime and tensorrt are imported by the modules that use them.
"""
__version__ = "0.1.0"
