"""Serving: predictions on image files and exports (ONNX, SavedModel)."""
