"""What an input file holds, judged by its first bytes, never by its name.

PACS exports often name DICOMs without `.dcm` (or by their UID); a TIFF may be
saved as `.png`. Every reader and every folder scan therefore asks
`detect_format`: the DICOM Part 10 marker (`DICM` after the 128-byte preamble),
the PNG and JPEG signatures, and the signatures of image formats that are *not*
read (TIFF, GIF, BMP, WebP, JPEG 2000, HEIF/AVIF, PDF, ...), so that those are
refused by name ("unsupported format TIFF") instead of as unreadable.

`file_problem` says why a path cannot be read at all (a dangling symbolic link,
a folder, a missing file), before any content is looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

READ_FORMATS = ("DICOM", "PNG", "JPEG")
# Suffixes (any case) that mark an image file even when its content is unknown:
# reading it then says what is wrong with it.
IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
HEAD_BYTES = 132  # DICOM's preamble (128) and marker (4): the longest signature offset

# Leading signatures of formats that are recognised but not read.
_OTHER_SIGNATURES = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
)
_HEIF_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"mif1": "HEIF", b"avif": "AVIF"}


def format_of_head(head: bytes) -> str:
    """The format the leading bytes of a file say (`DICOM`, `PNG`, `JPEG`, `TIFF`, ...).

    Args:
        head: the file's first `HEAD_BYTES` bytes (fewer when the file is shorter).

    Returns:
        The format's name, or '' when no known signature matches.
    """
    if head[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[head[8:12]]
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":  # reserved, zero
        return "BMP"
    return next((name for magic, name in _OTHER_SIGNATURES if head.startswith(magic)), "")


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a file's content (see `format_of_head`); '' when unknown.

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        return format_of_head(handle.read(HEAD_BYTES))


def file_problem(path: str | os.PathLike[str]) -> str:
    """Why `path` is not a file that can be opened, in a few words; '' when it is one.

    A dangling symbolic link, a folder, a missing path; a regular file (or a link
    to one) gives ''.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    if path.is_dir():
        return "a folder, not a file"
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a regular file"
    return ""


def is_hidden(relative: Path) -> bool:
    """Whether any part of a path (relative to a scanned folder) starts with `.`."""
    return any(part.startswith(".") for part in relative.parts)


def unsupported(kind: str) -> str:
    """The one-line refusal of a recognised image format that is not read."""
    return f"unsupported format {kind} (DICOM, PNG and JPEG are read)"


def input_problem(path: str | os.PathLike[str]) -> str:
    """Why a file found in an input folder is not taken as an image; '' when it is.

    Taken: a file with an image suffix (reading then judges its content) or
    whose content is DICOM, PNG or JPEG whatever its name. Not taken, with the
    reason: a dangling link or other non-file (`file_problem`), another image
    format ("unsupported format TIFF ..."), an unreadable file, anything else
    ("not an image file (.txt)").
    """
    path = Path(path)
    problem = file_problem(path)
    if problem:
        return problem
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ""
    try:
        kind = detect_format(path)
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if kind in READ_FORMATS:
        return ""
    if kind:
        return unsupported(kind)
    return f"not an image file ({path.suffix or 'no suffix'})"


def looks_like_image(path: str | os.PathLike[str]) -> bool:
    """Whether a scan for images takes `path` so that reading it can tell the user
    about it: an image (by suffix or content), another image format, a dangling
    link or an unreadable file; not a file of another kind (a text, a CSV)."""
    return not input_problem(path).startswith("not an image file")
