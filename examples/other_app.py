"""Use a pneumokeras model from another application, without pneumokeras.

    KERAS_BACKEND=jax python examples/other_app.py runs/demo/model.keras chest.png

Everything the model needs is in two files: model.keras (stock Keras layers; takes
(N, S, S, 1) grayscale pixels in [0, 255], returns softmax [normal, pneumonia]) and
model.json beside it (input size, calibration temperature, decision threshold).
An 8-bit PNG/JPEG is prepared as `pneumokeras predict` does: grayscale, centred on
a black square, area-averaged (BOX) to S x S.

Research and education only; not for diagnosis.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
from PIL import Image


def prepare(image_path: str, size: int) -> np.ndarray:
    """PNG/JPEG → (1, size, size, 1) float32 pixels in [0, 255]."""
    image = Image.open(image_path).convert("L")
    side = max(image.size)
    square = Image.new("L", (side, side), 0)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    square = square.resize((size, size), Image.Resampling.BOX)
    return np.asarray(square, dtype=np.float32)[None, :, :, None]


def main(model_path: str, image_path: str) -> None:
    model = keras.saving.load_model(model_path)
    meta = json.loads((Path(model_path).parent / "model.json").read_text())
    pixels = prepare(image_path, meta["input_size"])
    p = float(model.predict(pixels, verbose=0)[0, 1])

    # Temperature scaling: softmax(log-probabilities / T), which for two classes is
    # sigmoid(logit / T) with logit = log(p / (1 - p)).
    p = min(max(p, 1e-7), 1 - 1e-7)
    logit = np.log(p) - np.log1p(-p)
    calibrated = 1.0 / (1.0 + np.exp(-logit / meta["temperature"]))

    label = meta["class_names"][int(calibrated >= meta["threshold"])]
    print(f"probability {calibrated:.6f} label {label}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/other_app.py MODEL.keras IMAGE.png")
    main(sys.argv[1], sys.argv[2])
