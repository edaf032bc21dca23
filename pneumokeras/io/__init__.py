"""Reading images: DICOM, PNG and JPEG to square 8-bit pixels (no TensorFlow)."""
