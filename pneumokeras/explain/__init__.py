"""Explanations: class activation maps (tf-keras-vis), localisation scores and overlays."""
