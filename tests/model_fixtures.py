"""Small models and model checks shared by tests."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def brightness_model(size: int, centre: float) -> keras.Model:
    """A fixed model that calls bright images pneumonia: p = sigmoid(20 (mean/255 - centre)).

    Stock layers and set weights, no training: its scores are known from the pixels.
    """
    image = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale")(image)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    dense = keras.layers.Dense(2, name="logits")
    x = dense(x)
    bias = 10.0 * centre
    dense.set_weights([np.array([[-10.0, 10.0]]), np.array([bias, -bias])])
    return keras.Model(image, keras.layers.Activation("softmax", name="predictions")(x))


def contract_ensemble(size: int, folder: Path, members: int = 2, **card: Any) -> Path:
    """`folder/ensemble.keras` + `ensemble.json` as `cv` writes them, from `contract_model`s.

    Member k's weights are the stand-in's scaled by 1 + 0.3 k, so the members
    disagree. `card` overrides the card's fields (threshold, temperature, ...).
    """
    from pneumokeras.models.ensemble import build_ensemble, member_name
    from pneumokeras.models.model_card import ModelCard, write_card

    models = []
    for k in range(members):
        model = contract_model(size)
        model.set_weights([w * (1 + 0.3 * k) for w in model.get_weights()])
        models.append(model)
    path = Path(folder) / "ensemble.keras"
    build_ensemble(models, size).save(path)
    entries = tuple(
        {
            "name": member_name(k),
            "fold": k,
            "run_dir": f"fold-{k}",
            "gradcam_layer": "bn",
            "best_epoch": k + 1,
            "val_auc": 0.8 + 0.01 * k,
            "backend": keras.backend.backend(),
        }
        for k in range(members)
    )
    fields = {
        "input_size": size,
        "threshold": 0.4,
        "threshold_method": "youden",
        "temperature": 1.3,
        "calibration": {"fitted_on": "oof", "n": 48, "applied": True},
        "gradcam_layer": "bn",
        "model_name": "contract",
        "validation": {"auc": 0.83, "recall": 0.7},
        "members": entries,
        **card,
    }
    write_card(path, ModelCard(**fields))
    return path


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
