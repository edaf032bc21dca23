"""Tests of pneumokeras.io.formats: a file's format by its content, and why a path is
not an input file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from factories import dicom_bytes, dicom_dataset
from PIL import Image

from pneumokeras.io.formats import (
    detect_format,
    file_problem,
    format_of_head,
    input_problem,
    looks_like_image,
)


def _saved(fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 6), 40).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, mode, expected",
    [
        ("PNG", "L", "PNG"),
        ("JPEG", "L", "JPEG"),
        ("TIFF", "L", "TIFF"),
        ("GIF", "L", "GIF"),
        ("BMP", "L", "BMP"),
        ("WEBP", "RGB", "WebP"),
        ("PDF", "RGB", "PDF"),
    ],
)
def test_pillows_formats_are_named_by_their_signature(fmt, mode, expected):
    assert format_of_head(_saved(fmt, mode)[:132]) == expected


def test_dicom_needs_its_marker_and_unknown_content_is_empty_text():
    assert format_of_head(dicom_bytes(dicom_dataset(np.zeros((4, 4), np.uint8)))) == "DICOM"
    assert format_of_head(b"DICM" + b"\0" * 200) == ""  # the marker belongs at byte 128
    assert format_of_head(b"") == ""
    assert format_of_head(b"BM is a text that starts like a bitmap") == ""
    assert format_of_head(b"\xff\x4f\xff\x51\0\0") == "JPEG 2000"


def test_file_problem_names_links_folders_and_missing_paths(tmp_path):
    (tmp_path / "real.png").write_bytes(_saved("PNG"))
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.symlink(tmp_path / "real.png", tmp_path / "alias.png")
    assert file_problem(tmp_path / "real.png") == ""
    assert file_problem(tmp_path / "alias.png") == ""
    assert file_problem(tmp_path / "dangling.png") == (
        f"broken symbolic link (its target {tmp_path / 'gone.png'} does not exist)"
    )
    assert file_problem(tmp_path) == "a folder, not a file"
    assert file_problem(tmp_path / "nothing") == "no such file"


def test_input_problem_takes_images_by_suffix_or_content(tmp_path):
    files = {
        "1.2.840.10008.99": dicom_bytes(dicom_dataset(np.zeros((4, 4), np.uint8))),
        "scan.PNG": b"",  # an image suffix: reading judges the content
        "scan.tif": _saved("TIFF"),
        "photo.data": _saved("JPEG"),
        "notes.txt": b"text",
        "README": b"text",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    problems = {name: input_problem(tmp_path / name) for name in files}
    assert problems == {
        "1.2.840.10008.99": "",
        "scan.PNG": "",
        "scan.tif": "unsupported format TIFF (DICOM, PNG and JPEG are read)",
        "photo.data": "",
        "notes.txt": "not an image file (.txt)",
        "README": "not an image file (no suffix)",
    }
    assert [n for n in files if looks_like_image(tmp_path / n)] == [
        "1.2.840.10008.99",
        "scan.PNG",
        "scan.tif",
        "photo.data",
    ]
    assert detect_format(tmp_path / "scan.tif") == "TIFF"
