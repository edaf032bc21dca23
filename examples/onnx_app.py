"""Pneumonia probabilities from an exported ONNX model, with onnxruntime only.

    python examples/onnx_app.py runs/demo/model.onnx chest.dcm scans/other.png

Needs onnxruntime, NumPy, Pillow and pydicom (plus the pylibjpeg plugins for
compressed DICOMs other than JPEG Baseline); no Keras, TensorFlow or pneumokeras.
The ONNX file comes from `python cli.py export --model RUN --format onnx`. Its
metadata entry `pneumokeras.models.model_card` is the model card (JSON): the input size
S, the calibration temperature T, the decision threshold and the class names.

Preprocessing: the pixels `cli.py predict` gives the model (and `convert` stored
for training), step by step.

DICOM (single frame, MONOCHROME1/2):
  Fast path, when the file is JPEG Baseline, 8 bits stored unsigned, with no
  Modality LUT and no rescale (or slope 1, intercept 0), and no VOI LUT or window
  (every RSNA image): Pillow decodes the JPEG frame, at 1/8, 1/4 or 1/2 scale
  (`draft`, libjpeg's DCT scaling) when that keeps the padded square at least
  S (see `draft_scale`); MONOCHROME1 is inverted (255 - x); then "square" below.
  Otherwise:
  1. stored values: pydicom's `pixel_array`;
  2. Modality LUT: pydicom's `apply_modality_lut` (LUT or rescale slope/intercept);
  3. with a VOI LUT Sequence or Window Center/Width: pydicom's `apply_voi_lut`
     (first LUT/window; a LUT wins), its output range (lowest to highest LUT entry;
     for a window, what pydicom gives far below and far above it) mapped linearly
     onto [0, 255];
     without: 8-bit unsigned stored values with an identity modality transform
     pass unchanged; anything else has its [min, max] after step 2 mapped linearly
     onto [0, 255] (a constant image becomes 0);
  4. rounded to the nearest integer (uint8); MONOCHROME1 inverted (255 - x);
  then "square".
PNG / JPEG: Pillow; 16-bit or 32-bit integer grayscale has its [min, max] mapped
  linearly onto [0, 255] (rounded); anything else `convert("L")` (ITU-R 601-2
  luma, exact for a gray picture saved as RGB; `cli.py predict` refuses real
  colour, which this example converts all the same); then "square".
Square: a non-square image is centred on a black (0) square of its longer side
  (offsets rounded down), then area-averaged to S x S by Pillow's BOX filter
  (skipped when it is S x S already).
Model input: (N, S, S, 1) float32 with the grey levels 0..255 as they are (the
network rescales them itself).

Output: softmax `[normal, pneumonia]`; the pneumonia probability p is clipped to
[1e-7, 1 - 1e-7] and calibrated, sigmoid(logit(p) / T); the label is pneumonia
when the calibrated probability >= threshold.

Research and education only; not for diagnosis.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import onnxruntime
import pydicom
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEGBaseline8Bit

CARD_KEY = "pneumokeras.models.model_card"
EPSILON = 1e-7


# ----------------------------------------------------------------- the model and its card


def load(model_path: str) -> tuple[onnxruntime.InferenceSession, dict]:
    """The onnxruntime session (CPU) and the model card embedded in the file."""
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if CARD_KEY not in metadata:
        raise SystemExit(f"{model_path} has no {CARD_KEY} metadata: export it with cli.py export")
    return session, json.loads(metadata[CARD_KEY])


def calibrate(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of pneumonia probabilities: sigmoid(logit(p) / T)."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / temperature))


# ----------------------------------------------------------------- preprocessing


def square(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 → centred on a black square, BOX-resized to (size, size)."""
    height, width = pixels.shape
    side = max(height, width)
    if height != width:
        padded = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels = padded
    if side == size:
        return pixels
    return np.array(Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX))


def scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """[low, high] linearly onto [0, 255], rounded; all 0 when high <= low."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def identity_modality(ds: pydicom.Dataset) -> bool:
    """No Modality LUT, and rescale absent or slope 1, intercept 0."""
    if ds.get("ModalityLUTSequence"):
        return False
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return True
    return float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0


def voi_lut_item(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    luts = ds.get("VOILUTSequence")
    if luts and "LUTDescriptor" in luts[0] and "LUTData" in luts[0]:
        return luts[0]
    return None


def has_window(ds: pydicom.Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def voi_output_range(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(low, high) that apply_voi_lut can output for ds; None without a LUT or window."""
    item = voi_lut_item(ds)
    if item is not None:
        entries, first, _ = item.LUTDescriptor
        probe = np.arange(first, first + (entries or 2**16))
    elif has_window(ds):
        probe = np.array([-(2.0**52), 2.0**52])
    else:
        return None
    with np.errstate(over="ignore"):
        out = apply_voi_lut(probe, ds)
    return float(out.min()), float(out.max())


def draft_scale(width: int, height: int, size: int) -> int:
    """JPEG DCT scale denominator (8, 4, 2 or 1) for the fast path.

    The largest that divides width, height and both padding offsets, and leaves a
    square side that is a multiple of size or at least 2 x size (4 x size when the
    image is not square).
    """
    side = max(width, height)
    offsets = ((side - width) // 2, (side - height) // 2)
    least = 2 if width == height else 4
    for denominator in (8, 4, 2):
        reduced = side // denominator
        aligned = all(n % denominator == 0 for n in (width, height, *offsets))
        if aligned and reduced >= size and (reduced % size == 0 or reduced >= least * size):
            return denominator
    return 1


def dicom_pixels(path: str, size: int) -> np.ndarray:
    """A single-frame grayscale DICOM → (size, size) uint8 (see the module docstring)."""
    ds = pydicom.dcmread(path)
    if int(ds.get("NumberOfFrames") or 1) > 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise ValueError("not a single-frame grayscale image")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"unsupported photometric interpretation {photometric or '(none)'}")
    plain_jpeg = (
        ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        and ds.get("BitsAllocated") == 8
        and ds.get("BitsStored", 8) == 8
        and ds.get("PixelRepresentation", 0) == 0
        and identity_modality(ds)
        and voi_lut_item(ds) is None
        and not has_window(ds)
    )
    if plain_jpeg:
        with Image.open(io.BytesIO(get_frame(ds.PixelData, 0, number_of_frames=1))) as img:
            denominator = draft_scale(img.width, img.height, size)
            img.draft("L", (img.width // denominator, img.height // denominator))
            out = np.array(img)
    else:
        stored = ds.pixel_array
        values = apply_modality_lut(stored, ds)
        voi_range = voi_output_range(ds)
        if voi_range is not None:
            out = scale(apply_voi_lut(values, ds), *voi_range)
        elif stored.dtype == np.uint8 and ds.get("BitsStored", 8) == 8 and identity_modality(ds):
            out = stored
        else:
            out = scale(values, float(values.min()), float(values.max()))
    if photometric == "MONOCHROME1":
        out = 255 - out
    return square(np.ascontiguousarray(out, dtype=np.uint8), size)


def image_pixels(path: str, size: int) -> np.ndarray:
    """A PNG or JPEG → (size, size) uint8 (see the module docstring)."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            values = np.asarray(img)
            pixels = scale(values, float(values.min()), float(values.max()))
        else:
            pixels = np.asarray(img.convert("L"))
    return square(np.ascontiguousarray(pixels, dtype=np.uint8), size)


def prepare(path: str, size: int) -> np.ndarray:
    """Any supported file → (size, size) uint8, the pixels the model was trained on."""
    if path.lower().endswith(".dcm"):
        return dicom_pixels(path, size)
    return image_pixels(path, size)


# ----------------------------------------------------------------- the program


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python examples/onnx_app.py MODEL.onnx IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    session, card = load(argv[0])
    size = int(card["input_size"])
    paths, images, failed = [], [], 0
    for path in argv[1:]:
        try:
            images.append(prepare(path, size))
            paths.append(path)
        except Exception as err:
            print(f"{path}: error {type(err).__name__}: {err}", file=sys.stderr)
            failed += 1
    if images:
        batch = np.stack(images)[..., None].astype(np.float32)  # (N, S, S, 1), 0..255
        name = session.get_inputs()[0].name
        raw = session.run(None, {name: batch})[0][:, 1]
        calibrated = calibrate(raw, float(card["temperature"]))
        for path, p in zip(paths, calibrated, strict=True):
            label = card["class_names"][int(p >= float(card["threshold"]))]
            print(f"{path}: probability {p:.7f} label {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
