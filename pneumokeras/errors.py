"""The errors pneumokeras raises on purpose, in one hierarchy.

`PneumokerasError` is the base. The command line prints a `UserError` (bad input
the user can fix: a missing file, invalid settings, unusable data) as one line and
exits 2; any other error is a failure (exit 1). `UnreadableInputError` is the one
class for "this file gives no image" (a DICOM, PNG/JPEG or upload that cannot be
read): commands that read many files record it as a row for that file and go on.
"""


class PneumokerasError(Exception):
    """Base of every error pneumokeras raises on purpose."""


class UserError(PneumokerasError):
    """Bad input (missing file, invalid data or settings); exit code 2."""


class UnreadableInputError(UserError, ValueError):
    """A file that gives no grayscale image; the message is one line saying why."""
