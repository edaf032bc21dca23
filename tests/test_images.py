"""Tests of pneumokeras.images: image files → the converter's pixels.

No Keras backend is involved: these run once. DICOMs come from `synth.generate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumokeras import images as images_module
from pneumokeras.convert import encode_png
from pneumokeras.dicom import DicomError, read_dicom, resize_square
from pneumokeras.errors import UserError
from pneumokeras.images import ImageError, find_inputs, load_image
from pneumokeras.synth import IMAGES_DIR, generate

SIZE = 32


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("synth")
    generate(root, patients=3, size=64, seed=2, workers=0, progress=False)
    return sorted((root / IMAGES_DIR).glob("*.dcm"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A non-square PNG, a JPEG, and a 16-bit PNG, in nested folders, odd-case suffixes."""
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    paths = {
        "png": tmp_path / "in" / "wide.PNG",
        "jpeg": tmp_path / "in" / "sub" / "photo.JpEg",
        "png16": tmp_path / "in" / "sub" / "deep.png",
    }
    Image.fromarray(rng.integers(0, 256, (40, 70), dtype=np.uint8)).save(paths["png"])
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(
        paths["jpeg"], format="JPEG"
    )
    Image.fromarray(rng.integers(0, 4096, (48, 48), dtype=np.uint16)).save(paths["png16"])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return paths


def test_dicom_pixels_equal_the_converters(dicoms):
    import tensorflow as tf

    dcm = dicoms[0]
    # What convert stores (read_dicom → PNG) and what training decodes (decode_png).
    stored = encode_png(read_dicom(dcm, size=SIZE).pixels)
    trained_on = tf.io.decode_png(stored, channels=1).numpy()[..., 0]
    pixels, patient_id = load_image(dcm, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(pixels, trained_on)
    assert patient_id == read_dicom(dcm).patient_id != ""


def test_png_and_jpeg_are_padded_and_box_resized(files):
    wide = np.array(Image.open(files["png"]))
    pixels, patient_id = load_image(files["png"], SIZE)
    np.testing.assert_array_equal(pixels, resize_square(wide, SIZE))
    assert patient_id == ""
    # Centred on black: the padded top and bottom rows stay 0.
    assert pixels[0].max() == 0 and pixels[-1].max() == 0

    jpeg, _ = load_image(files["jpeg"], SIZE)
    expected = resize_square(np.array(Image.open(files["jpeg"]).convert("L")), SIZE)
    np.testing.assert_array_equal(jpeg, expected)


def test_16_bit_png_is_scaled_not_clipped(files, tmp_path):
    deep = np.array(Image.open(files["png16"]))
    pixels, _ = load_image(files["png16"], 48)  # same size: no resampling
    scaled = np.rint((deep - deep.min()) * (255.0 / (deep.max() - deep.min())))
    np.testing.assert_array_equal(pixels, scaled.astype(np.uint8))
    assert pixels.min() == 0 and pixels.max() == 255
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 700, np.uint16)).save(flat)
    np.testing.assert_array_equal(load_image(flat, 8)[0], 0)  # constant: black, not clipped


def test_find_inputs_recurses_and_ignores_case(files, dicoms):
    folder = files["png"].parent
    found = find_inputs([str(folder), str(files["png"]), str(dicoms[0])])
    assert found == sorted(files.values()) + [dicoms[0]]  # duplicate dropped, .txt skipped
    # A file named explicitly is kept whatever its suffix; reading it says why not.
    assert find_inputs([folder / "notes.txt"]) == [folder / "notes.txt"]
    with pytest.raises(UserError, match="does not exist"):
        find_inputs([str(folder / "missing.dcm")])


def test_unreadable_files_raise_the_readers_errors(tmp_path):
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageError):
        load_image(broken_png, SIZE)
    text = tmp_path / "photo.jpg"
    text.write_bytes(b"nope")
    with pytest.raises(ImageError, match="not a readable PNG/JPEG"):
        load_image(text, SIZE)
    with pytest.raises(ImageError, match="unsupported file type .txt"):
        load_image(tmp_path / "notes.txt", SIZE)
    with pytest.raises(ImageError, match="no suffix"):
        load_image(tmp_path / "README", SIZE)
    broken_dcm = tmp_path / "broken.dcm"
    broken_dcm.write_bytes(b"DICM? no")
    with pytest.raises(DicomError, match="not a DICOM file"):
        load_image(broken_dcm, SIZE)
    assert images_module.IMAGE_SUFFIXES == (".dcm", ".png", ".jpg", ".jpeg")
