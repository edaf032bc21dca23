"""The `explain` command: heatmaps of a trained model on files or a converted split.

A short sequence of named steps over the floors below: `model_card` loads the
calibrated classifier, `images` reads files, `cam` computes the heatmaps
(tf-keras-vis, so TensorFlow only), `localization` scores them against the RSNA
boxes and `overlay` draws them.

`explain_run` writes into its output folder:
    <name>.png          one overlay per image (X-ray, heatmap, colour bar, boxes)
    contact_sheet.png   the first overlays in a grid
    explain.csv         one row per image: probability, labels, localization scores
    summary.json        method, layer, target class, count, mean localization scores

One folder, one run. The output folder must be new, empty, or hold an earlier
explain run and nothing else; anything explain did not write there (an input
image, a subfolder, another command's files) is refused with a UserError before
any work, and nothing is removed. An earlier run's own outputs (the overlays its
explain.csv lists, contact_sheet.png, explain.csv, summary.json) are removed
before the new ones are written, so the folder never mixes two runs. While a run
writes, the hidden file `.explain-run` lists every overlay it may leave behind,
so the next run also recognises and replaces the outputs of an interrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.config import Config, ExplainConfig
from pneumokeras.errors import UnreadableInputError, UserError
from pneumokeras.explain.cam import (
    BATCH,
    METHOD_TITLES,
    EnsembleHeatmapExplainer,
    HeatmapExplainer,
    require_tensorflow,
)
from pneumokeras.explain.localization import energy_in_boxes, pointing_game
from pneumokeras.explain.overlay import (
    CONTACT_SHEET_TILES,
    contact_sheet,
    overlay_title,
    render_overlay,
)
from pneumokeras.io.png import decode_png
from pneumokeras.models.model_card import (
    CARD_FILE,
    DEFAULT_TEMPERATURE,
    DEFAULT_THRESHOLD,
    Classifier,
    load_classifier,
)
from pneumokeras.records.manifest import load_manifest
from pneumokeras.utils.fileio import atomic_open, atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "name",
    "patient_id",
    "file",
    "probability",
    "predicted_label",
    "true_label",
    "explained_class",
    "pointing_game",
    "energy_in_boxes",
    "overlay",
)
RUN_FILES = ("contact_sheet.png", "explain.csv", "summary.json")
# Overlays a run in progress may leave behind, one name per line (see the docstring).
LEDGER = ".explain-run"
_RESERVED_STEMS = {Path(name).stem for name in RUN_FILES}
# `fileio.atomic_open`'s temporary name for `<name>`, left only by a killed process.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-[^/]+$")


@dataclasses.dataclass(frozen=True)
class ExplainSummary:
    """What `explain_run` did (summary.json: `to_dict`).

    Attributes:
        method: `gradcam`, `gradcam++` or `scorecam`.
        layer: the target layer (for an ensemble, each member's).
        target_class: `pneumonia`, `normal` or `predicted`.
        count: images explained.
        positives: label-1 images among them (known labels only).
        positives_with_boxes: positives with label boxes, the ones scored.
        pointing_game: share of scored positives whose map peaks inside a box, or
            None when none was scored.
        energy_in_boxes: mean share of the map inside the boxes over them, or None.
        threshold: the decision threshold used.
        temperature: the calibration temperature used.
        input_size: the model's input side, pixels.
        model: the `.keras` file.
        source: what was explained (`files`, or `data_dir`, `split`, `only_positives`).
        out_dir: the output folder.
    """

    method: str
    layer: str
    target_class: str
    count: int
    positives: int
    positives_with_boxes: int
    pointing_game: float | None
    energy_in_boxes: float | None
    threshold: float
    temperature: float
    input_size: int
    model: Path
    source: Mapping[str, Any]
    out_dir: Path

    def to_dict(self) -> dict[str, Any]:
        """summary.json: JSON-ready."""
        values = dataclasses.asdict(self)
        values.update(model=str(self.model), out_dir=str(self.out_dir), source=dict(self.source))
        return values


@dataclasses.dataclass
class _Sample:
    name: str  # overlay file stem
    patient_id: str
    file: str  # source path ('' for TFRecord examples)
    pixels: np.ndarray  # (S, S) uint8
    label: int | None = None
    boxes: np.ndarray | None = None  # (K, 4) normalised x, y, w, h; None = unknown


# ------------------------------------------------------------------------- inputs


def _check_request(
    files: Sequence[str | Path] | None,
    data_dir: str | Path | None,
    limit: int | None,
    only_positives: bool,
) -> None:
    if (files is None) == (data_dir is None):
        raise UserError("explain needs either image files or a data folder (--data), not both")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be ≥ 1; got {limit}")
    if files is not None and only_positives:
        raise UserError("--only-positives needs labels: use a data folder, not files")


def _load_classifier(model_path: str | Path) -> Classifier:
    """The model with its card; a missing card means the defaults, said once."""
    classifier = load_classifier(model_path, require_card=False)
    if classifier.card_missing:
        logger.warning(
            "warning: %s has no model card (%s); using threshold %s and temperature %s",
            classifier.path.parent,
            CARD_FILE,
            DEFAULT_THRESHOLD,
            DEFAULT_TEMPERATURE,
        )
    return classifier


def _safe_stem(text: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return stem or "image"


def _assign_names(samples: list[_Sample]) -> None:
    """Makes overlay stems unique (and distinct from the run's own files)."""
    used = set(_RESERVED_STEMS)
    for sample in samples:
        base = _safe_stem(sample.name)
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        sample.name = name


def _split_samples(
    data_dir: str | Path, split: str, size: int, limit: int, only_positives: bool
) -> list[_Sample]:
    """The first `limit` examples of a split (positives only when asked), in file order."""
    from pneumokeras.records import tfrecords

    stored = load_manifest(data_dir).image_size
    if stored != size:
        raise UserError(
            f"the model takes {size} px images but {data_dir} holds {stored} px images; "
            f"convert the data with --size {size}"
        )
    samples = []
    for record in tfrecords.read_split(data_dir, split):
        if only_positives and record["label"] != 1:
            continue
        samples.append(
            _Sample(
                name=record["patient_id"],
                patient_id=record["patient_id"],
                file="",
                pixels=decode_png(record["png"]),
                label=int(record["label"]),
                boxes=np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4),
            )
        )
        if len(samples) >= limit:
            break
    return samples


def _file_samples(files: Sequence[str | Path], size: int, limit: int | None) -> list[_Sample]:
    """Files (folders searched like `predict`), read exactly as `predict` reads them."""
    from pneumokeras.io.images import find_inputs, load_image

    samples = []
    for path in find_inputs(files)[:limit]:
        try:
            pixels, patient_id = load_image(path, size)
        except UnreadableInputError as err:
            raise UserError(f"cannot read {path}: {err}") from err
        samples.append(
            _Sample(
                name=path.stem,
                # RSNA names each DICOM after its patient; PNG/JPEG carry no tag.
                patient_id=str(patient_id) or path.stem,
                file=str(path),
                pixels=np.asarray(pixels, dtype=np.uint8),
            )
        )
    return samples


def _gather_samples(
    files: Sequence[str | Path] | None,
    data_dir: str | Path | None,
    split: str,
    size: int,
    limit: int | None,
    only_positives: bool,
    settings: ExplainConfig,
) -> tuple[list[_Sample], dict[str, Any]]:
    """The images to explain, uniquely named, and the `source` entry of the summary."""
    if files is not None:
        samples = _file_samples(files, size, limit)
        source: dict[str, Any] = {"files": len(samples)}
    elif data_dir is not None:
        samples = _split_samples(data_dir, split, size, limit or settings.limit, only_positives)
        source = {"data_dir": str(data_dir), "split": split, "only_positives": only_positives}
    else:
        raise UserError("explain needs either image files or a data folder (--data)")
    if not samples:
        why = " (no positives in the split)" if only_positives else ""
        raise UserError(f"no images to explain{why}")
    _assign_names(samples)
    return samples, source


# ------------------------------------------------------------------ the output folder


def _plain_png_name(name: str) -> bool:
    """A file name inside the folder (no path, not hidden) of an overlay."""
    return name == Path(name).name and name.endswith(".png") and not name.startswith(".")


def _listed_outputs(out_dir: Path) -> set[str]:
    """Names an earlier run wrote into `out_dir`, from its explain.csv and ledger.

    Empty when neither is there (or explain.csv is not explain's): the folder holds
    no explain run.
    """
    overlays: list[str] = []
    found = False
    table = out_dir / "explain.csv"
    if table.is_file():
        try:
            with open(table, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) == CSV_COLUMNS:
                    overlays += [row["overlay"] or "" for row in reader]
                    found = True
        except (OSError, UnicodeDecodeError, csv.Error):
            pass  # not explain's table: the folder is refused below
    ledger = out_dir / LEDGER
    if ledger.is_file():
        try:
            overlays += ledger.read_text(encoding="utf-8").splitlines()
            found = True
        except (OSError, UnicodeDecodeError):
            pass  # not explain's ledger: the folder is refused below
    if not found:
        return set()
    return {*RUN_FILES, LEDGER, *(name for name in overlays if _plain_png_name(name))}


def _previous_outputs(out_dir: Path) -> list[Path]:
    """The files of an earlier explain run in `out_dir`, which the new run replaces.

    Raises:
        UserError: `out_dir` is a file, or holds anything explain did not write.
    """
    if not out_dir.exists():
        return []
    if not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    entries = sorted(out_dir.iterdir())
    ours = _listed_outputs(out_dir) if entries else set()

    def owned(path: Path) -> bool:
        if not path.is_file() or path.is_symlink():
            return False
        temporary = _TEMPORARY.match(path.name)
        name = temporary["name"] if temporary else path.name
        return name in ours or (temporary is not None and name in {*RUN_FILES, LEDGER})

    strays = [path.name for path in entries if not owned(path)]
    if strays:
        more = f" and {len(strays) - 1} more" if len(strays) > 1 else ""
        raise UserError(
            f"--out {out_dir} holds files explain did not write ({strays[0]}{more}); "
            "give an empty or new folder, or one holding only an earlier explain run"
        )
    return entries


def _replace_previous(out_dir: Path, previous: list[Path], samples: list[_Sample]) -> None:
    """Lists what this run may leave behind in the ledger, then removes the earlier run.

    The ledger first: an interruption at any point leaves only files it lists
    (or the new explain.csv lists), which the next run removes in turn.
    """
    names = sorted(({p.name for p in previous} | {f"{s.name}.png" for s in samples}) - {LEDGER})
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / LEDGER, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{name}\n" for name in names))
    for path in previous:
        if path.name != LEDGER:
            path.unlink(missing_ok=True)


def _write_outputs(
    out_dir: Path, rows: list[dict[str, Any]], sheet: list[bytes], summary: dict[str, Any]
) -> None:
    """contact_sheet.png, explain.csv, summary.json; then the run is complete (no ledger)."""
    atomic_write_bytes(out_dir / "contact_sheet.png", contact_sheet(sheet))
    with atomic_open(out_dir / "explain.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_json(out_dir / "summary.json", summary)
    (out_dir / LEDGER).unlink()


# ---------------------------------------------------------------------- explaining


@dataclasses.dataclass
class _Results:
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    sheet: list[bytes] = dataclasses.field(default_factory=list)  # contact sheet tiles
    hits: list[float] = dataclasses.field(default_factory=list)  # positives with boxes
    energies: list[float] = dataclasses.field(default_factory=list)


def _explain_batch(
    batch: list[_Sample],
    classifier: Classifier,
    explainer: HeatmapExplainer | EnsembleHeatmapExplainer,
    settings: ExplainConfig,
    out_dir: Path,
    results: _Results,
) -> None:
    """Probabilities, heatmaps, scores and overlays of one batch; appends to `results`."""
    images = np.stack([s.pixels for s in batch]).astype(np.float32)[..., None]
    probs = classifier.probabilities(images)
    predicted = classifier.decide(probs)
    targets = predicted if settings.target_class == "predicted" else settings.target_class
    explained = explainer.targets(images, targets)
    maps = explainer(images, explained)
    method = METHOD_TITLES[settings.method]
    for sample, prob, pred, cls, heatmap in zip(
        batch, probs, predicted, explained, maps, strict=True
    ):
        boxes = sample.boxes if sample.boxes is not None and len(sample.boxes) else None
        scored = boxes is not None
        hit = None if boxes is None else bool(pointing_game(heatmap, boxes))
        energy = None if boxes is None else float(energy_in_boxes(heatmap, boxes))
        if hit is not None and energy is not None and sample.label == 1:
            results.hits.append(float(hit))
            results.energies.append(energy)
        title = overlay_title(
            sample.name,
            prob,
            classifier.class_name(pred),
            classifier.card.threshold,
            f"{method} of '{classifier.class_name(cls)}' at {explainer.layer}",
            truth=None if sample.label is None else classifier.class_name(sample.label),
            empty=not heatmap.any(),
        )
        png = render_overlay(
            sample.pixels,
            heatmap,
            alpha=settings.alpha,
            title=title,
            boxes=sample.boxes if scored else None,
            colorbar_label=f"{method} (normalised)",
        )
        overlay = f"{sample.name}.png"
        atomic_write_bytes(out_dir / overlay, png)
        if len(results.sheet) < CONTACT_SHEET_TILES:
            results.sheet.append(png)
        results.rows.append(
            {
                "name": sample.name,
                "patient_id": sample.patient_id,
                "file": sample.file,
                "probability": f"{prob:.6f}",
                "predicted_label": int(pred),
                "true_label": "" if sample.label is None else sample.label,
                "explained_class": classifier.class_name(cls),
                "pointing_game": "" if hit is None else int(hit),
                "energy_in_boxes": "" if energy is None else f"{energy:.6f}",
                "overlay": overlay,
            }
        )


def heatmap_explainer(
    classifier: Classifier, method: str = "gradcam", layer: str = ""
) -> HeatmapExplainer | EnsembleHeatmapExplainer:
    """The classifier's heatmap explainer; for an ensemble (`cv`), the mean of its members' maps.

    Args:
        classifier: the loaded model and card; a card listing `members` is an ensemble.
        method: `gradcam`, `gradcam++` or `scorecam`.
        layer: target layer; '' = the card's `gradcam_layer` (each member's own
            for an ensemble).

    Raises:
        UserError: not under TensorFlow, unknown method, member or layer.
    """
    members = classifier.card.members
    if members:
        names = [member["name"] for member in members]
        layers = [layer or member.get("gradcam_layer", "") for member in members]
        return EnsembleHeatmapExplainer(classifier.model, names, method, layers)
    return HeatmapExplainer(classifier.model, method, layer or classifier.card.gradcam_layer)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def explain_run(
    model_path: str | Path,
    out_dir: str | Path,
    config: Config,
    files: Sequence[str | Path] | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
    only_positives: bool = False,
    progress: bool = True,
) -> ExplainSummary:
    """Explains a trained model on files or on a converted split; writes overlays.

    Settings come from `config.explain` (method, layer, target class, limit,
    alpha); the decision threshold, calibration temperature, input size and
    default target layer from the model card (`model.json`; without one, the
    defaults threshold 0.5 and temperature 1, with a warning). An ensemble
    (`cv`'s `ensemble.keras`) shows the mean of its members' maps, each at the
    member's own layer (`cam.EnsembleHeatmapExplainer`). The reported
    probability is the temperature-calibrated probability of pneumonia; the
    predicted label compares it with the threshold, and `target_class: predicted`
    explains that label.

    Args:
        model_path: `model.keras`, or the run folder holding it.
        out_dir: output folder (created); see the module docstring for its files
            and for what it may already hold.
        config: settings; only `config.explain` is read.
        files: DICOM/PNG/JPEG files (read with `images.load_image`); or None.
        data_dir: converted TFRecord folder (with `manifest.json`); or None.
        split: split of `data_dir` to explain.
        limit: maximum number of images, in file order (after `only_positives`);
            None = `config.explain.limit` for a split, all given files.
        only_positives: from a split, keep label-1 patients only.
        progress: show a progress bar on stderr.

    Returns:
        The `ExplainSummary` written to `summary.json`.

    Raises:
        UserError: not under TensorFlow, no/both inputs, an output folder holding
            other files, unreadable model or inputs, bad layer, or nothing to
            explain.
    """
    from tqdm import tqdm

    require_tensorflow()
    settings = config.explain
    _check_request(files, data_dir, limit, only_positives)
    out_dir = Path(out_dir)
    previous = _previous_outputs(out_dir)
    classifier = _load_classifier(model_path)
    explainer = heatmap_explainer(classifier, settings.method, settings.layer)
    samples, source = _gather_samples(
        files, data_dir, split, classifier.input_size, limit, only_positives, settings
    )
    _replace_previous(out_dir, previous, samples)

    results = _Results()
    with tqdm(total=len(samples), desc="explain", unit="img", disable=not progress) as bar:
        for start in range(0, len(samples), BATCH):
            batch = samples[start : start + BATCH]
            _explain_batch(batch, classifier, explainer, settings, out_dir, results)
            bar.update(len(batch))

    summary = ExplainSummary(
        method=settings.method,
        layer=explainer.layer,
        target_class=settings.target_class,
        count=len(results.rows),
        positives=sum(1 for s in samples if s.label == 1),
        positives_with_boxes=len(results.hits),
        pointing_game=_mean(results.hits),
        energy_in_boxes=_mean(results.energies),
        threshold=classifier.card.threshold,
        temperature=classifier.card.temperature,
        input_size=classifier.input_size,
        model=classifier.path,
        source=source,
        out_dir=out_dir,
    )
    _write_outputs(out_dir, results.rows, results.sheet, summary.to_dict())
    return summary
