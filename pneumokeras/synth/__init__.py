"""Synthetic RSNA-shaped data set: chest phantoms as JPEG-Baseline DICOMs plus label CSVs.

The folder that `generate` writes has the layout of the RSNA Pneumonia Detection
Challenge (`stage_2_train_images/<patientId>.dcm`, `stage_2_train_labels.csv`,
`stage_2_detailed_class_info.csv`), so every later step runs on it unchanged.

Each patient is a pure function of `(seed, index)` and its class: `sample_patient`
draws a `PatientSpec` (anatomy, exposure, findings, opacities) from its own seed
sequence, `render_image` turns the spec into pixels and `encode_dicom` into file
bytes. Nothing depends on global random state, wall-clock time or worker order,
so the same arguments give byte-identical folders for any number of workers.

A `Scanner` (module `acquisition`) sets the ranges each image's acquisition is
drawn from; `SHIFTED_SCANNER` is another site's. A `SubgroupGap` (module
`subgroups`) makes one subgroup's opacities fainter, a known gap for subgroup
analyses.

Modules, bottom up: `spec` (the dataclasses), `geometry` (shapes on a grid),
`acquisition` (the scanner), `subgroups` (sex, age band, view; the planted gap),
`sampling` (drawing a patient), `render` (pixels and label boxes), `encoding`
(the DICOM file), `writer` (`generate`: the folder).
"""

from pneumokeras.synth.acquisition import (
    DEFAULT_SCANNER,
    SHIFTED_SCANNER,
    Scanner,
    with_settings,
)
from pneumokeras.synth.encoding import encode_dicom, patient_age
from pneumokeras.synth.render import boxes, render_image
from pneumokeras.synth.sampling import (
    AP_PROBABILITY,
    BOX_COUNT_P,
    NOT_NORMAL_FRACTION,
    assign_classes,
    patient_seed,
    sample_patient,
)
from pneumokeras.synth.spec import (
    CLASSES,
    LUNG_OPACITY,
    NORMAL,
    NOT_NORMAL,
    Anatomy,
    Blob,
    Detector,
    Exposure,
    Findings,
    PatientSpec,
)
from pneumokeras.synth.subgroups import AGE_BANDS, SubgroupGap, age_band, parse_subgroup_gap
from pneumokeras.synth.writer import (
    CLASS_INFO_CSV,
    IMAGES_DIR,
    LABELS_CSV,
    SETTINGS_JSON,
    SynthSummary,
    generate,
)

__all__ = [
    "AGE_BANDS",
    "AP_PROBABILITY",
    "BOX_COUNT_P",
    "CLASSES",
    "CLASS_INFO_CSV",
    "DEFAULT_SCANNER",
    "IMAGES_DIR",
    "LABELS_CSV",
    "LUNG_OPACITY",
    "NORMAL",
    "NOT_NORMAL",
    "NOT_NORMAL_FRACTION",
    "SETTINGS_JSON",
    "SHIFTED_SCANNER",
    "Anatomy",
    "Blob",
    "Detector",
    "Exposure",
    "Findings",
    "PatientSpec",
    "Scanner",
    "SubgroupGap",
    "SynthSummary",
    "age_band",
    "assign_classes",
    "boxes",
    "encode_dicom",
    "generate",
    "parse_subgroup_gap",
    "patient_age",
    "patient_seed",
    "render_image",
    "sample_patient",
    "with_settings",
]
