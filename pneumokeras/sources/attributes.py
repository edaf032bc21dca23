"""Per-example attributes for subgroup analysis: sex, age, view position and source.

`convert` stores, per example, what its source says of these and nothing else of
the patient, in the sidecar table `attributes.csv` (`COLUMNS`; the manifest names
it under `attributes`):

- **sex**: `M`, `F` or empty. DICOM `PatientSex` (`M`, `F`, `O`), NIH
  `Patient Gender` (`M`/`F`), CheXpert `Sex` (`Male`, `Female`, `Unknown`).
- **age**: whole years, or `90+` for ages above 89 (HIPAA safe harbour, 45 CFR
  164.514(b)(2)(i)(C)), or empty. DICOM `PatientAge` is an Age String (`062Y`;
  `006M`, `010W`, `003D` for months, weeks, days: converted to years and floored);
  plain numbers (`62`, `62.0`) are years.
- **view**: the view position, upper case: `AP`, `PA`, `LL`, ... (DICOM
  `ViewPosition`, NIH `View Position`, CheXpert `AP/PA`; a CheXpert lateral image
  without one is `LATERAL`), or empty.
- **source**: the data set the example comes from (the manifest's source name).

A value that cannot be read (`'4XY'`, an age of 414, a sex of `O`) is stored empty
and reported as a note (`Parsed.notes`, a row of the conversion's notes.csv); it
never stops a conversion. An explicit unknown (`Unknown`, `U`, empty) is empty
without a note. Folders converted before this table existed have none: their
subgroups are "unknown" (see `records.attribute_table`).

Pure functions on strings; no TensorFlow, no pixels.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pneumokeras.errors import UserError
from pneumokeras.sources.listing import without_image_suffix
from pneumokeras.utils.fileio import atomic_write_text, read_csv_table

ATTRIBUTES = "attributes.csv"
COLUMNS = ("example_id", "sex", "age", "view", "source")
NAMES = ("sex", "age", "view", "source")  # the attributes, in table order
OLDEST = 90  # ages from here on are stored as "90+"
OLDEST_TEXT = f"{OLDEST}+"
MAX_PLAUSIBLE_AGE = 120  # beyond this an age is a data error (NIH has 414)
# Findings-CSV columns found by name when not given (NIH first, then CheXpert).
SEX_COLUMNS = ("Patient Gender", "Sex", "PatientSex")
AGE_COLUMNS = ("Patient Age", "Age", "PatientAge")
VIEW_COLUMNS = ("View Position", "AP/PA", "ViewPosition")
FRONTAL_LATERAL_COLUMNS = ("Frontal/Lateral",)

_SEX = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}
_SEX_UNKNOWN = {"", "U", "UNKNOWN", "UNK"}
# DICOM Age String units (PS3.5 6.2): days, weeks, months, years → years per unit.
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([DWMY])?", re.IGNORECASE)
_VIEW = re.compile(r"[A-Z]{2,8}")


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One example's attributes as stored (strings; empty = unknown).

    Attributes:
        sex: `M`, `F` or ''.
        age: whole years (`'62'`), `'90+'`, or ''.
        view: upper-case view position (`AP`, `PA`, `LL`, `LATERAL`, ...) or ''.
        source: the data set's name, or ''.
    """

    sex: str = ""
    age: str = ""
    view: str = ""
    source: str = ""

    def get(self, name: str) -> str:
        """The value of attribute `name` (one of `NAMES`)."""
        if name not in NAMES:
            raise ValueError(f"attribute must be one of {', '.join(NAMES)}. Received: {name!r}")
        return str(getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Parsed:
    """Attributes read from a source, and a note per value that could not be read."""

    attributes: Attributes
    notes: tuple[str, ...] = ()


def parse_sex(text: str | None) -> tuple[str, str | None]:
    """`M`/`F` from a sex cell or tag; `('', note)` for a value that is neither.

    Returns:
        `(value, note)`: note is None when the value was read or explicitly unknown.
    """
    cell = (text or "").strip().upper()
    if cell in _SEX:
        return _SEX[cell], None
    if cell in _SEX_UNKNOWN:
        return "", None
    return "", f"sex {text!r} is not M or F; left empty"


def parse_age(text: str | None) -> tuple[str, str | None]:
    """Whole years (`'62'`), `'90+'` above 89, or `''`, from an age cell or Age String.

    `062Y` and `62` are 62; `006M` (months), `010W` (weeks) and `003D` (days) are
    converted to years and floored (0); `62.7` is 62.

    Returns:
        `(value, note)`: note is None when the value was read or the cell empty.
    """
    cell = (text or "").strip()
    if not cell:
        return "", None
    match = _AGE.fullmatch(cell)
    if match is None:
        return "", f"age {text!r} is not a number of years (or a DICOM age such as 062Y)"
    unit = (match.group(2) or "Y").upper()
    years = math.floor(float(match.group(1)) * _AGE_UNITS[unit] + 1e-9)
    if years > MAX_PLAUSIBLE_AGE:
        return "", f"age {text!r} is implausible (over {MAX_PLAUSIBLE_AGE} years); left empty"
    return (OLDEST_TEXT if years >= OLDEST else str(years)), None


def parse_view(text: str | None, frontal_lateral: str | None = None) -> tuple[str, str | None]:
    """The view position, upper case (`AP`, `PA`, `LL`, ...), or `''`.

    Args:
        text: the view cell or ViewPosition tag.
        frontal_lateral: CheXpert's `Frontal/Lateral` cell, if the source has one:
            a lateral image without a view position is `LATERAL`.

    Returns:
        `(value, note)`: note is None when the value was read or the cell empty.
    """
    cell = (text or "").strip().upper()
    if not cell:
        side = (frontal_lateral or "").strip().upper()
        return ("LATERAL" if side == "LATERAL" else ""), None
    if _VIEW.fullmatch(cell) is None:
        return "", f"view position {text!r} is not a view code such as AP or PA; left empty"
    return cell, None


def parse(
    sex: str | None,
    age: str | None,
    view: str | None,
    source: str,
    frontal_lateral: str | None = None,
) -> Parsed:
    """Attributes from raw values (DICOM tags or CSV cells), with a note per unreadable one."""
    values = {
        "sex": parse_sex(sex),
        "age": parse_age(age),
        "view": parse_view(view, frontal_lateral),
    }
    notes = tuple(note for _, note in values.values() if note)
    return Parsed(
        Attributes(
            sex=values["sex"][0], age=values["age"][0], view=values["view"][0], source=source
        ),
        notes,
    )


# ---------------------------------------------------------------- findings CSVs


@dataclasses.dataclass(frozen=True)
class Columns:
    """The findings-CSV columns attributes are read from (None: the CSV has none)."""

    sex: str | None = None
    age: str | None = None
    view: str | None = None
    frontal_lateral: str | None = None

    def describe(self) -> dict[str, str | None]:
        """For the manifest: attribute → column."""
        return dataclasses.asdict(self)


def find_columns(
    header: Sequence[str],
    sex_column: str | None = None,
    age_column: str | None = None,
    view_column: str | None = None,
    where: str = "the labels CSV",
) -> Columns:
    """The attribute columns of a findings CSV: the given ones, else found by name.

    Args:
        header: the CSV's column names.
        sex_column, age_column, view_column: columns named by the user (must exist).
        where: how errors name the CSV.

    Raises:
        UserError: a named column is not in the header.
    """
    columns = list(header)

    def pick(given: str | None, defaults: tuple[str, ...], option: str) -> str | None:
        if given is not None:
            if given not in columns:
                raise UserError(
                    f"{option} {given!r} is not a column of {where}; columns: {', '.join(columns)}"
                )
            return given
        return next((c for c in defaults if c in columns), None)

    return Columns(
        sex=pick(sex_column, SEX_COLUMNS, "--sex-column"),
        age=pick(age_column, AGE_COLUMNS, "--age-column"),
        view=pick(view_column, VIEW_COLUMNS, "--view-column"),
        frontal_lateral=next((c for c in FRONTAL_LATERAL_COLUMNS if c in columns), None),
    )


def from_row(row: Mapping[str, str | None], columns: Columns, source: str) -> Parsed:
    """One findings-CSV row's attributes (`find_columns` says where they are)."""

    def cell(column: str | None) -> str | None:
        return row.get(column) if column else None

    return parse(
        cell(columns.sex),
        cell(columns.age),
        cell(columns.view),
        source,
        frontal_lateral=cell(columns.frontal_lateral),
    )


def read_findings(
    labels_csv: str | Path,
    image_column: str,
    source: str,
    sex_column: str | None = None,
    age_column: str | None = None,
    view_column: str | None = None,
) -> tuple[Columns, dict[str, Parsed]]:
    """The attributes of every image row of a findings CSV (NIH, CheXpert).

    Image ids are made as the findings layout makes them
    (`listing.without_image_suffix` of the image cell, `/` for `\\`); the first
    row of an image wins, as there.

    Args:
        labels_csv: the findings CSV.
        image_column: its image column (the findings layout's choice).
        source: the data set's name.
        sex_column, age_column, view_column: named by the user, else found by name.

    Returns:
        The columns used, and `{image id: Parsed}`.

    Raises:
        UserError: an unreadable CSV, or a named column it lacks.
    """
    path = Path(labels_csv)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read {path}: {err}") from err
    columns = find_columns(header, sex_column, age_column, view_column, where=str(path))
    out: dict[str, Parsed] = {}
    for row in rows:
        cell = (row.get(image_column) or "").strip().replace("\\", "/")
        if cell:
            out.setdefault(without_image_suffix(cell), from_row(row, columns, source))
    return columns, out


# ---------------------------------------------------------------- the table


def render_table(rows: Mapping[str, Attributes]) -> str:
    """`attributes.csv` text: the header, then one row per example id, sorted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for example_id in sorted(rows):
        item = rows[example_id]
        writer.writerow([example_id, item.sex, item.age, item.view, item.source])
    return buffer.getvalue()


def write_table(path: str | Path, rows: Mapping[str, Attributes]) -> Path:
    """Writes `attributes.csv` atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_table(rows))
    return path


def _checked(path: Path, line: int, name: str, value: str) -> str:
    """A stored value as written by `render_table`, else UserError."""
    parsers = {"sex": parse_sex, "age": parse_age, "view": parse_view}
    if name in parsers and value and not (name == "age" and value == OLDEST_TEXT):
        parsed, note = parsers[name](value)
        if note or parsed != value:
            raise UserError(f"{path} line {line}: {name} {value!r} is not a stored value")
    return value


def read_table(path: str | Path) -> dict[str, Attributes]:
    """Reads `attributes.csv` (as `write_table` writes it).

    Returns:
        `{example id: Attributes}`.

    Raises:
        UserError: unreadable file, another header, a row of another length, an
            example id given twice, or a value `write_table` would not write.
    """
    path = Path(path)
    table: dict[str, Attributes] = {}
    for line, row in enumerate(read_csv_table(path, COLUMNS), start=2):
        if len(row) != len(COLUMNS) or not row[0]:
            raise UserError(f"{path} line {line}: expected {','.join(COLUMNS)}; got {row!r}")
        if row[0] in table:
            raise UserError(f"{path} line {line}: example id {row[0]!r} is given twice")
        values = {name: _checked(path, line, name, row[i + 1]) for i, name in enumerate(NAMES)}
        table[row[0]] = Attributes(**values)
    return table


# ---------------------------------------------------------------- age bands


DEFAULT_AGE_BANDS = (18, 40, 60, 80)


def age_years(stored: str) -> int | None:
    """Years of a stored age (`'62'` → 62, `'90+'` → 90), None when empty."""
    if not stored:
        return None
    return OLDEST if stored == OLDEST_TEXT else int(stored)


def check_age_bands(edges: Sequence[int]) -> None:
    """Refuses band edges that are not increasing whole years in (0, 90].

    (An edge above 90 would split the `90+` ages, whose years are not stored.)

    Raises:
        ValueError: naming the problem.
    """
    if not edges:
        raise ValueError("age bands need at least one edge")
    if any(not isinstance(e, int) or isinstance(e, bool) for e in edges):
        raise ValueError(f"age band edges must be whole years; got {list(edges)}")
    if any(e <= 0 or e > OLDEST for e in edges):
        raise ValueError(f"age band edges must be in 1..{OLDEST}; got {list(edges)}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"age band edges must increase; got {list(edges)}")


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the bands `edges` make: (18, 40, 60, 80) → `<18, 18–39, 40–59, 60–79, 80+`."""
    check_age_bands(edges)
    labels = [f"<{edges[0]}"]
    labels += [f"{low}–{high - 1}" for low, high in itertools.pairwise(edges)]
    return [*labels, f"{edges[-1]}+"]


def age_band(stored: str, edges: Sequence[int]) -> str:
    """The band label of a stored age, `''` when unknown (edges as `age_band_labels`)."""
    return age_bands([stored], edges)[0]


def age_bands(stored: Iterable[str], edges: Sequence[int]) -> list[str]:
    """`age_band` of many stored ages (the labels computed once)."""
    labels = age_band_labels(edges)
    out = []
    for value in stored:
        years = age_years(value)
        out.append("" if years is None else labels[sum(years >= edge for edge in edges)])
    return out
