"""Uploaded files → the pixels `convert` would store, or one line saying why not.

The bytes of an upload are written into a private temporary folder (mode 0700)
only while the converter's reader (`images.read_image`) reads them; the folder is
removed at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pneumokeras.errors import UnreadableInputError
from pneumokeras.io.formats import DICOM_SUFFIXES
from pneumokeras.io.images import ImageRecord, read_image


class UploadError(UnreadableInputError):
    """An uploaded file that gives no image; the message is one line saying why."""


def upload_suffix(name: str) -> str:
    """The suffix the upload's temporary copy gets: `.dcm` for a DICOM name, else none.

    The reader judges the content (`formats.detect_format`), whatever the name;
    only a file named as a DICOM whose content is unknown goes to the DICOM
    reader, which then says what is wrong with it.
    """
    return ".dcm" if Path(name).suffix.lower() in DICOM_SUFFIXES else ""


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def read_upload(name: str, data: bytes, size: int, limit_mb: float) -> ImageRecord:
    """Reads one uploaded file exactly as `convert` (DICOM) or `predict` would.

    Args:
        name: the file's name as uploaded (only a DICOM suffix is used; the
            content decides).
        data: its bytes.
        size: the model's input side, pixels.
        limit_mb: largest accepted file, MB (2**20 bytes).

    Returns:
        The `(size, size)` uint8 pixels with the file's facts.

    Raises:
        UploadError: empty, over the limit, not an image, or unreadable (the
            DICOM or image reader's reason).
    """
    if not data:
        raise UploadError("empty file")
    if len(data) > limit_mb * 2**20:
        raise UploadError(f"{_megabytes(len(data))} is over the {limit_mb:g} MB upload limit")
    suffix = upload_suffix(name)
    # A private folder (mkdtemp: mode 0700), removed as soon as the file is read.
    with tempfile.TemporaryDirectory(prefix="pneumokeras-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_image(path, size)
        except UnreadableInputError as err:
            raise UploadError(str(err).splitlines()[0] if str(err) else "unreadable") from err
