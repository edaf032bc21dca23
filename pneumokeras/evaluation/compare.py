"""The `compare` command: two or more models on the same images, paired statistics.

`compare_run` follows these steps:

1. load every model with its card (`model.keras`, a run folder, `cv`'s
   `ensemble.keras`); the same file twice, or fewer than two models, is refused;
2. give each model the converted folder holding its input size (one `--data` per
   size: models of different sizes read the same split converted at their own
   size; a size no folder holds is refused), and check that every folder's split
   holds the same images (example ids), with the same labels and patients;
3. refuse a model trained on another conversion of the same data set (its card's
   training fingerprint is not the folder's but the source name is: its training
   patients may be in this split), and warn where that cannot be checked;
4. score every model on the split with its own temperature and threshold (the
   card's; a threshold never fitted is used with a warning);
5. compare (`paired.compare_models`): each model's ROC-AUC, sensitivity and
   specificity with intervals; every pair's ΔAUC with DeLong's test and a paired
   patient bootstrap interval, Δsensitivity and Δspecificity with McNemar's
   exact test;
6. write compare.json, compare.md, compare.csv (per-image probabilities of every
   model) and roc.png (every model's curve).

Nothing is fitted and no model card is changed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.evaluation import (
    calibration,
    compare_report,
    external,
    paired,
    plots,
    predictions,
    scoring,
)
from pneumokeras.evaluation.scoring import SplitData
from pneumokeras.models import model_card
from pneumokeras.records.manifest import Manifest, load_manifest
from pneumokeras.utils.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

OUTPUTS = ("compare.json", "compare.md", "compare.csv", "roc.png")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What `compare_run` found and wrote.

    Attributes:
        out_dir: the output folder.
        names: the models' names, in the order given.
        split: the compared split.
        n: images compared.
        patients: their patients.
        positives: images with pneumonia.
        roc_auc: model name → ROC-AUC.
        warnings: every warning (also in compare.md and the log).
        record: the object written to compare.json.
    """

    out_dir: Path
    names: tuple[str, ...]
    split: str
    n: int
    patients: int
    positives: int
    roc_auc: Mapping[str, float]
    warnings: tuple[str, ...]
    record: Mapping[str, Any]

    @property
    def report(self) -> Path:
        """compare.md."""
        return self.out_dir / "compare.md"


@dataclasses.dataclass(frozen=True)
class _Model:
    name: str
    classifier: model_card.Classifier
    data_dir: Path
    manifest: Manifest
    provenance: external.Provenance


def model_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: a run folder's name for its model.keras, else the file's stem.

    Where two names clash, parent folders are prefixed until they differ
    (`a/run`, `b/run`); as a last resort a number is added.
    """
    files = [Path(p) for p in paths]

    def name(path: Path, depth: int) -> str:
        parts = [path.stem] if path.stem != "model" else []
        parents = [p.name for p in path.parents if p.name][: depth + (0 if parts else 1)]
        return "/".join([*reversed(parents), *parts]) or path.stem

    depth = 0
    names = [name(p, depth) for p in files]
    while len(set(names)) < len(names) and depth < 8:
        depth += 1
        names = [name(p, depth) for p in files]
    if len(set(names)) < len(names):
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    return names


def _data_by_size(data_dirs: Sequence[Path]) -> dict[int, tuple[Path, Manifest]]:
    """Each `--data` folder under the image size it holds (one folder per size)."""
    if not data_dirs:
        raise UserError("compare needs a converted folder (--data)")
    by_size: dict[int, tuple[Path, Manifest]] = {}
    resolved = [Path(d).resolve() for d in data_dirs]
    for i, data_dir in enumerate(data_dirs):
        if resolved[i] in resolved[:i]:
            raise UserError(f"--data {data_dir} is given twice")
        manifest = load_manifest(data_dir)
        if manifest.image_size in by_size:
            raise UserError(
                f"{by_size[manifest.image_size][0]} and {data_dir} both hold "
                f"{manifest.image_size} px images; give one --data folder per image size"
            )
        by_size[manifest.image_size] = (Path(data_dir), manifest)
    return by_size


def _load_models(
    model_paths: Sequence[Path], by_size: Mapping[int, tuple[Path, Manifest]]
) -> list[_Model]:
    """Loads each model and pairs it with the folder of its input size (steps 1-3)."""
    if len(model_paths) < 2:
        raise UserError(
            f"compare needs two or more models (--model A --model B); got {len(model_paths)}"
        )
    files = [model_card.model_file(p).resolve() for p in model_paths]
    for i, path in enumerate(files):
        if path in files[:i]:
            raise UserError(f"{path} is given twice; compare different models")
    names = model_names(files)
    sizes = ", ".join(f"{s} px in {d}" for s, (d, _) in sorted(by_size.items()))
    models = []
    for name, path in zip(names, files, strict=True):
        classifier = model_card.load_classifier(path, require_card=False)
        size = classifier.input_size
        if size not in by_size:
            raise UserError(
                f"model {name} ({path}) takes {size} px images and no --data folder holds "
                f"them ({sizes}); convert the same data with --size {size} and add it as "
                "another --data"
            )
        data_dir, manifest = by_size[size]
        provenance = external.detect(classifier.card.data, manifest, manifest.fingerprint)
        if provenance.external and provenance.warning:
            raise UserError(
                f"model {name} was trained on another conversion of {manifest.source} "
                f"({provenance.reason}): the patients it trained on may be in this split; "
                "compare models trained on the same converted split (convert once, train each "
                "model on that folder, or on that folder converted at its own --size with the "
                "same --seed)"
            )
        models.append(_Model(name, classifier, data_dir, manifest, provenance))
    return models


def _same_images(reference: SplitData, other: SplitData, where: Path, first: Path) -> np.ndarray:
    """The order that puts `other`'s examples in `reference`'s order; refuses other images."""
    position = {example: i for i, example in enumerate(other.example_ids)}
    missing = [e for e in reference.example_ids if e not in position]
    if missing or len(position) != len(reference):
        known = set(reference.example_ids)
        shown = missing[0] if missing else next(e for e in position if e not in known)
        raise UserError(
            f"{where} and {first} do not hold the same images in this split (example "
            f"{shown!r} is in one only); the models must be compared on the same images"
        )
    order = np.array([position[e] for e in reference.example_ids], dtype=int)
    if not np.array_equal(other.labels[order], reference.labels):
        raise UserError(f"{where} and {first} label some of the same images differently")
    if not np.array_equal(other.patients[order], reference.patients):
        raise UserError(f"{where} and {first} give some of the same images other patients")
    return order


def _warnings(models: Sequence[_Model], split: str) -> list[str]:
    """What the user should know about each model's operating point and data."""
    out = []
    for model in models:
        card, provenance = model.classifier.card, model.provenance
        if model.classifier.card_missing or not card.fitted:
            out.append(
                f"model {model.name}: its threshold {card.threshold:.3f} and temperature "
                f"{card.temperature:.3f} were never fitted (run evaluate on its own data "
                "first): its sensitivity and specificity are at an arbitrary threshold"
            )
        if not card.data:
            out.append(
                f"model {model.name}: its card records no training data, so whether it "
                f"trained on images of this split cannot be checked"
            )
        elif not provenance.external and split != "test":
            out.append(
                f"model {model.name} was trained on {model.data_dir}: its {split} split was "
                "used for training or for its threshold and temperature, so its numbers there "
                "are optimistic"
            )
        shared = model.manifest.patients_in_several_splits
        if shared and not provenance.external:
            out.append(
                f"{shared} patient(s) of {model.data_dir} have images in several splits: "
                f"model {model.name} may have trained on patients of the {split} split"
            )
    return out


def _training_words(model: _Model) -> str:
    """Whether the model trained on the compared folder, in words."""
    card, provenance = model.classifier.card, model.provenance
    if not card.data:
        return "training data not recorded in its card"
    if provenance.trained_here:
        return "trained on this converted folder"
    return f"not trained on this folder ({provenance.reason})"


def _model_facts(model: _Model) -> dict[str, Any]:
    card = model.classifier.card
    return {
        "name": model.name,
        "path": str(model.classifier.path),
        "input_size": model.classifier.input_size,
        "data_dir": str(model.data_dir),
        "threshold_method": card.threshold_method,
        "temperature": card.temperature,
        "fitted": bool(card.fitted and not model.classifier.card_missing),
        "members": len(card.members),
        "trained_on": card.data.get("data_dir") or None,
        "trained_on_this_data": model.provenance.trained_here,
        "provenance": _training_words(model),
    }


def compare_run(
    model_paths: Sequence[str | Path],
    data_dirs: Sequence[str | Path],
    out_dir: str | Path,
    config: Config,
    split: str = "test",
    progress: bool = True,
) -> Comparison:
    """Compares two or more models on the same converted split (see the module docstring).

    Args:
        model_paths: `.keras` files or run folders, two or more.
        data_dirs: converted folders of the same data, one per image size the
            models take.
        out_dir: folder for compare.json, compare.md, compare.csv and roc.png.
        config: settings: `data.batch_size`, `evaluate.bootstrap` (paired resamples)
            and `train.seed` (their seed).
        split: the split (`test`), or `all` for every split together.
        progress: show progress bars on stderr.

    Raises:
        UserError: fewer than two models, one given twice, a model whose size no
            folder holds, folders whose split differs in images, labels or
            patients, a model trained on another conversion of the data, a split
            without two images of each class, or an unreadable model or folder.
    """
    out_dir = Path(out_dir)
    by_size = _data_by_size([Path(d) for d in data_dirs])
    models = _load_models([Path(p) for p in model_paths], by_size)
    data: dict[Path, SplitData] = {}
    for model in models:
        if model.data_dir not in data:
            data[model.data_dir] = scoring.read_evaluated(model.data_dir, model.manifest, split)
    first = models[0].data_dir
    reference = data[first]
    orders = {d: _same_images(reference, part, d, first) for d, part in data.items()}
    labels = reference.labels
    if min(int(labels.sum()), int((labels == 0).sum())) < 2:
        raise UserError(
            f"the {split} split holds {int(labels.sum())} images with pneumonia and "
            f"{int((labels == 0).sum())} without; a comparison needs at least two of each"
        )
    probs = {}
    for model in models:
        size = model.classifier.input_size
        settings = dataclasses.replace(
            config, data=dataclasses.replace(config.data, image_size=size)
        )
        raw = scoring.predict(
            model.classifier, model.data_dir, data[model.data_dir].splits, settings, progress
        )
        probs[model.name] = calibration.calibrate(raw, model.classifier.card.temperature)[
            orders[model.data_dir]
        ]
    names = [m.name for m in models]
    thresholds = [m.classifier.card.threshold for m in models]
    statistics = paired.compare_models(
        labels,
        reference.patients,
        np.vstack([probs[n] for n in names]),
        thresholds,
        names,
        resamples=config.evaluate.bootstrap,
        seed=config.train.seed,
    )
    warnings = _warnings(models, split)
    for text in warnings:
        logger.warning("warning: %s", text)
    record = {
        "split": split,
        "data_dirs": {str(size): str(d) for size, (d, _) in sorted(by_size.items())},
        "source": models[0].manifest.source,
        "n": len(reference),
        "patients": int(np.unique(reference.patients).size),
        "positives": int(labels.sum()),
        "models": [
            {**_model_facts(m), **stats}
            for m, stats in zip(models, statistics["models"], strict=True)
        ],
        "pairs": statistics["pairs"],
        "bootstrap": statistics["bootstrap"],
        "scores": "compare.csv",
        "warnings": warnings,
        "disclaimer": compare_report.DISCLAIMER,
    }
    aucs = {m["name"]: m["roc_auc"]["value"] for m in record["models"]}
    figure = plots.compare_roc_figure(
        labels, probs, dict(zip(names, thresholds, strict=True)), aucs
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "roc.png", plots.to_png(figure))
    atomic_write_text(out_dir / "compare.csv", predictions.compare_csv(reference, probs))
    atomic_write_json(out_dir / "compare.json", record)
    atomic_write_text(out_dir / "compare.md", compare_report.render(record))
    return Comparison(
        out_dir=out_dir,
        names=tuple(names),
        split=split,
        n=record["n"],
        patients=record["patients"],
        positives=record["positives"],
        roc_auc=aucs,
        warnings=tuple(warnings),
        record=record,
    )
