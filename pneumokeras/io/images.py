"""Image files (DICOM, PNG, JPEG) → the square 8-bit grayscale pixels the model takes.

One reader for every command and front end that takes image files (`predict`,
`explain`, the app), and the same pixels `convert` stores for training:

- DICOM (`*.dcm`): `dicom.read_dicom(path, size=S)`, the very call `convert`
  stores as PNG.
- PNG / JPEG: Pillow → 8-bit grayscale (`convert("L")`) → `dicom.resize_square`
  (centred on a black square, BOX resize). A 16-bit grayscale PNG is first scaled
  linearly from its [min, max] to [0, 255] (Pillow's `"L"` conversion would clip
  it), the rule `dicom.to_uint8` applies to DICOMs without a window.
- Colour (`read_gray`, one rule for every reader): an RGB (or palette, RGBA,
  CMYK) picture whose channels agree is a gray picture saved in colour (common in
  Kermany's and NIH's files) and is converted like any other (`convert("L")`,
  which gives the common value when the channels are equal); its mode (`RGB`)
  stays in `ImageRecord.mode`, so callers can note the conversion. A picture in
  which more than `COLOUR_SHARE` of the pixels have channels spread by more than
  `COLOUR_TOLERANCE` grey levels is real colour (a photo, a coloured overlay) and
  is refused with `ImageError("colour image ...")`. The tolerance absorbs JPEG
  rounding of a gray picture (its chroma is neutral, its channels differ by 1 or
  2 levels) and a small coloured mark (under 1 % of the picture).

`read_image` also returns what the file says about itself (`record.ImageRecord`):
for a DICOM its modality, body part, view, patient sex and age, photometric
interpretation, transfer syntax and stored size; for PNG/JPEG its format, Pillow
mode and size. Callers use them
to warn about inputs the model was not trained for (an MR, a colour photo).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumokeras.errors import UnreadableInputError, UserError
from pneumokeras.io.dicom import read_dicom, resize_square, scale_to_uint8
from pneumokeras.io.record import ImageRecord

IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")
# Pillow modes read as one gray channel; the deep ones are scaled from [min, max].
GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
COLOUR_TOLERANCE = 24  # grey levels of channel spread (max - min) still called gray
COLOUR_SHARE = 0.01  # share of pixels beyond the tolerance that makes a picture colour


class ImageError(UnreadableInputError):
    """A PNG/JPEG file that cannot give a grayscale image; the message says why."""


def find_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expands files and folders into the list of image files to read.

    Folders are searched recursively for `*.dcm, *.png, *.jpg, *.jpeg` (any case),
    sorted; files named explicitly are kept whatever their suffix (an unsupported
    one is reported when read). Duplicates are dropped, first occurrence kept.

    Raises:
        UserError: a path that does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"input {path} does not exist")
    return list(dict.fromkeys(found))


def read_image(path: str | os.PathLike[str], size: int) -> ImageRecord:
    """Reads one DICOM, PNG or JPEG exactly as `convert` would prepare it.

    Args:
        path: image file; the suffix (any case) picks the reader.
        size: side of the square output, pixels.

    Returns:
        The pixels `(size, size)` uint8 with the patient id and the file's facts.

    Raises:
        DicomError: unreadable DICOM.
        ImageError: unreadable PNG/JPEG, a colour picture (see `read_gray`) or an
            unsupported suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        return read_dicom(path, size=size)
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"unsupported file type {suffix or '(no suffix)'}")
    try:
        with Image.open(path) as img:
            pixels = read_gray(img)
            kind, mode, width, height = img.format or "", img.mode, img.width, img.height
    except UnidentifiedImageError as err:
        raise ImageError("not a readable PNG/JPEG image") from err
    except OSError as err:
        raise ImageError(f"truncated or corrupt image ({err})") from err
    pixels = resize_square(np.ascontiguousarray(pixels, dtype=np.uint8), size)
    return ImageRecord(
        pixels=pixels, patient_id="", format=kind, mode=mode, width=width, height=height
    )


def read_gray(img: Image.Image) -> np.ndarray:
    """An open Pillow image → (H, W) uint8 gray pixels, by the colour rule above.

    Raises:
        ImageError: real colour (channels differ beyond the tolerance).
        OSError: truncated or corrupt image data (Pillow decodes here).
    """
    if img.mode in _DEEP_MODES:
        values = np.asarray(img)
        return scale_to_uint8(values, float(values.min()), float(values.max()))
    if img.mode not in GRAY_MODES:
        rgb = np.asarray(img.convert("RGB"))
        spread = rgb.max(axis=2) - rgb.min(axis=2)  # uint8: max ≥ min, no wrap-around
        coloured = float(np.mean(spread > COLOUR_TOLERANCE))
        if coloured > COLOUR_SHARE:
            raise ImageError(
                f"colour image ({img.mode} channels differ in {coloured:.0%} of the pixels); "
                "only grayscale radiographs are read"
            )
    return np.asarray(img.convert("L"))


def load_image(path: str | os.PathLike[str], size: int) -> tuple[np.ndarray, str]:
    """`read_image` as a `(pixels, patient_id)` pair: (size, size) uint8 and the
    DICOM PatientID tag ('' for PNG/JPEG or when absent).

    Raises:
        DicomError: unreadable DICOM.
        ImageError: unreadable PNG/JPEG or an unsupported suffix.
    """
    record = read_image(path, size)
    return record.pixels, record.patient_id
