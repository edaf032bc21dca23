"""Base utilities: atomic files, the worker pool, process set-up and backend settings."""
