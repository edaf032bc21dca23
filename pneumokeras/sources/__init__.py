"""Data sources: RSNA labels, class folders, findings CSVs; splits and folds (no TensorFlow)."""
