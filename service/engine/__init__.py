"""Torch-free inference: onnxruntime sessions over a model repository."""
