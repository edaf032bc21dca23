"""Models: backbones from stock Keras layers, the model card and the calibrated classifier."""
