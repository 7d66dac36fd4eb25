"""ONNX export of trained networks into the model repository (`models/NAME/`)."""
from seam.training.export.onnx_export import ExportError, ExportResult, check_parity, export_model

__all__ = ["ExportError", "ExportResult", "check_parity", "export_model"]
