"""Tests for pneumokeras.io.dicom on pydicom's bundled files, generated files and RSNA."""

from __future__ import annotations

import io
import re
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from factories import dicom_dataset, with_frame, write_dicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from pneumokeras.io.dicom import DicomError, read_dicom, resize_square, to_uint8

RSNA_PATIENT = "16d7f894-55d7-4d95-8957-d18987f0e981"


def bundled(name: str) -> str:
    """Path of a file bundled with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def header(
    photometric: str = "MONOCHROME2", bits: int = 16, signed: bool = False, **tags
) -> Dataset:
    """An in-memory Image Pixel header for to_uint8, plus extra tags."""
    ds = Dataset()
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.PixelRepresentation = int(signed)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def xray_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth 8-bit image with sharp-edged bright marks, roughly like a chest film."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = 120 + 70 * np.sin(6 * x) * np.cos(4 * y) + 40 * y
    img += np.random.default_rng(seed).normal(0, 4, img.shape)
    img[height // 10 : height // 10 + 12, width // 10 : width // 3] = 250  # a burnt-in label
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_baseline_file(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    ds = with_frame(dicom_dataset(pixels, photometric), buffer.getvalue(), JPEGBaseline8Bit)
    return write_dicom(ds, path)


def lossless_jpeg(pixels: np.ndarray) -> bytes:
    """8-bit grayscale as JPEG Lossless, process 14, selection value 1 (first-order
    prediction, no point transform): libjpeg-turbo's encoder through imagecodecs."""
    frame = bytes(imagecodecs.jpeg8_encode(pixels, lossless=True, predictor=1))
    sos = frame.index(b"\xff\xda")
    assert b"\xff\xc3" in frame[:sos]  # SOF3: lossless, Huffman
    assert frame[sos + 4 : sos + 10] == bytes([1, 1, 0, 1, 0, 0])  # predictor 1, Al 0
    return frame


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def slow_path(path: Path | str, size: int | None) -> np.ndarray:
    """The full decode the fast path must match: pixel_array → to_uint8 → resize_square."""
    ds = pydicom.dcmread(path)
    pixels = to_uint8(ds, ds.pixel_array)
    return pixels if size is None else resize_square(pixels, size)


# --- to_uint8: known values ------------------------------------------------------------


def test_8bit_unsigned_passes_through() -> None:
    arr = np.array([[3, 100], [200, 250]], dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8(header(bits=8), arr), arr)
    identity = header(bits=8, RescaleSlope=1, RescaleIntercept=0)
    np.testing.assert_array_equal(to_uint8(identity, arr), arr)


def test_monochrome1_is_inverted() -> None:
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    out = to_uint8(header("MONOCHROME1", bits=8), arr)
    np.testing.assert_array_equal(out, [[255, 155], [55, 0]])


def test_16bit_unsigned_min_max_scaled() -> None:
    arr = np.array([[100, 102], [356, 610]], dtype=np.uint16)
    out = to_uint8(header(bits=16), arr)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1], [128, 255]])


def test_16bit_signed_min_max_scaled() -> None:
    arr = np.array([[-1000, -490], [20, 1550]], dtype=np.int16)
    np.testing.assert_array_equal(to_uint8(header(signed=True), arr), [[0, 51], [102, 255]])


def test_constant_image_is_black() -> None:
    arr = np.full((3, 4), 700, dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8(header(bits=12), arr), np.zeros((3, 4)))


def test_rescale_is_applied() -> None:
    arr = np.array([[0, 10], [20, 40]], dtype=np.uint16)
    out = to_uint8(header(RescaleSlope=-1, RescaleIntercept=0), arr)
    np.testing.assert_array_equal(out, [[255, 191], [128, 0]])


@pytest.mark.parametrize(
    "photometric, expected",
    [("MONOCHROME2", [0, 0, 128, 255, 255]), ("MONOCHROME1", [255, 255, 127, 0, 0])],
)
def test_window_applies_to_rescaled_values(photometric: str, expected: list[int]) -> None:
    # Stored 0..2000 are -1000..1000 after rescale; the window is 0 ± 500 in those units,
    # so stored 1000 (value 0) lands mid-grey and stored 1500 (value 500) saturates.
    arr = np.array([[0, 500, 1000, 1500, 2000]], dtype=np.uint16)
    ds = header(
        photometric,
        RescaleSlope=1,
        RescaleIntercept=-1000,
        WindowCenter=0,
        WindowWidth=1001,
    )
    np.testing.assert_array_equal(to_uint8(ds, arr), [expected])


def test_voi_lut_sequence_scaled_from_lut_range() -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 0, 16])
    item.add_new("LUTData", "US", [0, 100, 300, 510])
    ds = header(bits=16, WindowCenter=1, WindowWidth=1)  # the LUT wins over the window
    ds.VOILUTSequence = Sequence([item])
    arr = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8(ds, arr), [[0, 50, 150, 255, 255]])


def test_monochrome1_file_known_values(tmp_path: Path) -> None:
    arr = np.array([[100, 102], [356, 610]], dtype=np.uint16)
    path = write_dicom(dicom_dataset(arr, "MONOCHROME1", bits_stored=12), tmp_path / "m1.dcm")
    np.testing.assert_array_equal(read_dicom(path).pixels, [[255, 254], [127, 0]])


# --- transfer syntaxes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_syntaxes_decode_like_uncompressed(name: str) -> None:
    reference = read_dicom(bundled("MR_small.dcm")).pixels
    assert reference.shape == (64, 64)
    np.testing.assert_array_equal(read_dicom(bundled(name)).pixels, reference)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_signed_monochrome1_like_uncompressed(tmp_path: Path, syntax: str) -> None:
    # openjpeg's default 6 resolution levels need sides of at least 32
    arr = (np.arange(48 * 40, dtype=np.int16).reshape(48, 40) * 3 - 1500).astype(np.int16)
    ds = dicom_dataset(arr, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-7)
    native = read_dicom(write_dicom(ds, tmp_path / "native.dcm")).pixels
    ds.compress(syntax)
    np.testing.assert_array_equal(
        read_dicom(write_dicom(ds, tmp_path / "packed.dcm")).pixels, native
    )


@pytest.mark.parametrize("syntax", [JPEGLosslessSV1, JPEGLossless])
def test_jpeg_lossless_like_uncompressed(tmp_path: Path, syntax: str) -> None:
    arr = xray_like(24, 40)
    native = read_dicom(write_dicom(dicom_dataset(arr), tmp_path / "native.dcm")).pixels
    ds = with_frame(dicom_dataset(arr), lossless_jpeg(arr), syntax)
    packed = read_dicom(write_dicom(ds, tmp_path / "lossless.dcm")).pixels
    np.testing.assert_array_equal(packed, native)
    np.testing.assert_array_equal(native, arr)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # 16-bit signed, rescale
        "JPEG2000.dcm",  # JPEG 2000 lossy, signed
        "693_J2KI.dcm",  # JPEG 2000, 14 of 16 bits, rescale and window
        "JPGExtended.dcm",  # JPEG Extended, 12-bit
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    ],
)
def test_bundled_images_decode(name: str) -> None:
    path = bundled(name)
    ds = pydicom.dcmread(path)
    image = read_dicom(path)
    assert image.pixels.dtype == np.uint8
    assert image.pixels.shape == (ds.Rows, ds.Columns)
    assert image.pixels.max() > image.pixels.min()
    assert read_dicom(path, size=32).pixels.shape == (32, 32)


# --- fast path -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(512, 512), (300, 420), (420, 300), (1000, 1200)])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_jpeg_baseline_fast_path_matches_slow_path(
    tmp_path: Path, shape: tuple[int, int], photometric: str
) -> None:
    path = jpeg_baseline_file(tmp_path / "jpeg.dcm", xray_like(*shape), photometric)
    for size in (None, 32, 64, 100, 128, 224, 256, 512):
        fast = read_dicom(path, size).pixels
        slow = slow_path(path, size)
        assert fast.shape == slow.shape
        assert mad(fast, slow) <= 1.0, (size, mad(fast, slow))


def test_fast_path_does_not_use_pixel_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = jpeg_baseline_file(tmp_path / "jpeg.dcm", xray_like(128, 128))

    def refuse(self: Dataset) -> np.ndarray:
        raise AssertionError("pixel_array used")

    monkeypatch.setattr(Dataset, "pixel_array", property(refuse))
    assert read_dicom(path, 64).pixels.shape == (64, 64)


def test_jpeg_baseline_with_window_takes_full_rule(tmp_path: Path) -> None:
    arr = xray_like(64, 64)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "JPEG", quality=95)
    ds = with_frame(dicom_dataset(arr), buffer.getvalue(), JPEGBaseline8Bit)
    ds.WindowCenter, ds.WindowWidth = 64, 128  # values ≥ 128 saturate
    pixels = read_dicom(write_dicom(ds, tmp_path / "windowed.dcm")).pixels
    assert (pixels[arr > 140] == 255).all()


# --- RSNA sample -----------------------------------------------------------------------


@pytest.fixture
def rsna_sample(shared_file) -> Path:
    """../shared/data/rsna_sample.dcm (conftest skips the test when it is absent)."""
    return shared_file("rsna_sample.dcm")


def test_rsna_sample(rsna_sample: Path) -> None:
    image = read_dicom(rsna_sample)
    assert image.pixels.shape == (1024, 1024)
    assert image.pixels.dtype == np.uint8
    assert image.pixels.mean() == pytest.approx(160.4, abs=0.5)
    assert (image.patient_id, image.view, image.sex, image.age) == (RSNA_PATIENT, "PA", "M", "62")


@pytest.mark.parametrize("size", [None, 128, 224, 256, 512])
def test_rsna_fast_path_matches_slow_path(rsna_sample: Path, size: int | None) -> None:
    fast = read_dicom(rsna_sample, size).pixels
    slow = slow_path(rsna_sample, size)
    assert fast.shape == slow.shape == ((1024, 1024) if size is None else (size, size))
    assert mad(fast, slow) <= 1.0


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("liver_1frame.dcm", "non-image object (SEG)"),
        ("rtplan.dcm", "non-image object (RTPLAN)"),
        ("rtdose_1frame.dcm", "non-image object (RTDOSE)"),
        ("test-SR.dcm", "non-image object (SR)"),
        ("rtstruct.dcm", "not a DICOM file"),  # no DICM file header
        ("examples_palette.dcm", "palette colour image"),
        ("ExplVR_BigEnd.dcm", "colour image (RGB)"),
        ("examples_jpeg2k.dcm", "colour image (YBR_RCT)"),
        ("SC_rgb_rle_2frame.dcm", "multi-frame (2 frames)"),
        ("MR_truncated.dcm", "truncated or corrupt pixel data"),
    ],
)
def test_bundled_refusals(name: str, reason: str) -> None:
    with pytest.raises(DicomError, match=f"^{re.escape(reason)}$"):
        read_dicom(bundled(name))


def refuse(path: Path) -> str:
    with pytest.raises(DicomError) as info:
        read_dicom(path)
    return str(info.value)


def test_refuses_a_dicomdir(tmp_path: Path) -> None:
    from pydicom.uid import MediaStorageDirectoryStorage

    ds = dicom_dataset(xray_like(8, 8))
    del ds.PixelData
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.SOPClassUID = MediaStorageDirectoryStorage
    path = write_dicom(ds, tmp_path / "DICOMDIR")
    assert refuse(path) == "a DICOMDIR (the index of a DICOM medium), not an image"


def test_a_malformed_header_is_refused_without_pydicoms_warnings(tmp_path: Path) -> None:
    import warnings

    path = tmp_path / "malformed"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert refuse(path) == "no pixel data"
    assert [str(w.message) for w in caught] == []


def test_refuses_no_pixel_data(tmp_path: Path) -> None:
    ds = dicom_dataset(xray_like(8, 8))
    del ds.PixelData
    assert refuse(write_dicom(ds, tmp_path / "empty.dcm")) == "no pixel data"


def test_refuses_seg_modality(tmp_path: Path) -> None:
    ds = dicom_dataset(xray_like(8, 8), Modality="SEG")
    assert refuse(write_dicom(ds, tmp_path / "seg.dcm")) == "non-image object (SEG)"


def test_refuses_multi_frame(tmp_path: Path) -> None:
    frames = np.stack([xray_like(8, 8)] * 3)
    assert (
        refuse(write_dicom(dicom_dataset(frames), tmp_path / "mf.dcm")) == "multi-frame (3 frames)"
    )


def test_refuses_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    assert (
        refuse(write_dicom(dicom_dataset(rgb, "RGB"), tmp_path / "rgb.dcm")) == "colour image (RGB)"
    )


def test_refuses_incomplete_header(tmp_path: Path) -> None:
    ds = dicom_dataset(xray_like(8, 8))
    del ds.Rows, ds.BitsAllocated
    path = write_dicom(ds, tmp_path / "headless.dcm")
    assert refuse(path) == "incomplete image header (no Rows, BitsAllocated)"


def test_refuses_unsupported_syntax(tmp_path: Path) -> None:
    ds = with_frame(dicom_dataset(xray_like(8, 8)), b"\x00" * 64, MPEG2MPML)
    path = write_dicom(ds, tmp_path / "video.dcm")
    assert refuse(path) == "unsupported transfer syntax (MPEG2 Main Profile / Main Level)"


def test_refuses_truncated_native(tmp_path: Path) -> None:
    data = write_dicom(
        dicom_dataset(np.zeros((64, 64), np.uint16)), tmp_path / "full.dcm"
    ).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-1000])
    assert refuse(tmp_path / "cut.dcm") == "truncated or corrupt pixel data"


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_refuses_truncated_jpeg_file(tmp_path: Path, keep: float) -> None:
    data = jpeg_baseline_file(tmp_path / "full.dcm", xray_like(256, 256)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * keep)])
    assert refuse(tmp_path / "cut.dcm") == "truncated or corrupt pixel data"


def test_refuses_truncated_rsna_sample(rsna_sample: Path, tmp_path: Path) -> None:
    (tmp_path / "cut.dcm").write_bytes(rsna_sample.read_bytes()[:60_000])
    assert refuse(tmp_path / "cut.dcm") == "truncated or corrupt pixel data"


@pytest.mark.parametrize("size", [None, 64])
def test_refuses_corrupt_jpeg_frame(tmp_path: Path, size: int | None) -> None:
    arr = xray_like(256, 256)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, "JPEG")
    ds = with_frame(dicom_dataset(arr), buffer.getvalue()[:2000], JPEGBaseline8Bit)
    with pytest.raises(DicomError, match=r"^truncated or corrupt pixel data$"):
        read_dicom(write_dicom(ds, tmp_path / "bad.dcm"), size)


def test_refuses_non_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("patientId,Target\nabc,1\n")
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert refuse(tmp_path / "notes.txt") == "not a DICOM file"
    assert refuse(tmp_path / "empty.dcm") == "not a DICOM file"
    assert refuse(tmp_path / "missing.dcm") == "unreadable: No such file or directory"
    assert refuse(tmp_path) == "unreadable: Is a directory"


def test_read_dicom_rejects_bad_size(tmp_path: Path) -> None:
    path = write_dicom(dicom_dataset(xray_like(8, 8)), tmp_path / "ok.dcm")
    with pytest.raises(ValueError, match="size must be"):
        read_dicom(path, 0)


# --- resize_square ---------------------------------------------------------------------


def test_resize_square_pads_centred_with_black() -> None:
    wide = np.full((2, 4), 200, dtype=np.uint8)
    out = resize_square(wide, 4)
    np.testing.assert_array_equal(out[[0, 3]], 0)
    np.testing.assert_array_equal(out[[1, 2]], 200)
    tall = resize_square(np.full((4, 2), 200, dtype=np.uint8), 4)
    np.testing.assert_array_equal(tall, out.T)


def test_resize_square_area_average() -> None:
    arr = np.array([[0, 0, 100, 200], [0, 0, 100, 200], [10, 30, 7, 7], [50, 70, 7, 7]], np.uint8)
    np.testing.assert_array_equal(resize_square(arr, 2), [[0, 150], [40, 7]])


def test_resize_square_same_size_unchanged() -> None:
    arr = xray_like(16, 16)
    assert resize_square(arr, 16) is arr


def test_resize_square_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        resize_square(np.zeros((4, 4), np.uint16), 2)
    with pytest.raises(ValueError, match="size must be"):
        resize_square(np.zeros((4, 4), np.uint8), 0)
