"""One image file read for the model: its pixels and what the file says about itself.

`dicom.read_dicom` and `images.read_image` both return an `ImageRecord`, so
every caller (convert, predict, explain, export, the app) reads the same fields
whatever the file was.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image file read for the model, with the facts its file records.

    Attributes:
        pixels: `(size, size)` uint8 when read with a size (exactly what `convert`
            stores), else the image's own `(height, width)`; 0 = black.
        patient_id: DICOM PatientID tag; '' for PNG/JPEG or when absent.
        format: `DICOM`, or Pillow's format name (`PNG`, `JPEG`) of the content,
            whatever the file's suffix says.
        width, height: the stored image's size before padding and resizing, pixels
            (DICOM Columns and Rows; a PNG/JPEG's upright size after its EXIF
            orientation).
        mode: Pillow mode of a PNG/JPEG (`L`, `RGB`, `I;16`, ...); '' for DICOM.
        view: DICOM ViewPosition (`AP`, `PA`, ...); '' when absent or not DICOM.
        sex: DICOM PatientSex; '' when absent or not DICOM.
        age: DICOM PatientAge as written (`62`, `062Y`); '' when absent or not DICOM.
        modality: DICOM Modality (`CR`, `DX`, `MR`, ...); '' when absent or not DICOM.
        body_part: DICOM BodyPartExamined (`CHEST`, ...); '' when absent or not DICOM.
        photometric: DICOM PhotometricInterpretation (`MONOCHROME1`/`MONOCHROME2`).
        transfer_syntax: DICOM transfer syntax UID; '' for PNG/JPEG.
        transfer_syntax_name: its name (`JPEG Baseline (Process 1)`, ...); '' for PNG/JPEG.
        note: '' or how the file was converted beyond the usual rule, for callers to
            show (`RGB image of a gray picture: made gray`, `EXIF orientation 6
            applied (turned 90° clockwise)`); several are joined by `; `.
    """

    pixels: np.ndarray
    patient_id: str
    format: str
    width: int
    height: int
    mode: str = ""
    view: str = ""
    sex: str = ""
    age: str = ""
    modality: str = ""
    body_part: str = ""
    photometric: str = ""
    transfer_syntax: str = ""
    transfer_syntax_name: str = ""
    note: str = ""

    def facts(self) -> dict[str, Any]:
        """Every attribute but the pixels, as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pixels"}
