"""Tests for pneumokeras.app.uploads: an upload read as `convert`/`predict` read files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pneumokeras.app.uploads import UploadError, read_upload
from pneumokeras.io.dicom import read_dicom

SIZE = 32


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> bytes:
    """An uncompressed DICOM file in memory (pydicom), with extra tags."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "CR"
    ds.PatientID = "app-test"
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_upload_gives_the_converters_pixels(examples, tmp_path, private_tmp):
    from pneumokeras.records.convert import encode_png

    path = tmp_path / "case.dcm"
    path.write_bytes(examples[0].data)
    # What convert stores for this DICOM, decoded as training decodes it.
    stored = np.asarray(Image.open(io.BytesIO(encode_png(read_dicom(path, SIZE).pixels))))
    # Uploaded without a suffix: the content says DICOM.
    record = read_upload("case", examples[0].data, SIZE, limit_mb=10)
    np.testing.assert_array_equal(record.pixels, stored)
    assert record.format == "DICOM"
    assert record.modality == "CR"
    assert record.width == 256
    assert record.transfer_syntax_name == "JPEG Baseline (Process 1)"
    assert list(private_tmp.iterdir()) == []  # the temporary copy is gone


def test_png_and_jpeg_uploads_whatever_their_names(private_tmp, png_bytes):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (20, 40), dtype=np.uint8)
    record = read_upload("scan.PNG", png_bytes(wide), SIZE, limit_mb=10)
    assert record.pixels.shape == (SIZE, SIZE)
    assert record.format == "PNG"
    assert (record.width, record.height) == (40, 20)
    # A JPEG called .png is read by its content.
    assert read_upload("photo.png", png_bytes(wide, "JPEG"), SIZE, 10).format == "JPEG"
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("empty.dcm", b"", "empty file"),
        ("notes.txt", b"patientId,Target\n", "not a DICOM, PNG or JPEG file"),
        ("fake.dcm", b"no preamble here", "not a DICOM file"),
        ("broken.png", b"\x89PNG\r\n\x1a\n truncated", "truncated or corrupt image"),
        ("frames.dcm", dicom_bytes(np.zeros((3, 8, 8), np.uint8)), "multi-frame (3 frames)"),
        ("colour.dcm", dicom_bytes(np.zeros((8, 8, 3), np.uint8), "RGB"), "colour image (RGB)"),
        (
            "mask.dcm",
            dicom_bytes(np.zeros((8, 8), np.uint8), Modality="SEG"),
            "non-image object (SEG)",
        ),
    ],
)
def test_bad_uploads_are_one_line_reasons(name, data, reason, private_tmp):
    with pytest.raises(UploadError) as info:
        read_upload(name, data, SIZE, limit_mb=10)
    assert str(info.value).startswith(reason)
    assert "\n" not in str(info.value)
    assert list(private_tmp.iterdir()) == []


def test_other_formats_are_refused_by_name_whatever_the_upload_is_called(private_tmp, png_bytes):
    tiff = png_bytes(np.zeros((8, 8), np.uint8), "TIFF")
    with pytest.raises(UploadError, match=r"^unsupported format TIFF"):
        read_upload("scan.png", tiff, SIZE, limit_mb=10)
    assert list(private_tmp.iterdir()) == []


def test_truncated_dicom_and_upload_limit(examples):
    with pytest.raises(UploadError, match=r"^truncated or corrupt pixel data$"):
        read_upload("cut.dcm", examples[0].data[:3000], SIZE, limit_mb=10)
    with pytest.raises(UploadError, match=r"^0\.0 MB is over the 0\.001 MB upload limit$"):
        read_upload("big.png", b"\x89PNG" + b"\0" * 2000, SIZE, limit_mb=0.001)
