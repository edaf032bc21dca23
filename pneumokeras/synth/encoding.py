"""A synthetic patient's image as an RSNA-like DICOM file (CR, JPEG Baseline)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid

from pneumokeras.synth.spec import PatientSpec

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
# Pixel spacing of a 1024-pixel image, mm (RSNA images are 0.14-0.17 mm).
_SPACING_1024_MM = 0.143


def patient_age(years: int) -> str:
    """A DICOM Age String for whole years: 62 → '062Y' (three digits and a unit)."""
    if not 0 <= years <= 999:
        raise ValueError(f"years must be 0-999. Received: years={years}")
    return f"{years:03d}Y"


def encode_dicom(spec: PatientSpec, image: np.ndarray) -> bytes:
    """Encodes an image as an RSNA-like CR DICOM file with a JPEG Baseline frame.

    UIDs derive from the patient id and dates are fixed, so the bytes depend only
    on `spec` and `image`.

    Sex, age (`patient_age`) and view go to PatientSex, PatientAge and
    ViewPosition; with `spec.detector.monochrome1` the pixels are stored inverted
    and tagged MONOCHROME1, so a reader that honours the tag sees `image` again.

    Args:
        spec: the patient (identity, metadata and detector).
        image: uint8 array of shape `(size, size)` as displayed (larger = denser).

    Returns:
        The complete DICOM file (preamble, file meta, data set).
    """
    size = image.shape[0]
    jpeg = io.BytesIO()
    inverted = spec.detector.monochrome1
    stored = 255 - image if inverted else image
    Image.fromarray(stored, mode="L").save(jpeg, format="JPEG", quality=95)
    sop_uid = generate_uid(entropy_srcs=[spec.patient_id, "sop"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CR_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "19010101"
    ds.StudyTime = "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {spec.view}"
    ds.StudyDescription = "synthetic chest phantom (pneumokeras)"
    ds.PatientName = spec.patient_id
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = spec.sex
    ds.PatientAge = patient_age(spec.age)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = spec.view
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[spec.patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[spec.patient_id, "series"])
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if inverted else "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    spacing = round(_SPACING_1024_MM * spec.detector.field_of_view * 1024 / size, 6)
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
