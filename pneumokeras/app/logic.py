"""What the Streamlit app (`page.py`) shows, as plain functions: no Streamlit here.

- `read_upload`: one uploaded file (bytes) → the pixels `convert` would store, or
  an `UploadError` whose message is one line for that file's card. The bytes are
  written into a private temporary folder (mode 0700) only while the converter's
  reader (`images.read_image`) reads them; the folder is removed at once.
- `analyse`: pixels → calibrated probability, label at the card's threshold,
  optional test-time augmentation, out-of-distribution warnings, the heatmap and,
  for examples with label boxes, the pointing game and energy in boxes.
- `overlay_png`, `result_rows`, `results_csv`, `results_json`: what is drawn and
  downloaded.
- `model_facts`, `decision_rule`: the model panel, from the model card.
- `synthetic_examples`, `split_examples`: cases to look at without data at hand
  (phantoms from `synth`, rendered in memory) or from a converted split.
- `streamlit_command`: how `cli.py app` starts the server.

Research and education only; not for diagnosis.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.io.dicom import DicomError
from pneumokeras.io.images import ImageError, ImageRecord, read_image
from pneumokeras.models.model_card import CLASS_NAMES, Classifier, model_file

APP_SCRIPT = Path(__file__).with_name("page.py")
MODEL_VARIABLE = "PNEUMOKERAS_MODEL"
DATA_VARIABLE = "PNEUMOKERAS_DATA"
UPLOAD_LIMIT_VARIABLE = "PNEUMOKERAS_MAX_UPLOAD_MB"
# "1" in a server process started by `cli.py app` (it serves the app and nothing else).
SERVER_VARIABLE = "PNEUMOKERAS_APP_SERVER"
# Streamlit's `server.maxUploadSize` (per file, MB) and the app's own check. A large
# uncompressed DX radiograph is 20-60 MB; RSNA's JPEG DICOMs are about 0.13 MB.
DEFAULT_UPLOAD_LIMIT_MB = 100
RESEARCH_NOTICE = (
    "Research and education only. pneumokeras is not a medical device: do not use "
    "it for diagnosis or any clinical decision."
)
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
THRESHOLD_METHOD_WORDS = {
    "youden": "Youden's J on the validation split",
    "f1": "best F1 on the validation split",
    "manual": "set by hand",
    "default": "training's default, never fitted: run `evaluate` on the model",
}
ROW_COLUMNS = (
    "name",
    "source",
    "patient_id",
    "probability",
    "label",
    "class",
    "threshold",
    "tta_count",
    "tta_mean",
    "tta_std",
    "heatmap",
    "layer",
    "explained_class",
    "truth",
    "pointing_game",
    "energy_in_boxes",
    "format",
    "modality",
    "view",
    "photometric",
    "transfer_syntax",
    "width",
    "height",
    "warning",
    "error",
)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class UploadError(ValueError):
    """An uploaded file that gives no image; the message is one line saying why."""


# ------------------------------------------------------------------------- uploads


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
        except (DicomError, ImageError) as err:
            raise UploadError(str(err).splitlines()[0] if str(err) else "unreadable") from err
        except Image.DecompressionBombError as err:
            raise UploadError("image too large to decode (Pillow's pixel limit)") from err


# ------------------------------------------------------------------------ analysis


@dataclasses.dataclass
class Result:
    """One analysed image (an upload, a synthetic example or a split example).

    Attributes:
        name: what the card is titled.
        source: `upload`, `synthetic` or `split:<name>`.
        error: '' or why there is no prediction (one line).
        record: the image read (pixels as the model sees them, file facts), or None.
        probability: calibrated pneumonia probability.
        label: 1 = pneumonia at the threshold (`p >= threshold`), 0 = normal.
        class_name: name of `label`.
        threshold: decision threshold used.
        warning: '' or why the image may be unlike the training data.
        tta: `(count, mean, std)` of test-time augmentations, or None.
        heatmap: `(S, S)` map in [0, 1], or None.
        method: heatmap method key (`gradcam`, ...).
        layer: heatmap target layer.
        explained: name of the class the heatmap explains.
        truth: true label (1/0) when known.
        boxes: `(K, 4)` label boxes `x, y, w, h` as fractions of the image, or None.
        pointing_game: heatmap maximum inside a box (positives with boxes), or None.
        energy_in_boxes: heatmap mass inside the boxes, or None.
    """

    name: str
    source: str = "upload"
    error: str = ""
    record: ImageRecord | None = None
    probability: float | None = None
    label: int | None = None
    class_name: str = ""
    threshold: float | None = None
    warning: str = ""
    tta: tuple[int, float, float] | None = None
    heatmap: np.ndarray | None = None
    method: str = ""
    layer: str = ""
    explained: str = ""
    truth: int | None = None
    boxes: np.ndarray | None = None
    pointing_game: bool | None = None
    energy_in_boxes: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the image was predicted."""
        return not self.error and self.probability is not None


def _warnings(record: ImageRecord, classifier: Classifier) -> str:
    """Out-of-distribution warnings, exactly as `predict` gives them."""
    from pneumokeras.serving.predict import input_warnings

    return input_warnings(record, classifier)


def analyse(
    classifier: Classifier,
    explainer: Any,
    name: str,
    record: ImageRecord,
    target: str = "pneumonia",
    tta: int = 0,
    seed: int = 0,
    source: str = "upload",
    truth: int | None = None,
    boxes: np.ndarray | None = None,
) -> Result:
    """Probability, decision, warnings, heatmap (and localisation scores) of one image.

    Args:
        classifier: the loaded model with its card.
        explainer: a `cam.HeatmapExplainer` of `classifier.model`.
        name: the card's title.
        record: the image as read (`read_upload`, `record_from_pixels`).
        target: class the heatmap explains: `pneumonia`, `normal` or `predicted`
            (the decision at the card's threshold, as `explain` does).
        tta: test-time augmentations (0 = none), see `predict.tta_probabilities`.
        seed: their seed.
        source: see `Result.source`.
        truth: the true label when known.
        boxes: the label boxes when known.
    """
    from pneumokeras.explain.localization import energy_in_boxes, pointing_game

    images = record.pixels[None, :, :, None].astype(np.float32)
    probability = float(classifier.probabilities(images)[0])
    label = int(classifier.decide(np.array([probability]))[0])
    result = Result(
        name=name,
        source=source,
        record=record,
        probability=probability,
        label=label,
        class_name=classifier.class_name(label),
        threshold=float(classifier.card.threshold),
        warning=_warnings(record, classifier),
        truth=truth,
        boxes=boxes,
        method=explainer.method,
        layer=explainer.layer,
    )
    if tta:
        from pneumokeras.serving.predict import tta_probabilities

        samples = tta_probabilities(classifier, record.pixels, tta, seed)
        result.tta = (int(tta), float(samples.mean()), float(samples.std()))
    index = label if target == "predicted" else CLASS_NAMES.index(target)
    result.explained = classifier.class_name(index)
    result.heatmap = explainer(images, [index])[0]
    if boxes is not None and len(boxes) and truth == 1:
        result.pointing_game = bool(pointing_game(result.heatmap, boxes))
        result.energy_in_boxes = float(energy_in_boxes(result.heatmap, boxes))
    return result


def analyse_upload(
    classifier: Classifier,
    explainer: Any,
    name: str,
    data: bytes,
    limit_mb: float,
    **options: Any,
) -> Result:
    """`read_upload` then `analyse`; a file that fails gives a `Result` with `error`.

    Never raises for a bad file: the page shows the other files whatever one holds.
    """
    try:
        record = read_upload(name, data, classifier.input_size, limit_mb)
    except UploadError as err:
        return Result(name=name, source=options.get("source", "upload"), error=str(err))
    return analyse(classifier, explainer, name, record, **options)


def record_from_pixels(pixels: np.ndarray, name: str = "", patient_id: str = "") -> ImageRecord:
    """An `ImageRecord` for pixels that are already the model's input (a split's PNG)."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    return ImageRecord(
        pixels=pixels,
        patient_id=patient_id,
        format="PNG",
        width=pixels.shape[1],
        height=pixels.shape[0],
        mode="L",
    )


def shown_text(result: Result) -> str:
    """What the heatmap is, e.g. "Grad-CAM of 'pneumonia' at stack4_block2_out"."""
    return (
        f"{METHOD_TITLES.get(result.method, result.method)} of '{result.explained}' at "
        f"{result.layer}"
    )


def overlay_png(result: Result, alpha: float) -> bytes:
    """The overlay figure (X-ray, heatmap, colour bar, boxes, title) as PNG bytes."""
    from pneumokeras.explain.overlay import overlay_title, render_overlay

    if not result.ok or result.heatmap is None or result.record is None:
        raise ValueError(f"{result.name} has no heatmap to draw")
    truth = None if result.truth is None else ("pneumonia" if result.truth else "normal")
    title = overlay_title(
        result.name,
        result.probability,
        result.class_name,
        result.threshold,
        shown_text(result),
        truth=truth,
        empty=not result.heatmap.any(),
    )
    return render_overlay(
        result.record.pixels,
        result.heatmap,
        alpha=alpha,
        title=title,
        boxes=result.boxes,
        colorbar_label=f"{METHOD_TITLES.get(result.method, result.method)} (normalised)",
    )


# ------------------------------------------------------------------- downloads


def result_row(result: Result) -> dict[str, Any]:
    """One JSON-ready row per image (columns `ROW_COLUMNS`; None where unknown)."""
    record = result.record
    count, mean, std = result.tta or (None, None, None)
    return {
        "name": result.name,
        "source": result.source,
        "patient_id": record.patient_id if record else "",
        "probability": result.probability,
        "label": result.label,
        "class": result.class_name or None,
        "threshold": result.threshold,
        "tta_count": count,
        "tta_mean": mean,
        "tta_std": std,
        "heatmap": METHOD_TITLES.get(result.method) if result.ok else None,
        "layer": result.layer or None,
        "explained_class": result.explained or None,
        "truth": result.truth,
        "pointing_game": result.pointing_game,
        "energy_in_boxes": result.energy_in_boxes,
        "format": record.format if record else "",
        "modality": record.modality if record else "",
        "view": record.view if record else "",
        "photometric": record.photometric if record else "",
        "transfer_syntax": record.transfer_syntax_name if record else "",
        "width": record.width if record else None,
        "height": record.height if record else None,
        "warning": result.warning,
        "error": result.error,
    }


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as CSV text (header `ROW_COLUMNS`; empty cells for None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def results_json(rows: Sequence[Mapping[str, Any]], model: Mapping[str, Any]) -> str:
    """`{"model": {...}, "results": [rows]}` as JSON text, with the research notice."""
    payload = {"notice": RESEARCH_NOTICE, "model": dict(model), "results": list(rows)}
    return json.dumps(payload, indent=2) + "\n"


def image_facts(record: ImageRecord) -> list[tuple[str, str]]:
    """The file facts worth showing: DICOM modality, view, photometric, size, syntax."""
    facts = [("format", record.format)]
    if record.format == "DICOM":
        facts += [
            ("modality", record.modality or "(not given)"),
            ("view position", record.view or "(not given)"),
            ("photometric interpretation", record.photometric or "(not given)"),
            ("transfer syntax", record.transfer_syntax_name or record.transfer_syntax),
        ]
        if record.body_part:
            facts.append(("body part", record.body_part))
    else:
        facts.append(("mode", record.mode))
    facts.append(("original size", f"{record.width} × {record.height} px"))
    return facts


# ------------------------------------------------------------------- the model panel


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return str(value)


def decision_rule(classifier: Classifier) -> str:
    """One sentence: what the probability is and when the label is pneumonia."""
    card = classifier.card
    if classifier.card_missing:
        return (
            f"No model card: probabilities are uncalibrated and the label is pneumonia "
            f"when P ≥ {card.threshold:.2f} (a placeholder, not fitted)."
        )
    if not card.fitted:
        calibration = "not calibrated (T = 1, never fitted)"
    elif (card.calibration or {}).get("applied") is False:
        calibration = (
            "not rescaled (T = 1: the temperature fitted on validation was not "
            "supported by the data)"
        )
    else:
        calibration = f"calibrated with temperature T = {card.temperature:.3g}"
    return (
        f"P(pneumonia) is the model's probability {calibration}; the label is pneumonia "
        f"when P ≥ {card.threshold:.3f} (threshold: "
        f"{THRESHOLD_METHOD_WORDS.get(card.threshold_method, card.threshold_method)})."
    )


def _shown_path(path: Path) -> str:
    """`path` relative to the working folder when inside it (`demo_output/run/...`)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def model_facts(classifier: Classifier) -> list[tuple[str, str]]:
    """The model panel: `(what, value)` pairs from the model card and the model."""
    card = classifier.card
    model_cfg = dict(card.config.get("model", {})) if card.config else {}
    architecture = card.model_name or "not recorded"
    details = [f"{k} {model_cfg[k]}" for k in ("filters", "last_stride") if k in model_cfg]
    if details:
        architecture += f" ({', '.join(details)})"
    facts = [
        ("file", _shown_path(classifier.path)),
        ("architecture", f"{architecture}, {classifier.model.count_params():,} parameters"),
        ("input", f"{card.input_size} × {card.input_size} px grayscale, pixels 0-255"),
        (
            "trained under",
            f"Keras {card.keras_version or '(not recorded)'}, "
            f"{card.backend or '(not recorded)'} backend, pneumokeras "
            f"{card.project_version}",
        ),
    ]
    data = card.data or {}
    if data:
        splits = data.get("splits", {})
        counts = ", ".join(
            f"{name} {info.get('count')} ({info.get('positives')} positive)"
            for name, info in splits.items()
        )
        facts.append(
            (
                "trained on",
                f"{data.get('source') or data.get('data_dir', '?')} at "
                f"{data.get('image_size', '?')} px: {counts}",
            )
        )
    if card.fold is not None:
        facts.append(("held-out fold", str(card.fold)))
    if card.validation:
        shown = ", ".join(
            f"{k} {_number(v)}"
            for k, v in sorted(card.validation.items())
            if not k.endswith("loss")
        )  # training losses say little here
        facts.append((f"validation (epoch {card.best_epoch})", shown))
    calibration = card.calibration or {}
    cal_text = f"T = {card.temperature:.3g}"
    if calibration:
        cal_text += (
            f", fitted on {calibration.get('n', '?')} {calibration.get('fitted_on', '')}"
            f" images; NLL {_number(calibration.get('nll_before'))} → "
            f"{_number(calibration.get('nll_after'))}"
        )
        if calibration.get("applied") is False:
            cal_text += " (fit not applied: not supported by the data)"
    elif not card.fitted:
        cal_text += " (never fitted)"
    facts.append(("calibration", cal_text))
    facts.append(
        (
            "threshold",
            f"{card.threshold:.3f}: "
            f"{THRESHOLD_METHOD_WORDS.get(card.threshold_method, card.threshold_method)}",
        )
    )
    facts.append(("Grad-CAM layer (default)", card.gradcam_layer or "last spatial layer"))
    return facts


def model_summary(classifier: Classifier) -> dict[str, Any]:
    """What the results JSON says about the model."""
    card = classifier.card
    return {
        "path": str(classifier.path),
        "model_name": card.model_name,
        "input_size": card.input_size,
        "threshold": card.threshold,
        "threshold_method": card.threshold_method,
        "temperature": card.temperature,
        "card_missing": classifier.card_missing,
    }


def default_layer(classifier: Classifier, layers: Sequence[str]) -> str:
    """The card's Grad-CAM layer when the model has it, else the last spatial layer."""
    if classifier.card.gradcam_layer in layers:
        return classifier.card.gradcam_layer
    return layers[-1] if layers else ""


# ------------------------------------------------------------------------ examples


@dataclasses.dataclass(frozen=True)
class Example:
    """A case with known truth: a synthetic DICOM, or a converted split's example.

    Attributes:
        name: its title.
        truth: 1 = pneumonia (lung opacity), 0 = not.
        boxes: `(K, 4)` label boxes `x, y, w, h` as fractions of the image.
        description: one line about it.
        data: DICOM file bytes (synthetic examples), else b''.
        pixels: `(S, S)` uint8 as stored (split examples), else None.
    """

    name: str
    truth: int
    boxes: np.ndarray
    description: str = ""
    data: bytes = b""
    pixels: np.ndarray | None = None


def synthetic_examples(size: int = 256, seed: int = 7) -> list[Example]:
    """Four synthetic patients rendered in memory as RSNA-like DICOMs (nothing written).

    Two positives ("Lung Opacity", with their label boxes), one "Normal" and one
    "No Lung Opacity / Not Normal" negative, from `synth`'s generator.

    Args:
        size: DICOM side, pixels.
        seed: data seed (each patient is a pure function of seed and index).
    """
    from pneumokeras import synth

    classes = (synth.LUNG_OPACITY, synth.LUNG_OPACITY, synth.NORMAL, synth.NOT_NORMAL)
    examples = []
    for index, label_class in enumerate(classes):
        spec = synth.sample_patient(synth.patient_seed(seed, index), label_class)
        data = synth.encode_dicom(spec, synth.render_image(spec, size))
        boxes = np.asarray(synth.boxes(spec, size), dtype=np.float32).reshape(-1, 4) / size
        truth = int(label_class == synth.LUNG_OPACITY)
        kind = (
            f"positive, {len(boxes)} opacit{'y' if len(boxes) == 1 else 'ies'}"
            if truth
            else f"negative ({label_class})"
        )
        examples.append(
            Example(
                name=f"synthetic-{index + 1}.dcm",
                truth=truth,
                boxes=boxes,
                data=data,
                description=f"synthetic {spec.view} phantom, {kind}",
            )
        )
    return examples


def decode_png(png: bytes) -> np.ndarray:
    """8-bit grayscale PNG bytes → `(S, S)` uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint8)


def split_examples(
    records: Sequence[Mapping[str, Any]], start: int, count: int, positives_only: bool = False
) -> tuple[list[Example], int]:
    """A page of a converted split (`tfrecords.read_split` records).

    Args:
        records: the split's records (`png`, `label`, `boxes`, `patient_id`, `view`).
        start: index of the page's first example among those selected.
        count: examples per page.
        positives_only: select label-1 examples only.

    Returns:
        The page's examples and how many examples are selected in all.
    """
    selected = [r for r in records if r["label"] == 1] if positives_only else list(records)
    page = selected[max(start, 0) : max(start, 0) + count]
    examples = [
        Example(
            name=str(r["patient_id"]),
            truth=int(r["label"]),
            boxes=np.asarray(r["boxes"], dtype=np.float32).reshape(-1, 4),
            description=f"{r.get('view') or '?'} view, {r.get('class') or ''}".rstrip(", "),
            pixels=decode_png(r["png"]),
        )
        for r in page
    ]
    return examples, len(selected)


def localisation_summary(results: Sequence[Result]) -> str:
    """'pointing game 3 / 4 hits, energy in boxes 0.52' over scored positives, or ''."""
    scored = [r for r in results if r.pointing_game is not None]
    if not scored:
        return ""
    hits = sum(bool(r.pointing_game) for r in scored)
    energy = float(np.mean([r.energy_in_boxes for r in scored]))
    return (
        f"pointing game {hits} / {len(scored)} hits (heatmap maximum inside a box), "
        f"mean energy in boxes {energy:.2f}, over the positives with boxes shown"
    )


# ------------------------------------------------------------------------- launching


def keep_keras_session(environ: Mapping[str, str] = os.environ) -> bool:
    """In the app's own server process, stops Streamlit from clearing Keras' session.

    Streamlit calls `keras.backend.clear_session()` after every run of a script
    that imported Keras (`_clean_problem_modules` in
    `streamlit/runtime/scriptrunner/script_runner.py`), for scripts that build a
    model per run. This app builds its model once per process and keeps it; the
    clearing garbage-collects the whole heap and empties TensorFlow's eager kernel
    cache, so the next Grad-CAM rebuilds its kernels. Measured on the 2-core CPU
    (224 px ResNet18, under load): an upload took 4.0 s after a clearing instead of
    2.4 s, plus 1.4 s for the clearing itself. Only where `PNEUMOKERAS_APP_SERVER`
    is "1" (set by `streamlit_command`), so a test process sharing Keras with
    other tests keeps Keras' own function.

    Returns:
        Whether `keras.backend.clear_session` is now a no-op in this process.
    """
    if environ.get(SERVER_VARIABLE) != "1":
        return False
    import keras

    keras.backend.clear_session = _keep_session
    return True


def _keep_session(free_memory: bool = True) -> None:
    """`keras.backend.clear_session` in the app's server process: nothing to clear."""


def upload_limit_mb(environ: Mapping[str, str] = os.environ) -> float:
    """The per-file upload limit from `PNEUMOKERAS_MAX_UPLOAD_MB` (default 100 MB)."""
    text = environ.get(UPLOAD_LIMIT_VARIABLE, "")
    try:
        value = float(text) if text else float(DEFAULT_UPLOAD_LIMIT_MB)
    except ValueError:
        value = float(DEFAULT_UPLOAD_LIMIT_MB)
    return value if value > 0 else float(DEFAULT_UPLOAD_LIMIT_MB)


def streamlit_command(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8501,
    max_upload_mb: int = DEFAULT_UPLOAD_LIMIT_MB,
    environ: Mapping[str, str] = os.environ,
) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and environment that serve the app.

    The model is checked (it must exist; the card is read by the page), and the
    environment selects the TensorFlow backend (Grad-CAM differentiates with
    `tf.GradientTape`; models trained under JAX load unchanged).

    Args:
        model: `model.keras` or the run folder holding it.
        data: a converted folder (with `manifest.json`) to browse, or None.
        host: address to bind (127.0.0.1: this machine only).
        port: TCP port.
        max_upload_mb: largest file accepted, MB (`server.maxUploadSize`).
        environ: the environment to start from.

    Returns:
        `(argv, env)`.

    Raises:
        UserError: missing model, a data folder without a manifest, bad port or limit.
    """
    path = model_file(model).resolve()
    if not 0 < int(port) < 65536:
        raise UserError(f"--port must be 1-65535; got {port}")
    if int(max_upload_mb) < 1:
        raise UserError(f"--max-upload-mb must be ≥ 1; got {max_upload_mb}")
    env = dict(environ)
    env.update(
        {
            "KERAS_BACKEND": "tensorflow",
            MODEL_VARIABLE: str(path),
            UPLOAD_LIMIT_VARIABLE: str(int(max_upload_mb)),
            SERVER_VARIABLE: "1",
        }
    )
    env.pop(DATA_VARIABLE, None)
    if data is not None:
        folder = Path(data)
        if not (folder / "manifest.json").is_file():
            raise UserError(
                f"--data {folder} has no manifest.json; give a folder made by "
                "`python cli.py convert`"
            )
        env[DATA_VARIABLE] = str(folder.resolve())
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_SCRIPT),
        "--server.address",
        host,
        "--server.port",
        str(int(port)),
        "--server.maxUploadSize",
        str(int(max_upload_mb)),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]
    return argv, env
