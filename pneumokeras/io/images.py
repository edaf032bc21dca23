"""Image files (DICOM, PNG, JPEG) → the square 8-bit grayscale pixels the model takes.

One reader for every command and front end that takes image files (`convert`,
`predict`, `explain`, `export --check-images`, the app), so training and
inference see the same pixels. The content decides how a file is read, never
its name (`formats.detect_format`):

- DICOM (the `DICM` marker): `dicom.read_dicom(path, size=S)`. A file named
  `.dcm`/`.dicom` whose content is unknown goes there too, to be refused with
  the DICOM reader's reason.
- PNG / JPEG (their signatures): Pillow, the EXIF orientation applied
  (`PIL.ImageOps.exif_transpose`: a phone photo of a film stored sideways comes
  out upright), → 8-bit grayscale → `dicom.resize_square` (centred on a black
  square, BOX resize). A 16-bit grayscale PNG is first scaled linearly from its
  [min, max] to [0, 255] (Pillow's `"L"` conversion would clip it), the rule
  `dicom.to_uint8` applies to DICOMs without a window.
- Other image formats (TIFF, GIF, BMP, WebP, JPEG 2000, ...) are refused by name
  ("unsupported format TIFF"); anything else as "not a DICOM, PNG or JPEG file".
- An image over Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS` × 2,
  ≈ 179 million pixels) is refused with its pixel count, like any unreadable file.
- Colour (`read_gray`, one rule for every reader): an RGB (or palette, RGBA,
  CMYK) picture whose channels agree is a gray picture saved in colour (common in
  Kermany's and NIH's files) and is converted like any other (`convert("L")`,
  which gives the common value when the channels are equal). A picture in which
  more than `COLOUR_SHARE` of the pixels have channels spread by more than
  `COLOUR_TOLERANCE` grey levels is real colour (a photo, a coloured overlay) and
  is refused with `ImageError("colour image ...")`. The tolerance absorbs JPEG
  rounding of a gray picture (its chroma is neutral, its channels differ by 1 or
  2 levels) and a small coloured mark (under 1 % of the picture).

Every refusal is an `ImageError` or `dicom.DicomError` (both
`UnreadableInputError`) with a one-line reason, so a command reading many files
records a row for the bad one and goes on. What was done beyond the usual rule
(an EXIF orientation applied, a colour file made gray) is said in
`ImageRecord.note`, for callers to show.

`read_image` also returns what the file says about itself (`record.ImageRecord`):
for a DICOM its modality, body part, view, patient sex and age, photometric
interpretation, transfer syntax and stored size; for PNG/JPEG its format, Pillow
mode and size. Callers use them to warn about inputs the model was not trained
for (an MR, a colour photo).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumokeras.errors import UnreadableInputError, UserError
from pneumokeras.io.dicom import read_dicom, resize_square, scale_to_uint8
from pneumokeras.io.formats import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    detect_format,
    file_problem,
    is_hidden,
    looks_like_image,
    unsupported,
)
from pneumokeras.io.record import ImageRecord

__all__ = ["IMAGE_SUFFIXES", "ImageError", "ImageRecord", "find_inputs", "read_image"]

# Pillow modes read as one gray channel; the deep ones are scaled from [min, max].
GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
COLOUR_TOLERANCE = 24  # grey levels of channel spread (max - min) still called gray
COLOUR_SHARE = 0.01  # share of pixels beyond the tolerance that makes a picture colour
# EXIF Orientation (tag 0x0112) → what `exif_transpose` does to make the image upright.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_TURNS = {
    2: "flipped left-right",
    3: "turned 180°",
    4: "flipped top-bottom",
    5: "transposed",
    6: "turned 90° clockwise",
    7: "transversed",
    8: "turned 90° counter-clockwise",
}


class ImageError(UnreadableInputError):
    """A file that cannot give a grayscale image (not DICOM); the message says why."""


def _scan(folder: Path) -> Iterator[Path]:
    """Files below `folder` that a scan takes (see `find_inputs`), sorted."""
    for path in sorted(folder.rglob("*")):
        if is_hidden(path.relative_to(folder)) or path.is_dir():
            continue
        if looks_like_image(path):
            yield path


def find_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expands files and folders into the list of image files to read.

    Folders are searched recursively, sorted, for files that hold an image by
    their content (DICOM, PNG, JPEG; other image formats too, which reading then
    refuses by name) or carry an image suffix (`.dcm`, `.dicom`, `.png`, `.jpg`,
    `.jpeg`, any case); hidden files and folders (`.name`) are left out, and a
    dangling symbolic link is kept so that reading it reports it. A file named
    explicitly is kept whatever it is (hidden, no suffix, a dangling link).
    Paths naming the same file (`a/../a/x.png` and `a/x.png`, a link and its
    target) are kept once, first occurrence.

    Raises:
        UserError: a path that does not exist (and is no symbolic link).
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += _scan(path)
        elif path.exists() or path.is_symlink():
            found.append(path)
        else:
            raise UserError(f"input {path} does not exist")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_image(path: str | os.PathLike[str], size: int) -> ImageRecord:
    """Reads one DICOM, PNG or JPEG exactly as `convert` would prepare it.

    Args:
        path: image file; its content decides the reader (see the module docstring).
        size: side of the square output, pixels.

    Returns:
        The pixels `(size, size)` uint8 with the patient id, the file's facts and
        a note of anything done beyond the usual rule.

    Raises:
        DicomError: unreadable DICOM.
        ImageError: anything else that gives no gray image: a missing file, a
            dangling link, an empty or unknown file, another image format, an
            unreadable or oversized PNG/JPEG, a colour picture (see `read_gray`).
    """
    path = Path(path)
    problem = file_problem(path)
    if problem:
        raise ImageError(problem)
    try:
        kind = detect_format(path)
        empty = path.stat().st_size == 0
    except OSError as err:
        raise ImageError(f"cannot read: {err.strerror or err}") from err
    if kind == "DICOM" or (not kind and path.suffix.lower() in DICOM_SUFFIXES and not empty):
        return read_dicom(path, size=size)
    if empty:
        raise ImageError("empty file (0 bytes)")
    if kind not in ("PNG", "JPEG"):
        if kind:
            raise ImageError(unsupported(kind))
        raise ImageError("not a DICOM, PNG or JPEG file")
    return _read_picture(path, kind, size)


def _too_large(err: Exception) -> ImageError:
    """The one-line refusal of an image over Pillow's decompression-bomb limit."""
    counts = [int(n) for n in re.findall(r"\d+", str(err))]
    pixels = f"{counts[0]:,} pixels, " if counts else ""
    return ImageError(
        f"image too large to decode ({pixels}over Pillow's limit of "
        f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,})"
    )


def _read_picture(path: Path, kind: str, size: int) -> ImageRecord:
    """A PNG or JPEG (`kind`, by content) → its record (see `read_image`)."""
    notes = []
    try:
        # Pillow warns (on stderr, once per file) about images between its pixel
        # limit and twice it, which are read like any other, and about corrupt
        # metadata (EXIF), which is then ignored: nothing for the user to act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as opened:
                mode = opened.mode
                img, turn = _upright(opened)
                if turn:
                    notes.append(turn)
                pixels = read_gray(img)
                width, height = img.width, img.height
    except ImageError:
        raise  # the colour rule's refusal, already one line
    except Image.DecompressionBombError as err:
        raise _too_large(err) from err
    except UnidentifiedImageError as err:
        raise ImageError("not a readable PNG/JPEG image") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # Pillow's ways of saying the data end early or make no sense.
        raise ImageError(f"truncated or corrupt image ({_first_line(err)})") from err
    if mode not in GRAY_MODES:
        notes.append(f"{mode} image of a gray picture: made gray")
    return ImageRecord(
        pixels=resize_square(np.ascontiguousarray(pixels, dtype=np.uint8), size),
        patient_id="",
        format=kind,
        mode=mode,
        width=width,
        height=height,
        note="; ".join(notes),
    )


def _upright(img: Image.Image) -> tuple[Image.Image, str]:
    """The image turned as its EXIF orientation says, and a note of it ('' when none)."""
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF: Pillow has several ways to fail on it
        return img, ""
    if orientation not in EXIF_TURNS:
        return img, ""
    turned = ImageOps.exif_transpose(img)
    return turned, f"EXIF orientation {orientation} applied ({EXIF_TURNS[orientation]})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


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
        ImageError: anything else that gives no gray image (see `read_image`).
    """
    record = read_image(path, size)
    return record.pixels, record.patient_id
