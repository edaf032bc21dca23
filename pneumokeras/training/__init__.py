"""Training: the train and cross-validation commands, multi-process set-up."""
