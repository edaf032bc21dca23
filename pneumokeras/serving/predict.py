"""Image files → calibrated pneumonia probabilities with a saved model.

Preprocessing equals the converter's (`images.read_image`: a DICOM through the
converter's own reader; a PNG/JPEG to 8-bit grayscale, centred on a black square,
area-resized), so the model sees at inference the pixels it was trained on.

The model and its card come from `model_card.load_classifier` (a `.keras` file or
its run folder). The pneumonia probability is calibrated with the card's
temperature and compared with its threshold (`p >= threshold` is pneumonia).
Without a card, predict refuses unless `threshold` is given (then the
probabilities are uncalibrated, and a warning says so); a card whose threshold
and temperature are training's defaults (never fitted by `evaluate`) is
announced. Each row also carries `warning`: why the image may be outside what
the model was trained on (a DICOM that is not a radiograph or not of the chest,
an image smaller than the model's input, intensities far outside the training
images'). For an ensemble (`cv`'s `ensemble.keras`, whose card lists its
`members`), `member_std` is the standard deviation of the members' calibrated
probabilities: how much the K fold models disagree (Lakshminarayanan et al.,
NeurIPS 2017). Research and education only; not for diagnosis.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.config import AugmentConfig
from pneumokeras.errors import UnreadableInputError, UserError
from pneumokeras.evaluation import drift
from pneumokeras.io.images import ImageRecord, find_inputs, read_image
from pneumokeras.models.model_card import Classifier, card_path, load_classifier
from pneumokeras.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)

COLUMNS = ("path", "patient_id", "probability", "label", "class", "warning", "note", "error")
TTA_COLUMNS = ("tta_mean", "tta_std")
ENSEMBLE_COLUMNS = ("member_std",)
# Test-time augmentation: small, label-preserving perturbations, drawn by the
# training augmenter (`records.augment.Augmenter`) with these settings.
TTA_AUGMENT = AugmentConfig(
    flip=True, rotation_degrees=5.0, brightness=0.05, contrast=0.0, translation=0.0
)


def load_for_prediction(model_path: str | os.PathLike[str], threshold: float | None) -> Classifier:
    """The classifier with the threshold to use; says what it falls back on.

    Args:
        model_path: `.keras` file or run folder.
        threshold: overrides the card's threshold; required when there is no card.

    Raises:
        UserError: no card and no `threshold`, an incomplete card, a bad model,
            or a threshold outside [0, 1].
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1]; got {threshold}")
    classifier = load_classifier(Path(model_path), require_card=False)
    card = classifier.card
    if classifier.card_missing:
        if threshold is None:
            raise UserError(
                f"{card_path(classifier.path)} is missing, so the model's threshold and "
                "calibration are unknown: run `evaluate` on the model to fit them, or pass "
                "--threshold to predict with uncalibrated probabilities"
            )
        logger.warning(
            "warning: no model card beside %s: probabilities are uncalibrated "
            "(temperature 1), threshold %s from --threshold",
            classifier.path,
            threshold,
        )
    elif not card.fitted and threshold is None:
        logger.warning(
            "warning: the model card's threshold %s and temperature %s are training's "
            "defaults, not fitted on validation data: run `evaluate` on the model to fit them",
            card.threshold,
            card.temperature,
        )
    if threshold is not None:
        classifier.card = card.replace(threshold=threshold, threshold_method="manual")
    return classifier


def member_probabilities(
    classifier: Classifier, images: np.ndarray, batch_size: int = 32
) -> np.ndarray | None:
    """Calibrated pneumonia probabilities `(M, N)` of an ensemble's M members; None otherwise.

    Each member is the nested model its card entry names (`members[i]["name"]`),
    calibrated with the ensemble's temperature; their mean is the ensemble's raw
    probability, before calibration.

    Args:
        classifier: a loaded model and card; a card without `members` is a single model.
        images: `(N, S, S[, 1])` pixels in [0, 255].
        batch_size: images per model call.

    Raises:
        UserError: the card names a member the model does not hold.
    """
    import keras

    if not classifier.card.members:
        return None
    images = np.asarray(images, dtype=np.float32)
    images = images[..., None] if images.ndim == 3 else images
    out = []
    for member in classifier.card.members:
        try:
            model = classifier.model.get_layer(member["name"])
        except (KeyError, ValueError) as err:
            raise UserError(
                f"{card_path(classifier.path)} lists member {member.get('name')!r}, which "
                f"{classifier.path.name} does not hold"
            ) from err
        raw = [
            keras.ops.convert_to_numpy(model(images[i : i + batch_size], training=False))[:, 1]
            for i in range(0, len(images), batch_size)
        ]
        out.append(classifier.calibrate(np.concatenate(raw).astype(np.float64)))
    return np.stack(out)


def image_seed(pixels: np.ndarray, seed: int) -> int:
    """A seed from an image's content and the user's seed (TTA draws per image)."""
    digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(seed).encode())
    return int.from_bytes(digest.digest()[:4], "little") & 0x3FFFFFFF  # room for seed + 4


def tta_probabilities(
    classifier: Classifier, pixels: np.ndarray, count: int, seed: int, batch_size: int = 32
) -> np.ndarray:
    """Calibrated probabilities `(count,)` of `count` augmented copies of one image.

    The copies are drawn by `records.augment.Augmenter` (`TTA_AUGMENT`) inside
    tf.data, seeded from the image's content and `seed`: an image gets the same
    draws whatever files come before it, and under either Keras backend (tf.data
    always runs the augmentation in TensorFlow).
    """
    import tensorflow as tf

    from pneumokeras.records.augment import Augmenter

    augmenter = Augmenter(TTA_AUGMENT, image_seed(pixels, seed))
    copies = np.repeat(pixels[None, :, :, None].astype(np.float32), count, axis=0)
    dataset = tf.data.Dataset.from_tensors(copies).map(augmenter)
    augmented = next(iter(dataset.as_numpy_iterator()))
    return classifier.probabilities(augmented, batch_size)


def _empty_row(path: Path, tta: int, ensemble: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": str(path),
        "patient_id": "",
        "probability": None,
        "label": None,
        "class": None,
        "warning": "",
        "note": "",
        "error": "",
    }
    if tta:
        row.update(tta_mean=None, tta_std=None)
    if ensemble:
        row.update(member_std=None)
    return row


def input_warnings(record: ImageRecord, classifier: Classifier) -> str:
    """Why an image may be outside what the model was trained on ('' when nothing)."""
    facts = {
        "modality": record.modality,
        "body_part": record.body_part,
        "rows": record.height,
        "columns": record.width,
    }
    return drift.image_warnings(
        record.pixels, facts, classifier.input_size, classifier.card.input_statistics
    )


def _predict_batch(
    classifier: Classifier,
    rows: list[dict[str, Any]],
    records: list[ImageRecord],
    tta: int,
    seed: int,
    batch_size: int,
) -> None:
    """Fills probability, label and class (and TTA) of `rows` in place."""
    images = np.stack([r.pixels for r in records])
    probs = classifier.probabilities(images, batch_size)
    members = member_probabilities(classifier, images, batch_size)
    for i, (row, record, prob, label) in enumerate(
        zip(rows, records, probs, classifier.decide(probs), strict=True)
    ):
        row.update(
            probability=float(prob), label=int(label), **{"class": classifier.class_name(label)}
        )
        if members is not None:
            row.update(member_std=float(members[:, i].std()))
        if tta:
            samples = tta_probabilities(classifier, record.pixels, tta, seed, batch_size)
            row.update(tta_mean=float(samples.mean()), tta_std=float(samples.std()))


def predict_files(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
    batch_size: int = 32,
    tta: int = 0,
    seed: int = 0,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Predicts pneumonia for image files and folders.

    Test-time augmentation (`tta=N`) runs the model on N randomly perturbed copies
    of each image (horizontal flip, ±5° rotation, ±5 % brightness; seeded per
    image, see `tta_probabilities`) and reports the mean and standard deviation
    of the calibrated probability. The spread measures how sensitive the
    prediction is to small input perturbations; it is NOT a calibrated (Bayesian)
    uncertainty, not a confidence interval, and a small spread does not mean the
    prediction is right. `probability` and `label` come from the unperturbed image.

    Args:
        model_path: `model.keras` or its run folder; the card beside it gives the
            threshold and the temperature (see the module docstring).
        inputs: files and/or folders (searched recursively, see `find_inputs`).
        out_path: where to write the rows (atomically); None writes nothing.
        fmt: `csv` or `json` (see `format_rows`); None = from `out_path`'s suffix
            (see `output_format`).
        batch_size: images read and passed to the model per call (TTA copies too).
        tta: number of test-time augmentations (0 = none).
        seed: seed of the augmentations.
        threshold: decision threshold overriding the card's (required without one).

    Returns:
        One dict per file, in input order: `path`, `patient_id` (DICOM tag, else
        ''), `probability` (calibrated pneumonia probability), `label` (1 =
        pneumonia at the threshold, 0 = normal), `class` (its name), `warning`
        ('' or why the input may be out of distribution), `note` ('' or what
        the reader did beyond the usual rule: an EXIF orientation applied, a
        colour image made gray), `error` ('' or why the
        file was not predicted; then probability/label/class are None); with
        `tta` also `tta_mean`, `tta_std`; for an ensemble also `member_std` (see
        `member_probabilities`).

    Raises:
        UserError: bad arguments, missing model or card, no input files, or no
            file that could be predicted.
    """
    fmt = output_format(out_path, fmt)
    if batch_size < 1:
        raise UserError(f"--batch-size must be ≥ 1; got {batch_size}")
    if tta < 0:
        raise UserError(f"--tta must be ≥ 0; got {tta}")
    if out_path is not None and Path(out_path).is_dir():
        raise UserError(f"--out {out_path} is a folder; give a file name")
    paths = find_inputs(inputs)
    if not paths:
        raise UserError(
            f"no image files (DICOM, PNG or JPEG by content, or named *.dcm, *.dicom, *.png, "
            f"*.jpg, *.jpeg) in {', '.join(map(str, inputs))}"
        )
    classifier = load_for_prediction(model_path, threshold)

    rows: list[dict[str, Any]] = []
    for start in range(0, len(paths), batch_size):
        batch_rows, records = [], []
        for path in paths[start : start + batch_size]:
            row = _empty_row(path, tta, bool(classifier.card.members))
            rows.append(row)
            try:
                record = read_image(path, classifier.input_size)
            except UnreadableInputError as err:
                row["error"] = str(err)
                continue
            row.update(
                patient_id=record.patient_id,
                warning=input_warnings(record, classifier),
                note=record.note,
            )
            batch_rows.append(row)
            records.append(record)
        if records:
            _predict_batch(classifier, batch_rows, records, tta, seed, batch_size)

    failed = [row for row in rows if row["error"]]
    if len(failed) == len(rows):
        raise UserError(
            f"none of the {len(rows)} input file(s) could be read; first: "
            f"{failed[0]['path']}: {failed[0]['error']}"
        )
    if out_path is not None:
        atomic_write_text(Path(out_path), format_rows(rows, fmt))
    return rows


SUFFIX_FORMATS = {".csv": "csv", ".json": "json"}


def output_format(out_path: str | os.PathLike[str] | None, fmt: str | None) -> str:
    """The format to write: `fmt`, else the one `out_path`'s suffix names, else CSV.

    Raises:
        UserError: an unknown format, or one that contradicts a `.csv`/`.json` suffix.
    """
    suffix = Path(out_path).suffix.lower() if out_path is not None else ""
    implied = SUFFIX_FORMATS.get(suffix)
    if fmt is None:
        return implied or "csv"
    if fmt not in ("csv", "json"):
        raise UserError(f"format must be csv or json; got {fmt!r}")
    if implied is not None and implied != fmt:
        raise UserError(
            f"--out {out_path} ends in {suffix} but --format is {fmt}; change one of them"
        )
    return fmt


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    """Prediction rows as CSV text (`COLUMNS`, then the TTA and ensemble ones) or a JSON list."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    extra = (*TTA_COLUMNS, *ENSEMBLE_COLUMNS)
    columns = list(COLUMNS) + [c for c in extra if rows and c in rows[0]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
