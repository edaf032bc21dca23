"""Single-frame grayscale DICOM → 2-D uint8 array, and the square resize everyone shares.

``convert`` and ``predict`` both go through :func:`read_dicom`, so one file always gives
the same pixels for training and for inference.

Pixel rule (:func:`to_uint8`), applied to the stored values of the frame:

1. Modality LUT: pydicom's ``apply_modality_lut`` (Modality LUT Sequence, or Rescale
   Slope/Intercept).
2. If a VOI LUT Sequence or Window Center/Width is present: pydicom's ``apply_voi_lut``
   with the first LUT/window (a LUT wins over a window, as in pydicom). Its output range
   is scaled linearly to [0, 255]: for a LUT, lowest to highest LUT entry; for a window,
   the values pydicom gives below and above the window.
3. Otherwise, stored values of an 8-bit unsigned image (Bits Stored 8) whose modality
   transform is an identity (no Modality LUT; no rescale, or slope 1 and intercept 0)
   pass through unchanged; this is the RSNA case. Any other image has the [min, max] of
   its values after step 1 scaled linearly to [0, 255]; a constant image becomes 0.
4. MONOCHROME1 is inverted (255 - x), so a higher value is always brighter.

Scaled values are rounded to the nearest integer.

Resize rule (:func:`resize_square`): a non-square image is centred on a black (0)
square whose side is its longer side, then area-averaged to ``size`` x ``size`` with
Pillow's BOX filter. An image that is already ``size`` x ``size`` is returned as is.

Refused with :class:`DicomError`: files pydicom cannot read (no ``DICM`` header,
unreadable), a DICOMDIR (a medium's index), non-image objects by Modality (SEG,
RTSTRUCT, RTPLAN, RTDOSE, RTRECORD, SR, PR, KO, REG; RTIMAGE is a radiograph and is
accepted), no Pixel Data, more than one frame, colour (Samples per Pixel != 1, or a
Photometric Interpretation other than MONOCHROME1/2), transfer syntaxes without an
installed decoder, and pixel data that fail to decode.

Fast path: a JPEG Baseline (1.2.840.10008.1.2.4.50) 8-bit unsigned image with an
identity modality transform and no VOI (every RSNA image) has its JPEG frame decoded by
Pillow directly, not through pydicom's ``pixel_array``. When ``size`` is given, Pillow's
``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling, see
:func:`_draft_scale`), and :func:`resize_square` takes it from there. The result matches
the full decode (pydicom ``pixel_array`` → :func:`to_uint8` → :func:`resize_square`) to
within a mean absolute difference of 1 grey level.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID, JPEGBaseline8Bit, MediaStorageDirectoryStorage

from pneumokeras.errors import UnreadableInputError
from pneumokeras.io.record import ImageRecord

# Modalities whose objects carry no viewable image (some carry Pixel Data all the same:
# SEG masks, RTDOSE grids).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"}
)
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


class DicomError(UnreadableInputError):
    """A DICOM file that cannot give a grayscale image; the message is a short reason."""


def read_dicom(path: str | os.PathLike[str], size: int | None = None) -> ImageRecord:
    """Reads a single-frame grayscale DICOM file as uint8 pixels.

    Args:
        path: DICOM file (with the ``DICM`` file header).
        size: side in pixels of the square output (see :func:`resize_square`);
            ``None`` keeps the image's own (H, W).

    Returns:
        The image (`format` `DICOM`): pixels (H, W) or (size, size) uint8, plus
        patient, view and acquisition tags.

    Raises:
        DicomError: the file is not a readable single-frame grayscale image; the message
            says why.
        ValueError: ``size`` is smaller than 1.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be ≥ 1. Received: size={size}")
    with warnings.catch_warnings():
        # pydicom warns about non-conformant values (a malformed UID, an implicit VR
        # where explicit was announced) as it reads on; the file is then read or
        # refused with a reason, so per-file warnings would only clutter the output.
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        return _read(path, size)


def _read(path: str | os.PathLike[str], size: int | None) -> ImageRecord:
    """`read_dicom` without its warnings filter."""
    ds = _read_dataset(path)
    if _is_plain_jpeg_baseline(ds):
        pixels = _decode_jpeg_baseline(ds, size)
    else:
        arr = _pixel_array(ds)
        try:
            pixels = to_uint8(ds, arr)
        except Exception as exc:
            raise DicomError(f"cannot map pixel values ({_reason(exc)})") from exc
        if size is not None:
            pixels = resize_square(pixels, size)
    syntax = ds.file_meta.TransferSyntaxUID
    return ImageRecord(
        pixels=pixels,
        patient_id=_text(ds, "PatientID"),
        format="DICOM",
        width=int(ds.Columns),
        height=int(ds.Rows),
        view=_text(ds, "ViewPosition"),
        sex=_text(ds, "PatientSex"),
        age=_text(ds, "PatientAge"),
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        photometric=_text(ds, "PhotometricInterpretation"),
        transfer_syntax=str(syntax),
        transfer_syntax_name=UID(syntax).name,
    )


def to_uint8(ds: pydicom.Dataset, arr: np.ndarray) -> np.ndarray:
    """Maps stored pixel values to display grey levels (the rule in the module docstring).

    Args:
        ds: the dataset ``arr`` came from (Modality LUT, VOI LUT and Image Pixel tags).
        arr: (H, W) stored values, any integer dtype of 8 to 16 bits, signed or not.

    Returns:
        (H, W) uint8 array, 0 = black.
    """
    values = apply_modality_lut(arr, ds)
    voi_range = _voi_output_range(ds)
    if voi_range is not None:
        out = scale_to_uint8(apply_voi_lut(values, ds), *voi_range)
    elif arr.dtype == np.uint8 and ds.get("BitsStored", 8) == 8 and _identity_modality(ds):
        out = arr
    else:
        out = scale_to_uint8(values, float(values.min()), float(values.max()))
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        out = 255 - out
    return out


def check_grayscale_uint8(pixels: np.ndarray) -> None:
    """Raises ValueError unless `pixels` is a 2-D uint8 array (one grayscale image)."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(
            f"pixels must be a 2-D uint8 array. Received: shape={pixels.shape}, "
            f"dtype={pixels.dtype}"
        )


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pads an image to a centred square with black (0), then area-averages it to size.

    Args:
        pixels: (H, W) uint8 image.
        size: output side in pixels.

    Returns:
        (size, size) uint8 image; ``pixels`` itself when it is already (size, size).

    Raises:
        ValueError: ``pixels`` is not 2-D uint8, or ``size`` is smaller than 1.
    """
    check_grayscale_uint8(pixels)
    if size < 1:
        raise ValueError(f"size must be ≥ 1. Received: size={size}")
    height, width = pixels.shape
    side = max(height, width)
    if height != width:
        square = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = pixels
        pixels = square
    if side == size:
        return pixels
    return np.array(Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX))


def _read_dataset(path: str | os.PathLike[str]) -> pydicom.Dataset:
    """Reads the file and refuses anything that is not a single-frame grayscale image."""
    # pydicom drops an element cut short by the end of the file, saying so only in a
    # warning; catch it to tell truncated pixel data from absent pixel data.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:
            raise DicomError("not a DICOM file") from exc
        except OSError as exc:
            raise DicomError(f"unreadable: {exc.strerror or _reason(exc)}") from exc
        except Exception as exc:
            raise DicomError(f"unreadable: {_reason(exc)}") from exc
    ended_early = any(str(w.message).startswith("End of file reached") for w in caught)

    if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        raise DicomError("a DICOMDIR (the index of a DICOM medium), not an image")
    modality = _text(ds, "Modality").upper()
    if modality in NON_IMAGE_MODALITIES:
        raise DicomError(f"non-image object ({modality})")
    if "PixelData" not in ds:
        raise DicomError("truncated or corrupt pixel data" if ended_early else "no pixel data")
    frames = _int(ds, "NumberOfFrames", 1)
    if frames > 1:
        raise DicomError(f"multi-frame ({frames} frames)")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric == "PALETTE COLOR":
        raise DicomError("palette colour image")
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples != 1:
        raise DicomError(f"colour image ({photometric or f'{samples} samples per pixel'})")
    if photometric not in _GRAYSCALE:
        raise DicomError(f"unsupported photometric interpretation ({photometric or 'none'})")
    missing = [key for key in ("Rows", "Columns", "BitsAllocated") if ds.get(key) is None]
    if missing:
        raise DicomError(f"incomplete image header (no {', '.join(missing)})")
    if ds.file_meta.get("TransferSyntaxUID") is None:
        raise DicomError("no transfer syntax UID")
    return ds


def _pixel_array(ds: pydicom.Dataset) -> np.ndarray:
    """Decodes the frame with pydicom: (H, W) stored values."""
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        raise DicomError(f"unsupported transfer syntax ({syntax.name})") from None
    if not decodable:
        raise DicomError(f"no decoder installed for {syntax.name}")
    try:
        return ds.pixel_array
    except AttributeError as exc:
        # pydicom's message names the missing Image Pixel element, e.g. Rows.
        raise DicomError(f"incomplete image header ({_reason(exc)})") from exc
    except Exception as exc:
        raise DicomError("truncated or corrupt pixel data") from exc


def _is_plain_jpeg_baseline(ds: pydicom.Dataset) -> bool:
    """Whether the fast path gives the same image as the full rule: JPEG Baseline, 8-bit
    unsigned, identity modality transform, no VOI. Malformed tags mean no."""
    try:
        return (
            ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
            and ds.get("BitsAllocated") == 8
            and ds.get("BitsStored", 8) == 8
            and ds.get("PixelRepresentation", 0) == 0
            and _identity_modality(ds)
            and _voi_lut_item(ds) is None
            and not _has_window(ds)
        )
    except (TypeError, ValueError):
        return False


def _decode_jpeg_baseline(ds: pydicom.Dataset, size: int | None) -> np.ndarray:
    """Fast path: Pillow decodes the JPEG frame, at reduced scale when size allows.

    Returns:
        (H, W) uint8, or (size, size) uint8 when size is given.
    """
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
        with Image.open(io.BytesIO(frame)) as img:
            if img.mode != "L" or img.size != (ds.Columns, ds.Rows):
                raise ValueError(f"JPEG is {img.mode} {img.size}, header says otherwise")
            if size is not None:
                scale = _draft_scale(img.width, img.height, size)
                # Pillow picks the largest scale that keeps the image at least this big.
                img.draft("L", (img.width // scale, img.height // scale))
            pixels = np.array(img)
    except Exception as exc:
        raise DicomError("truncated or corrupt pixel data") from exc
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels if size is None else resize_square(pixels, size)


def _draft_scale(width: int, height: int, size: int) -> int:
    """Denominator (8, 4, 2 or 1) of the DCT scale for decoding a width x height JPEG.

    The largest one that (a) divides the width, height and both padding offsets, so the
    reduced image pads to exactly the full-resolution square scaled down, and (b) leaves
    a square side that is a multiple of size, or else at least 2 x size (4 x size when
    padding adds black borders). Pillow's BOX filter takes whole source pixels, so after
    a fractional reduction it samples differently from the full-resolution resize, most
    at hard edges: about 1 grey level mean difference on RSNA at 1024 → 224 through 256,
    0.7 through 512.
    """
    side = max(width, height)
    offsets = ((side - width) // 2, (side - height) // 2)
    least = 2 if width == height else 4
    for scale in (8, 4, 2):
        reduced = side // scale
        aligned = all(n % scale == 0 for n in (width, height, *offsets))
        if aligned and reduced >= size and (reduced % size == 0 or reduced >= least * size):
            return scale
    return 1


def _identity_modality(ds: pydicom.Dataset) -> bool:
    """Whether apply_modality_lut leaves values as stored (no LUT; rescale absent or 1, 0)."""
    if ds.get("ModalityLUTSequence"):
        return False
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return True
    return float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0


def _voi_lut_item(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    """The first VOI LUT Sequence item when apply_voi_lut would use it, else None."""
    luts = ds.get("VOILUTSequence")
    if luts and "LUTDescriptor" in luts[0] and "LUTData" in luts[0]:
        return luts[0]
    return None


def _has_window(ds: pydicom.Dataset) -> bool:
    """Whether ds has the Window Center/Width that apply_voi_lut would use."""
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(low, high) that pydicom's apply_voi_lut can output for ds, None when it has no VOI.

    Found by passing probe values through apply_voi_lut itself instead of re-deriving
    pydicom's range rules: every LUT input for a VOI LUT, values far outside any window
    for a window.
    """
    item = _voi_lut_item(ds)
    if item is not None:
        entries, first, _ = item.LUTDescriptor
        probe = np.arange(first, first + (entries or 2**16))
    elif _has_window(ds):
        probe = np.array([-(2.0**52), 2.0**52])
    else:
        return None
    with np.errstate(over="ignore"):  # SIGMOID's exp overflows to its limit, as wanted
        out = apply_voi_lut(probe, ds)
    return float(out.min()), float(out.max())


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Maps [low, high] linearly onto [0, 255], rounded; all 0 when high <= low.

    The rule for any image without a window: DICOMs here, 16-bit PNGs in `images`.
    """
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """A string tag, stripped, '' when absent or empty."""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer tag, default when absent, empty or not a number."""
    try:
        return int(ds.get(keyword) or default)
    except (TypeError, ValueError):
        return default


def _reason(exc: BaseException) -> str:
    """First line of an exception message, for a one-line reason."""
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
