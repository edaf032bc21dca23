"""Small models shared by tests."""

import keras


def contract_model(size: int) -> keras.Model:
    """A stand-in for ResNet18 with the same contract, in a handful of stock layers.

    (None, S, S, 1) pixels in [0, 255] → (None, 2) float32 softmax. ResNet18 itself
    is tested in test_resnet.py; under JAX its first build or load in a process
    compiles one XLA kernel per weight shape (tens of seconds on a small CPU), which
    would dominate these tests.
    """
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="pixel_rescaling")(image)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dense(2, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    return keras.Model(image, outputs)
