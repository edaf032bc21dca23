"""Evaluation: metrics, intervals, calibration, drift, external validation, plots and reports."""
