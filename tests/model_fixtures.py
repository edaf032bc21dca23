"""Small models and model checks shared by tests."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np


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


def predict_in_fresh_process(model_path, images_path, backend: str) -> np.ndarray:
    """`load_model(model_path).predict(images)` in a new interpreter under `backend`.

    Asserts the program never imported pneumokeras (the `.keras` contract).
    """
    code = (
        "import sys, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], np.asarray(m.predict(np.load(sys.argv[2]), verbose=0)))\n"
        "assert 'pneumokeras' not in sys.modules\n"
    )
    out = Path(images_path).with_suffix(f".{backend}.npy")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_path), str(images_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(out)
