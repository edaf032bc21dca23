"""Use a pneumokeras model from another application, without pneumokeras.

    KERAS_BACKEND=jax python examples/other_app.py runs/demo/model.keras chest.png other.jpg
    python examples/other_app.py runs/cv/ensemble.keras chest.png

Everything the model needs is in two files: the `.keras` file (stock Keras layers;
takes (N, S, S, 1) grayscale pixels in [0, 255], returns softmax [normal,
pneumonia]) and its card beside it, named after it (`model.keras` → `model.json`,
`ensemble.keras` → `ensemble.json`: input size, calibration temperature, decision
threshold). A run folder holding `model.keras` works too.

PNG and JPEG files are prepared as `pneumokeras predict` prepares them, so both
give the same probability:

- 8-bit gray (or gray saved as RGB): Pillow's `convert("L")`;
- 16- or 32-bit gray: its [min, max] mapped linearly onto [0, 255], rounded (a
  constant image becomes 0);
- colour (more than 1 % of the pixels with channels 25 or more grey levels apart):
  refused, as predict refuses it;
- then centred on a black square of the longer side, area-averaged (BOX) to S x S.

Anything else is refused with one line per file: DICOM files (recognised by their
content, whatever their name, also when Pillow could read their preamble as a
TIFF) need the DICOM reader of `pneumokeras predict` (or `examples/onnx_app.py`),
and other formats (TIFF, GIF, BMP, ...) are not read. The exit code is 0 when at
least one file was predicted, 2 otherwise.

Research and education only; not for diagnosis.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("PNG", "JPEG")
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
COLOUR_TOLERANCE = 24  # grey levels of channel spread still called gray (as predict)
COLOUR_SHARE = 0.01  # share of pixels beyond it that makes a picture colour (as predict)


class Refused(ValueError):
    """A file this example does not read; the message says why, in one line."""


def model_and_card(model_path: str) -> tuple[Path, Path]:
    """The `.keras` file and its card: `x.keras` → `x.json`; a folder → its model.keras."""
    path = Path(model_path)
    if path.is_dir():
        path = path / "model.keras"
    card = path.with_suffix(".json")
    if not path.is_file():
        raise SystemExit(f"error: no model at {path}")
    if not card.is_file():
        raise SystemExit(f"error: no model card {card} beside {path.name}")
    return path, card


def gray_pixels(image: Image.Image) -> np.ndarray:
    """An open PNG/JPEG → (H, W) uint8 gray, by predict's rules (module docstring)."""
    if image.mode in DEEP_MODES:
        values = np.asarray(image).astype(np.float64)
        low, high = values.min(), values.max()
        if high <= low:
            return np.zeros(values.shape, np.uint8)
        return np.rint(np.clip((values - low) * (255.0 / (high - low)), 0, 255)).astype(np.uint8)
    if image.mode not in ("1", "L", "LA"):
        rgb = np.asarray(image.convert("RGB"))
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        coloured = float(np.mean(spread > COLOUR_TOLERANCE))
        if coloured > COLOUR_SHARE:
            raise Refused(f"colour image ({coloured:.0%} of the pixels); only gray radiographs")
    return np.asarray(image.convert("L"))


def prepare(image_path: str, size: int) -> np.ndarray:
    """PNG/JPEG → (1, size, size, 1) float32 pixels in [0, 255].

    Raises:
        Refused: a DICOM, another format, colour, or a file Pillow cannot read.
    """
    with open(image_path, "rb") as handle:
        head = handle.read(132)
    if head[128:132] == b"DICM":
        raise Refused(
            "a DICOM file: read it with `pneumokeras predict` (this example reads PNG/JPEG)"
        )
    try:
        with Image.open(image_path) as image:
            if image.format not in FORMATS:
                raise Refused(f"unsupported format {image.format}: this example reads PNG and JPEG")
            pixels = gray_pixels(image)
    except (OSError, Image.DecompressionBombError) as err:
        raise Refused(f"not a readable PNG/JPEG image ({err})") from None
    height, width = pixels.shape
    side = max(height, width)
    square = np.zeros((side, side), np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = pixels
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BOX))
    return square.astype(np.float32)[None, :, :, None]


def calibrated(p: float, temperature: float) -> float:
    """Temperature scaling: sigmoid(logit(p) / T), p clipped away from 0 and 1."""
    p = min(max(p, 1e-7), 1 - 1e-7)
    logit = np.log(p) - np.log1p(-p)
    return float(1.0 / (1.0 + np.exp(-logit / temperature)))


def main(model_path: str, image_paths: list[str]) -> int:
    import keras  # after the checks above: a refused call never waits for Keras

    path, card_path = model_and_card(model_path)
    card = json.loads(card_path.read_text())
    model = keras.saving.load_model(path)
    predicted = 0
    for image_path in image_paths:
        try:
            pixels = prepare(image_path, card["input_size"])
        except (Refused, FileNotFoundError) as err:
            print(f"{image_path}: error: {err}", file=sys.stderr)
            continue
        p = float(model.predict(pixels, verbose=0)[0, 1])
        probability = calibrated(p, card["temperature"])
        label = card["class_names"][int(probability >= card["threshold"])]
        print(f"{image_path}: probability {probability:.6f} label {label}")
        predicted += 1
    return 0 if predicted else 2


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python examples/other_app.py MODEL.keras IMAGE.png [IMAGE ...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
