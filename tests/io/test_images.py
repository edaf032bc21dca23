"""Tests of pneumokeras.io.images: image files → the converter's pixels.

No Keras backend is involved: these run once. DICOMs come from `synth.generate`.
"""

from __future__ import annotations

import numpy as np
import pytest
from factories import dicom_dataset, write_dicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from pneumokeras.errors import UserError
from pneumokeras.io import images as images_module
from pneumokeras.io.dicom import DicomError, read_dicom, resize_square
from pneumokeras.io.images import ImageError, find_inputs, load_image, read_image
from pneumokeras.records.convert import encode_png

SIZE = 32


def test_dicom_pixels_equal_the_converters(dicoms):
    import tensorflow as tf

    dcm = dicoms[0]
    # What convert stores (read_dicom → PNG) and what training decodes (decode_png).
    stored = encode_png(read_dicom(dcm, size=SIZE).pixels)
    trained_on = tf.io.decode_png(stored, channels=1).numpy()[..., 0]
    pixels, patient_id = load_image(dcm, SIZE)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(pixels, trained_on)
    assert patient_id == read_dicom(dcm).patient_id != ""


def test_png_and_jpeg_are_padded_and_box_resized(image_files):
    wide = np.array(Image.open(image_files["png"]))
    pixels, patient_id = load_image(image_files["png"], SIZE)
    np.testing.assert_array_equal(pixels, resize_square(wide, SIZE))
    assert patient_id == ""
    # Centred on black: the padded top and bottom rows stay 0.
    assert pixels[0].max() == 0
    assert pixels[-1].max() == 0

    jpeg, _ = load_image(image_files["jpeg"], SIZE)
    expected = resize_square(np.array(Image.open(image_files["jpeg"]).convert("L")), SIZE)
    np.testing.assert_array_equal(jpeg, expected)


def test_16_bit_png_is_scaled_not_clipped(image_files, tmp_path):
    deep = np.array(Image.open(image_files["png16"]))
    pixels, _ = load_image(image_files["png16"], 48)  # same size: no resampling
    scaled = np.rint((deep - deep.min()) * (255.0 / (deep.max() - deep.min())))
    np.testing.assert_array_equal(pixels, scaled.astype(np.uint8))
    assert pixels.min() == 0
    assert pixels.max() == 255
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 700, np.uint16)).save(flat)
    np.testing.assert_array_equal(load_image(flat, 8)[0], 0)  # constant: black, not clipped


def test_find_inputs_recurses_and_ignores_case(image_files, dicoms):
    folder = image_files["png"].parent
    found = find_inputs([str(folder), str(image_files["png"]), str(dicoms[0])])
    assert found == [*sorted(image_files.values()), dicoms[0]]  # duplicate dropped, .txt skipped
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
    with pytest.raises(ImageError, match=r"unsupported file type .txt"):
        load_image(tmp_path / "notes.txt", SIZE)
    with pytest.raises(ImageError, match="no suffix"):
        load_image(tmp_path / "README", SIZE)
    broken_dcm = tmp_path / "broken.dcm"
    broken_dcm.write_bytes(b"DICM? no")
    with pytest.raises(DicomError, match="not a DICOM file"):
        load_image(broken_dcm, SIZE)
    assert images_module.IMAGE_SUFFIXES == (".dcm", ".png", ".jpg", ".jpeg")


# ------------------------------------------------------------------ read_image facts


def test_read_image_gives_a_dicoms_acquisition_facts(dicoms):
    record = read_image(dicoms[0], SIZE)
    header = read_dicom(dicoms[0])
    np.testing.assert_array_equal(record.pixels, load_image(dicoms[0], SIZE)[0])
    assert record.patient_id == header.patient_id == dicoms[0].stem
    # synth writes RSNA-like CR chest files: JPEG Baseline, 64 px, AP or PA.
    assert (record.format, record.modality, record.body_part) == ("DICOM", "CR", "CHEST")
    assert record.view in ("AP", "PA")
    assert record.view == header.view
    assert (record.width, record.height) == (64, 64)
    assert record.photometric == "MONOCHROME2"
    assert record.transfer_syntax == JPEGBaseline8Bit == header.transfer_syntax
    assert record.transfer_syntax_name == "JPEG Baseline (Process 1)"
    assert record.mode == ""
    assert record.facts() == {
        "patient_id": record.patient_id,
        "format": "DICOM",
        "width": 64,
        "height": 64,
        "mode": "",
        "modality": "CR",
        "body_part": "CHEST",
        "view": record.view,
        "sex": header.sex,
        "age": header.age,
        "photometric": "MONOCHROME2",
        "transfer_syntax": JPEGBaseline8Bit,
        "transfer_syntax_name": "JPEG Baseline (Process 1)",
        "note": "",
    }
    assert record.sex in ("M", "F")
    assert record.age.isdigit()


def test_read_image_reports_other_modalities_and_stored_sizes(tmp_path):
    mr = get_testdata_file("MR_small.dcm", download=False)
    if mr is None:
        pytest.skip("MR_small.dcm is not bundled with this pydicom")
    record = read_image(mr, SIZE)
    assert (record.modality, record.body_part, record.view) == ("MR", "", "")
    assert record.transfer_syntax_name == "Explicit VR Little Endian"
    assert record.pixels.shape == (SIZE, SIZE)

    # A tall MONOCHROME1 image without Modality: rows and columns as stored.
    pixels = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20)
    ds = dicom_dataset(pixels, "MONOCHROME1", 12, BodyPartExamined="ABDOMEN")
    tall = read_image(write_dicom(ds, tmp_path / "tall.dcm"), SIZE)
    assert (tall.width, tall.height) == (20, 30)
    assert (tall.modality, tall.body_part, tall.photometric) == ("", "ABDOMEN", "MONOCHROME1")
    assert tall.transfer_syntax == ExplicitVRLittleEndian
    assert tall.patient_id == ""


def test_read_image_gives_a_pictures_format_mode_and_size(image_files, tmp_path):
    wide = read_image(image_files["png"], SIZE)
    assert (wide.format, wide.mode, wide.width, wide.height) == ("PNG", "L", 70, 40)
    assert wide.modality == wide.transfer_syntax == wide.patient_id == ""
    jpeg = read_image(image_files["jpeg"], SIZE)
    assert (jpeg.format, jpeg.mode, jpeg.width, jpeg.height) == ("JPEG", "L", 64, 64)
    deep = read_image(image_files["png16"], SIZE)
    assert deep.format == "PNG"
    assert deep.mode.startswith("I")
    # The content decides the format, not the suffix; colour is reported as such.
    disguised = tmp_path / "colour.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(disguised, format="JPEG")
    record = read_image(disguised, SIZE)
    assert (record.format, record.mode, record.width, record.height) == ("JPEG", "RGB", 12, 10)
    assert record.pixels.shape == (SIZE, SIZE)
    assert record.pixels.dtype == np.uint8


# ------------------------------------------------------------------ the colour rule


def test_gray_pictures_saved_in_colour_are_read_and_real_colour_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    expected = resize_square(gray, SIZE)
    rgb = np.stack([gray] * 3, axis=-1)
    for name, image in {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full_like(gray, 255)])),
        "palette.png": Image.fromarray(rgb).quantize(256),
    }.items():
        image.save(tmp_path / name)
        record = read_image(tmp_path / name, SIZE)
        assert record.mode in ("RGB", "RGBA", "P")
        if name != "palette.png":  # quantising may merge close grays
            np.testing.assert_array_equal(record.pixels, expected)
    # JPEG rounding of a gray picture, and a small red mark (its chroma smeared
    # over a 16 px block by JPEG, still under 1 % of the picture), pass.
    marked = np.stack([rng.integers(0, 256, (100, 120), dtype=np.uint8)] * 3, axis=-1)
    marked[:2, :3] = (255, 0, 0)
    Image.fromarray(marked).save(tmp_path / "marked.jpg", quality=90)
    assert read_image(tmp_path / "marked.jpg", SIZE).mode == "RGB"
    # Real colour: channels apart on more than 1 % of the pixels.
    colour = rgb.copy()
    colour[:5, :, 0] = 255 - colour[:5, :, 0]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ImageError, match=r"^colour image \(RGB channels differ in \d+% of"):
        read_image(tmp_path / "colour.png", SIZE)
    assert images_module.COLOUR_TOLERANCE == 24
    assert images_module.COLOUR_SHARE == 0.01
