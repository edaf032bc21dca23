"""One image analysed for the page: probability, decision, warnings, heatmap, scores.

`analyse` runs what `predict` and `explain` run on one image: the calibrated
probability and the label at the card's threshold, optional test-time
augmentation, `predict`'s out-of-distribution warnings, the heatmap and, for
examples with label boxes, the pointing game and the energy in boxes. For an
ensemble (`cv`'s `ensemble.keras`) it also gives each member's calibrated
probability and their spread, and the heatmap is the mean of the members' maps
(`explain.heatmap_explainer`). `overlay_png` draws the result.

Research and education only; not for diagnosis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pneumokeras.app.uploads import UploadError, read_upload
from pneumokeras.io.images import ImageRecord
from pneumokeras.models.model_card import CLASS_NAMES, Classifier


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
        members: an ensemble's members' calibrated probabilities, in member
            order, or None for a single model.
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
    members: tuple[float, ...] | None = None
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

    @property
    def member_std(self) -> float | None:
        """Standard deviation of the members' probabilities (`predict`'s `member_std`)."""
        return None if self.members is None else float(np.std(self.members))


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
        explainer: `explain.heatmap_explainer(classifier, ...)`: a
            `HeatmapExplainer`, or for an ensemble an `EnsembleHeatmapExplainer`.
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
    from pneumokeras.serving.predict import input_warnings, member_probabilities

    images = record.pixels[None, :, :, None].astype(np.float32)
    probability = float(classifier.probabilities(images)[0])
    label = int(classifier.decide(np.array([probability]))[0])
    members = member_probabilities(classifier, images)
    result = Result(
        name=name,
        source=source,
        record=record,
        probability=probability,
        label=label,
        class_name=classifier.class_name(label),
        threshold=float(classifier.card.threshold),
        warning=input_warnings(record, classifier),
        members=None if members is None else tuple(float(p) for p in members[:, 0]),
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


def method_title(method: str) -> str:
    """`Grad-CAM` for `gradcam` (`cam.METHOD_TITLES`); Keras is imported only here."""
    from pneumokeras.explain.cam import METHOD_TITLES

    return METHOD_TITLES.get(method, method)


def shown_text(result: Result) -> str:
    """What the heatmap is, e.g. "Grad-CAM of 'pneumonia' at stack4_block2_out"."""
    return f"{method_title(result.method)} of '{result.explained}' at {result.layer}"


def members_text(result: Result) -> str:
    """The members' spread and probabilities ('' for a single model)."""
    if result.members is None:
        return ""
    shown = ", ".join(f"{p:.3f}" for p in result.members)
    return (
        f"Ensemble of {len(result.members)}: members' SD {result.member_std:.3f} "
        f"(member probabilities {shown})"
    )


def overlay_png(result: Result, alpha: float) -> bytes:
    """The overlay figure (X-ray, heatmap, colour bar, boxes, title) as PNG bytes."""
    from pneumokeras.explain.overlay import overlay_title, render_overlay

    if (
        not result.ok
        or result.heatmap is None
        or result.record is None
        or result.probability is None
        or result.threshold is None
    ):
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
        colorbar_label=f"{method_title(result.method)} (normalised)",
    )


def image_facts(record: ImageRecord) -> list[tuple[str, str]]:
    """The file facts worth showing: DICOM modality, view, photometric, size, syntax, and
    what the reader did beyond the usual rule (`ImageRecord.note`)."""
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
    if record.note:
        facts.append(("read as", record.note))
    return facts
