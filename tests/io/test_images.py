"""Tests of pneumokeras.io.images: image files → the converter's pixels.

No Keras backend is involved: these run once. DICOMs come from `synth.generate`.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from factories import dicom_dataset, oversized_png, write_dicom
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
    with pytest.raises(ImageError, match=r"^not a DICOM, PNG or JPEG file$"):
        load_image(text, SIZE)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match=r"^not a DICOM, PNG or JPEG file$"):
        load_image(tmp_path / "notes.txt", SIZE)
    with pytest.raises(ImageError, match=r"^no such file$"):
        load_image(tmp_path / "README", SIZE)
    broken_dcm = tmp_path / "broken.dcm"
    broken_dcm.write_bytes(b"DICM? no")
    with pytest.raises(DicomError, match="not a DICOM file"):
        load_image(broken_dcm, SIZE)
    assert images_module.IMAGE_SUFFIXES == (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


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
    assert re.fullmatch(r"\d{3}Y", record.age)  # as DICOM writes an age (PatientAge, AS)


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


# ------------------------------------------------------------------ issue #24: odd files


def test_an_image_over_pillows_pixel_limit_is_a_one_line_image_error(tmp_path):
    path = oversized_png(tmp_path / "huge.png", side=14000)
    with pytest.raises(ImageError) as err:
        read_image(path, SIZE)
    assert str(err.value) == (
        "image too large to decode (196,000,000 pixels, over Pillow's limit of 178,956,970)"
    )


def _asymmetric(height: int = 30, width: int = 50) -> np.ndarray:
    """A gray picture no turn or flip maps onto itself: a bright corner, a ramp."""
    pixels = np.tile(np.linspace(20, 120, width, dtype=np.uint8), (height, 1))
    pixels[:6, :10] = 255
    return pixels


@pytest.mark.parametrize(
    "orientation, upright, turn",
    [
        (6, lambda p: np.rot90(p, -1), "turned 90° clockwise"),
        (8, lambda p: np.rot90(p, 1), "turned 90° counter-clockwise"),
        (3, lambda p: np.rot90(p, 2), "turned 180°"),
        (2, np.fliplr, "flipped left-right"),
    ],
)
def test_exif_orientation_is_applied_with_a_note(tmp_path, orientation, upright, turn):
    stored = _asymmetric()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    record = read_image(path, SIZE)
    decoded = np.asarray(Image.open(path).convert("L"))
    np.testing.assert_array_equal(record.pixels, resize_square(upright(decoded), SIZE))
    assert record.note == f"EXIF orientation {orientation} applied ({turn})"
    assert (record.height, record.width) == upright(decoded).shape
    # Orientation 1 (or none) changes nothing and says nothing.
    exif[0x0112] = 1
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=100, exif=exif)
    assert read_image(tmp_path / "plain.jpg", SIZE).note == ""


def test_the_content_decides_the_reader_not_the_name(tmp_path, dicoms):
    gray = np.full((12, 16), 90, np.uint8)
    dicom = dicoms[0].read_bytes()
    (tmp_path / "1.2.840.113619.2.55.3").write_bytes(dicom)  # PACS: a UID, no suffix
    (tmp_path / "IM0001").write_bytes(dicom)
    (tmp_path / "looks.png").write_bytes(dicom)
    Image.fromarray(gray).save(tmp_path / "scan.tif")
    Image.fromarray(gray).save(tmp_path / "scan.png", format="TIFF")
    Image.fromarray(gray).save(tmp_path / "anim.jpg", format="GIF")
    Image.fromarray(gray).save(tmp_path / "old.bmp")
    Image.fromarray(gray).save(tmp_path / "no_suffix", format="PNG")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.dcm").write_bytes(b"")
    os.symlink(tmp_path / "moved.png", tmp_path / "dangling.png")
    expected = read_image(dicoms[0], SIZE).pixels
    for name in ("1.2.840.113619.2.55.3", "IM0001", "looks.png"):
        record = read_image(tmp_path / name, SIZE)
        assert record.format == "DICOM", name
        np.testing.assert_array_equal(record.pixels, expected)
    assert read_image(tmp_path / "no_suffix", SIZE).format == "PNG"
    refusals = {
        "scan.tif": "unsupported format TIFF (DICOM, PNG and JPEG are read)",
        "scan.png": "unsupported format TIFF (DICOM, PNG and JPEG are read)",
        "anim.jpg": "unsupported format GIF (DICOM, PNG and JPEG are read)",
        "old.bmp": "unsupported format BMP (DICOM, PNG and JPEG are read)",
        "empty.png": "empty file (0 bytes)",
        "empty.dcm": "empty file (0 bytes)",
        "dangling.png": f"broken symbolic link (its target {tmp_path / 'moved.png'} does not "
        "exist)",
    }
    for name, reason in refusals.items():
        with pytest.raises(ImageError) as err:
            read_image(tmp_path / name, SIZE)
        assert str(err.value) == reason, name
    with pytest.raises(ImageError, match=r"^a folder, not a file$"):
        read_image(tmp_path, SIZE)


@pytest.mark.parametrize("mode", ["CMYK", "1", "LA", "P", "I;16"])
def test_other_pillow_modes_of_a_gray_picture_are_read(tmp_path, mode):
    gray = _asymmetric()
    image = Image.fromarray(gray)
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 256)
    elif mode != "P":
        image = image.convert(mode)
    else:
        image = image.convert("RGB").quantize(64)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    record = read_image(path, SIZE)
    assert record.pixels.shape == (SIZE, SIZE)
    assert record.mode == mode
    if mode == "LA":
        np.testing.assert_array_equal(record.pixels, resize_square(gray, SIZE))
    if mode == "I;16":  # scaled from its [min, max]
        stretched = np.rint((gray - 20.0) * 255 / (255 - 20)).astype(np.uint8)
        np.testing.assert_array_equal(record.pixels, resize_square(stretched, SIZE))


def test_find_inputs_judges_content_skips_hidden_keeps_links_and_dedupes(tmp_path, dicoms):
    scan = tmp_path / "scan"
    (scan / "sub" / ".thumbs").mkdir(parents=True)
    (scan / "1.2.840.113619.2.55.3").write_bytes(dicoms[0].read_bytes())
    Image.new("L", (8, 8)).save(scan / "sub" / "a.png")
    Image.new("L", (8, 8)).save(scan / "sub" / ".hidden.png")
    Image.new("L", (8, 8)).save(scan / "sub" / ".thumbs" / "b.png")
    Image.new("L", (8, 8)).save(scan / "sub" / "scan.tif")
    (scan / "sub" / "notes.txt").write_text("not an image")
    (scan / "DICOMDIR.csv").write_text("a,b\n")
    os.symlink(scan / "moved.jpeg", scan / "sub" / "gone.jpeg")
    found = find_inputs([scan])
    assert found == [
        scan / "1.2.840.113619.2.55.3",
        scan / "sub" / "a.png",
        scan / "sub" / "gone.jpeg",  # a dangling link: reading it gives its error row
        scan / "sub" / "scan.tif",  # refused by name when read
    ]
    # Named explicitly, a hidden file is read; one file named twice is read once.
    hidden = scan / "sub" / ".hidden.png"
    twice = scan / "sub" / ".." / "sub" / "a.png"
    os.symlink(scan / "sub" / "a.png", tmp_path / "alias.png")
    assert find_inputs([hidden, scan / "sub" / "a.png", twice, tmp_path / "alias.png"]) == [
        hidden,
        scan / "sub" / "a.png",
    ]
    assert find_inputs([scan / "sub" / "gone.jpeg"]) == [scan / "sub" / "gone.jpeg"]


def test_corrupt_exif_is_ignored_without_a_warning(tmp_path):
    import struct
    import warnings

    buffer = io.BytesIO()
    Image.fromarray(_asymmetric()).save(buffer, "JPEG", quality=95)
    jpeg = buffer.getvalue()
    app1 = b"Exif\x00\x00MM\x00*\xff\xff\xff\xff\x00\x00"  # an IFD offset past the end
    broken = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    (tmp_path / "exif.jpg").write_bytes(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = read_image(tmp_path / "exif.jpg", SIZE)
    assert [str(w.message) for w in caught] == []
    assert (record.format, record.note) == ("JPEG", "")
