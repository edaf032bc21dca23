"""`generate`: writes a synthetic RSNA-shaped folder (DICOMs, then the label CSVs).

Patients are rendered and encoded in a worker pool (`pneumokeras.utils.workers`);
each is a pure function of its task, so any number of workers gives the same bytes.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pneumokeras.errors import UserError
from pneumokeras.synth.acquisition import DEFAULT_SCANNER, Scanner, check_scanner
from pneumokeras.synth.encoding import encode_dicom
from pneumokeras.synth.render import boxes, render_image
from pneumokeras.synth.sampling import assign_classes, patient_id_of, patient_seed, sample_patient
from pneumokeras.synth.spec import LUNG_OPACITY
from pneumokeras.synth.subgroups import SubgroupGap
from pneumokeras.utils.fileio import atomic_open, atomic_write_bytes, atomic_write_json
from pneumokeras.utils.workers import WorkerPool, resolve

IMAGES_DIR = "stage_2_train_images"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_INFO_CSV = "stage_2_detailed_class_info.csv"
# The arguments that made the folder (seed, counts, scanner ranges, planted gap).
SETTINGS_JSON = "synth.json"


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote.

    Attributes:
        out_dir: the data set folder.
        patients: number of patients (one DICOM each).
        positives: patients with Target 1 ("Lung Opacity").
        size: image side, pixels.
        seconds: wall-clock time taken.
    """

    out_dir: Path
    patients: int
    positives: int
    size: int
    seconds: float


def _make_patient(
    task: tuple[int, int, str, int, str, Scanner, SubgroupGap | None],
) -> tuple[str, str, list[tuple[float, float, float, float]]]:
    """Renders and writes one patient; returns (patientId, class, boxes)."""
    seed, index, label_class, size, images_dir, scanner, gap = task
    spec = sample_patient(patient_seed(seed, index), label_class, scanner, gap)
    data = encode_dicom(spec, render_image(spec, size))
    atomic_write_bytes(Path(images_dir) / f"{spec.patient_id}.dcm", data)
    return spec.patient_id, label_class, boxes(spec, size)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(
    patients: int, size: int, positive_fraction: float, seed: int, workers: int | None
) -> None:
    if not _is_int(patients) or patients < 1:
        raise UserError(f"patients must be an integer ≥ 1, got {patients!r}")
    if not _is_int(size) or not 64 <= size <= 4096:
        raise UserError(f"size must be an integer from 64 to 4096 pixels, got {size!r}")
    if not isinstance(positive_fraction, int | float) or not 0 <= positive_fraction <= 1:
        raise UserError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")
    if not _is_int(seed) or seed < 0:
        raise UserError(f"seed must be an integer ≥ 0, got {seed!r}")
    resolve(workers)


def generate(
    out_dir: str | Path,
    patients: int = 1000,
    size: int = 1024,
    positive_fraction: float = 0.225,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    scanner: Scanner = DEFAULT_SCANNER,
    subgroup_gap: SubgroupGap | None = None,
) -> SynthSummary:
    """Writes a synthetic RSNA-shaped data set.

    Files: `stage_2_train_images/<patientId>.dcm` (CR, JPEG Baseline, `size`²
    pixels), `stage_2_train_labels.csv` (`patientId,x,y,width,height,Target`, one
    row per box, boxes in pixels; one row with empty box fields per negative) and
    `stage_2_detailed_class_info.csv` (`patientId,class`, one row per label row),
    and `synth.json` (these arguments). The CSVs are written last, so their
    presence means the images are complete. Running again with the same
    arguments rewrites the same bytes; another `scanner` or `subgroup_gap` with
    the same seed gives the same patients, classes and boxes (the field of view
    scales the boxes with the image) in other pixels.

    Worker processes are spawned (see `pneumokeras.utils.workers`), so a script that
    calls this with workers needs the usual `if __name__ == "__main__":` guard.

    Args:
        out_dir: folder to write; created when missing.
        patients: number of patients, ≥ 1.
        size: image side, pixels, 64-4096.
        positive_fraction: share of "Lung Opacity" patients; exactly
            `round(patients * positive_fraction)` are positive.
        seed: seed of the whole data set, ≥ 0.
        workers: processes; None = every core, 0 = in this process, N = N
            worker processes (as for `convert`).
        progress: show a progress bar on stderr.
        scanner: acquisition ranges (`acquisition.DEFAULT_SCANNER`; the shifted
            site: `acquisition.SHIFTED_SCANNER`).
        subgroup_gap: fainter opacities for one subgroup of patients, or None.

    Returns:
        A summary of what was written.

    Raises:
        UserError: on invalid arguments, or when the images folder already holds
            DICOMs of another data set.
    """
    _validate(patients, size, positive_fraction, seed, workers)
    check_scanner(scanner)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    images_dir = out_dir / IMAGES_DIR
    classes = assign_classes(seed, patients, positive_fraction)
    _check_no_foreign_images(images_dir, seed, patients)
    images_dir.mkdir(parents=True, exist_ok=True)

    tasks = [
        (seed, i, cls, size, str(images_dir), scanner, subgroup_gap)
        for i, cls in enumerate(classes)
    ]
    bar = {"total": patients, "desc": "synth", "unit": "img", "disable": not progress}
    with WorkerPool(resolve(workers, tasks=patients)) as pool:
        results = list(tqdm(pool.imap(_make_patient, tasks, chunksize=4), **bar))

    settings = {
        "patients": patients,
        "size": size,
        "positive_fraction": positive_fraction,
        "seed": seed,
        "scanner": scanner.to_dict(),
        "subgroup_gap": None if subgroup_gap is None else subgroup_gap.to_dict(),
    }
    atomic_write_json(out_dir / SETTINGS_JSON, settings)
    with (
        atomic_open(out_dir / LABELS_CSV, "w", newline="") as labels,
        atomic_open(out_dir / CLASS_INFO_CSV, "w", newline="") as info,
    ):
        label_writer = csv.writer(labels, lineterminator="\n")
        info_writer = csv.writer(info, lineterminator="\n")
        label_writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        info_writer.writerow(["patientId", "class"])
        for patient_id, label_class, patient_boxes in results:
            rows = [[f"{value:.1f}" for value in box] + ["1"] for box in patient_boxes]
            for row in rows or [["", "", "", "", "0"]]:
                label_writer.writerow([patient_id, *row])
                info_writer.writerow([patient_id, label_class])
    return SynthSummary(
        out_dir=out_dir,
        patients=patients,
        positives=classes.count(LUNG_OPACITY),
        size=size,
        seconds=time.perf_counter() - start,
    )


def _check_no_foreign_images(images_dir: Path, seed: int, patients: int) -> None:
    """Refuses to mix data sets: a stale DICOM would be an unlabelled extra image."""
    if not images_dir.is_dir():
        return
    existing = {p.stem for p in images_dir.glob("*.dcm")}
    if not existing:
        return
    ours = {patient_id_of(patient_seed(seed, i)) for i in range(patients)}
    foreign = existing - ours
    if foreign:
        raise UserError(
            f"{images_dir} already holds {len(foreign)} DICOMs of another data set; "
            "choose an empty folder"
        )
