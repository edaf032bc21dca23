"""Shared test factories: one DICOM builder and one synth-then-convert helper.

- `dicom_dataset(pixels, photometric, bits_stored, **tags)`: a writable
  single-image DICOM (Explicit VR Little Endian, Secondary Capture) holding
  `pixels`, plus any tags by keyword; `with_frame` swaps its pixel data for one
  compressed frame, `jpeg_dicom_dataset` builds a JPEG Baseline one;
  `write_dicom` / `dicom_bytes` save it as a Part 10 file.
- `oversized_png(path)`: a tiny PNG announcing more pixels than Pillow decodes.
- `convert_synth(synth_dir, out, **options)`: `convert` of a `synth.generate`
  folder (its labels and class file); `synth_and_convert(root, ...)`: generate
  then convert, returning both folders.

No Keras: the converter imports TensorFlow for its shard writer only.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage


def dicom_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags: Any,
) -> Dataset:
    """A writable single-image dataset (Explicit VR Little Endian) holding `pixels`.

    Args:
        pixels: (H, W) integer array (or (H, W, 3) with photometric `RGB`).
        photometric: PhotometricInterpretation.
        bits_stored: BitsStored; default the dtype's width.
        tags: any further tags by keyword (`Modality="CR"`, `PatientID="p1"`).
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def with_frame(ds: Dataset, frame: bytes, syntax: str) -> Dataset:
    """`ds` with its Pixel Data replaced by one encapsulated compressed frame."""
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def jpeg_dicom_dataset(
    pixels: np.ndarray, photometric: str = "MONOCHROME2", quality: int = 90, **tags: Any
) -> Dataset:
    """A JPEG Baseline (8-bit) dataset of the (H, W) uint8 `pixels`, plus tags."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    ds = dicom_dataset(pixels, photometric, **tags)
    return with_frame(ds, buffer.getvalue(), JPEGBaseline8Bit)


def write_dicom(ds: Dataset, path: Path) -> Path:
    """Saves `ds` as a DICOM Part 10 file (preamble and `DICM`) at `path`; returns it."""
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_bytes(ds: Dataset) -> bytes:
    """`ds` as the bytes of a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def oversized_png(path: Path, side: int = 14000) -> Path:
    """A PNG whose header announces `side` × `side` 8-bit gray pixels, a few bytes on
    disk: over Pillow's decompression-bomb limit (2 × 89,478,485 pixels) from side
    13,380 on, so opening it raises `DecompressionBombError` before any decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def convert_synth(synth_dir: Path, out: Path, progress: bool = False, **options: Any) -> Any:
    """Converts a `synth.generate` folder (RSNA layout, its class file included).

    Args:
        synth_dir: the folder `synth.generate` wrote.
        out: the output folder.
        options: `ConvertOptions` fields (default `workers=0`).

    Returns:
        The `ConvertSummary`.
    """
    from pneumokeras.records.convert import ConvertOptions, convert
    from pneumokeras.synth import IMAGES_DIR

    fields = {
        "images": synth_dir / IMAGES_DIR,
        "labels": synth_dir / "stage_2_train_labels.csv",
        "class_info": synth_dir / "stage_2_detailed_class_info.csv",
        "out": out,
        "workers": 0,
        **options,
    }
    return convert(ConvertOptions(**fields), progress=progress)


class SynthConverted(NamedTuple):
    """The folders `synth_and_convert` made, and the conversion's summary."""

    synth: Path
    data: Path
    summary: Any


def synth_and_convert(
    root: Path,
    patients: int,
    synth_size: int,
    seed: int = 0,
    positive_fraction: float = 0.225,
    **options: Any,
) -> SynthConverted:
    """`synth.generate` into `root/synth`, then `convert_synth` into `root/tfrecords`.

    Args:
        root: an empty folder.
        patients, synth_size, seed, positive_fraction: `synth.generate`'s.
        options: `ConvertOptions` fields (`size`, fractions, folds, ...).
    """
    from pneumokeras.synth import generate

    synth, data = root / "synth", root / "tfrecords"
    generate(
        synth,
        patients=patients,
        size=synth_size,
        positive_fraction=positive_fraction,
        seed=seed,
        workers=0,
        progress=False,
    )
    return SynthConverted(synth, data, convert_synth(synth, data, **options))
