"""Uploaded files → the pixels `convert` would store, or one line saying why not.

The bytes of an upload are written into a private temporary folder (mode 0700)
only while the converter's reader (`images.read_image`) reads them; the folder is
removed at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pneumokeras.errors import UnreadableInputError
from pneumokeras.io.images import ImageRecord, read_image

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class UploadError(UnreadableInputError):
    """An uploaded file that gives no image; the message is one line saying why."""


def upload_suffix(name: str, data: bytes) -> str:
    """The reader an upload needs, as the suffix `images.read_image` dispatches on.

    The content decides first (DICOM Part 10 `DICM` marker at byte 128, PNG and
    JPEG signatures), so a DICOM saved without `.dcm` is still read as DICOM; the
    name decides otherwise, and the reader then says what is wrong.

    Raises:
        UploadError: neither the content nor the name is a DICOM, PNG or JPEG.
    """
    if data[128:132] == b"DICM":
        return ".dcm"
    if data.startswith(_PNG_MAGIC):
        return ".png"
    if data.startswith(_JPEG_MAGIC):
        return ".jpg"
    suffix = Path(name).suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return ".dcm"
    if suffix in (".png", ".jpg", ".jpeg"):
        return suffix
    raise UploadError("not a DICOM, PNG or JPEG file")


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def read_upload(name: str, data: bytes, size: int, limit_mb: float) -> ImageRecord:
    """Reads one uploaded file exactly as `convert` (DICOM) or `predict` would.

    Args:
        name: the file's name as uploaded (only its suffix is used).
        data: its bytes.
        size: the model's input side, pixels.
        limit_mb: largest accepted file, MB (2**20 bytes).

    Returns:
        The `(size, size)` uint8 pixels with the file's facts.

    Raises:
        UploadError: empty, over the limit, not an image, or unreadable (the
            DICOM or image reader's reason).
    """
    from PIL import Image

    if not data:
        raise UploadError("empty file")
    if len(data) > limit_mb * 2**20:
        raise UploadError(f"{_megabytes(len(data))} is over the {limit_mb:g} MB upload limit")
    suffix = upload_suffix(name, data)
    # A private folder (mkdtemp: mode 0700), removed as soon as the file is read.
    with tempfile.TemporaryDirectory(prefix="pneumokeras-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_image(path, size)
        except UnreadableInputError as err:
            raise UploadError(str(err).splitlines()[0] if str(err) else "unreadable") from err
        except Image.DecompressionBombError as err:
            raise UploadError("image too large to decode (Pillow's pixel limit)") from err
