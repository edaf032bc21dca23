"""Training-time augmentation inside the model: the compiled step augments, not the host.

On a GPU host the tf.data pipeline's random augmentation (flip, rotation,
translation, brightness, contrast) costs CPU time per image; a GPU training
ResNet18 can consume more images per second than a typical host's cores can
augment (see the Benchmarks page). `with_augmentation` puts the same Keras
preprocessing layers in front of the classifier in a training-only model, so they
run inside the compiled training step on the accelerator and the host only decodes
and batches (`augment.on_device`). The layers are active only when Keras calls the
model with `training=True` (`fit`'s steps), so validation sees the images as they
are. What is saved is the classifier alone (`classifier_of`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

AUGMENTED_SUFFIX = "_augmented"


def with_augmentation(model: keras.Model, layers: Sequence[keras.layers.Layer]) -> keras.Model:
    """`model` behind augmentation layers, for training: input → layers → clip → model.

    Args:
        model: the classifier, input `(batch, S, S, 1)` pixels in [0, 255].
        layers: Keras preprocessing layers (e.g. `records.augment.device_layers(...)`),
            applied in order; pixels are clipped to [0, 255] after them, as on the host.

    Returns:
        A functional model with the same input and output shapes whose only weights
        are `model`'s (plus the layers' random-generator state).
    """
    image = keras.Input(model.input_shape[1:], name=model.inputs[0].name)
    # Keras marks RandomRotation, RandomTranslation and RandomZoom as not XLA-compilable,
    # for TensorFlow's kernels; under JAX they are jax.numpy code and compile, and one
    # such layer would make `fit` run the whole JAX step op by op (`jit_compile` falls
    # back to False): 23x slower on a small model.
    compilable = keras.backend.backend() == "jax"
    x = image
    for layer in layers:
        if compilable:
            layer.supports_jit = True
        x = layer(x)
    # ReLU with max_value is min(max(x, 0), 255): the host's clip, as a stock layer.
    x = keras.layers.ReLU(max_value=255.0, name="augment_clip")(x)
    return keras.Model(image, model(x), name=f"{model.name}{AUGMENTED_SUFFIX}")


def classifier_of(model: keras.Model) -> keras.Model:
    """The classifier inside a `with_augmentation` model; any other model itself."""
    if not model.name.endswith(AUGMENTED_SUFFIX):
        return model
    inner = model.name[: -len(AUGMENTED_SUFFIX)]
    return model.get_layer(inner)
