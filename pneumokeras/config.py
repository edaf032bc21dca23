"""One validated settings schema: frozen dataclasses loaded from YAML.

Every command that takes settings builds a `Config` through `load_config`, which
reads an optional YAML file and then applies `--set section.key=value` overrides.
Unknown keys and wrong types raise `ConfigError` naming the offending key, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pneumokeras.errors import UserError


class ConfigError(UserError, ValueError):
    """A settings file or override is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline settings.

    Attributes:
        image_size: side of the square image fed to the model, pixels. Must equal
            the `image_size` of the converted data (the manifest).
        batch_size: global batch size (split across devices when distributed).
        sampling: `natural` keeps the data's class mix; `balanced` samples both
            classes equally (class weights are then not applied).
        shuffle_buffer: tf.data shuffle buffer, examples.
        deterministic: keep tf.data element order fixed for a seed (slower).
        cache: keep decoded training images in memory after the first epoch.
    """

    image_size: int = 224
    batch_size: int = 32
    sampling: Literal["natural", "balanced"] = "natural"
    shuffle_buffer: int = 2048
    deterministic: bool = False
    cache: bool = False


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation, seeded (`records.augment`; 0 or false disables each).

    Geometry (box masks follow the image) and acquisition (the image only): a
    different exposure curve, noise and blur model another scanner.

    Attributes:
        flip: random horizontal flip.
        rotation_degrees: maximum absolute rotation, degrees.
        translation: maximum shift as a fraction of the image side.
        zoom: maximum zoom in or out as a fraction of the image side (zooming in
            is a random resized crop; zooming out leaves a black frame), < 1.
        gamma: maximum |ln gamma| of a random gamma curve (0.3: gamma from 0.74 to 1.35).
        brightness: maximum brightness shift as a fraction of the [0, 255] range.
        contrast: maximum contrast factor change, fraction.
        noise: maximum std of added Gaussian noise, grey levels (each image
            draws its level from 0 to this).
        blur: maximum Gaussian blur sigma, pixels, at most 1 (half of the images
            are blurred).
        label_smoothing: the training targets become `(1 - ε) · one-hot + ε / 2`
            (Szegedy et al., CVPR 2016); 0 keeps hard labels.
        on_device: run the augmentation inside the compiled training step (on the
            GPU when there is one) instead of in the tf.data pipeline, so the
            host only decodes and batches: for GPU hosts with few CPU cores per
            GPU. The same layers and settings; a different random stream. Not
            with box supervision (its box targets move with the image on the host).
    """

    flip: bool = True
    rotation_degrees: float = 10.0
    translation: float = 0.0
    zoom: float = 0.0
    gamma: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.0
    blur: float = 0.0
    label_smoothing: float = 0.0
    on_device: bool = False


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone settings.

    Attributes:
        name: `resnet18` (written here), `resnet10` (the same with one block per
            stage instead of two: half the layers, for quick CPU runs and tests),
            or `densenet121` / `efficientnetv2b0` from `keras.applications`
            (random init, 1 channel).
        filters: ResNet stem width; 64 is the standard network, smaller values
            give proportionally thinner stages (tests and the CPU demo).
        dropout: dropout rate before the classifier (0 disables).
        last_stride: stride of the ResNet's last stage. 1 keeps it at the third
            stage's resolution (image / 16 instead of / 32: 8 x 8 cells at 128 px),
            a finer Grad-CAM grid for small images at about 1.4x the compute
            (the "last stride 1" of CAM-style localisation and re-ID models).
    """

    name: Literal["resnet18", "resnet10", "densenet121", "efficientnetv2b0"] = "resnet18"
    filters: int = 64
    dropout: float = 0.0
    last_stride: Literal[1, 2] = 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the seed recipe by default).

    Attributes:
        epochs: passes over the training split.
        learning_rate: peak Adam learning rate.
        schedule: `cosine` (CosineDecay over all training steps) or `constant`.
        warmup_epochs: linear warm-up before the cosine decay, epochs.
        weight_decay: decoupled weight decay (AdamW) when > 0.
        loss: `crossentropy` (class-weighted) or `focal` (Lin et al., 2017).
        focal_gamma: focusing parameter of the focal loss.
        class_weighting: weight classes by the manifest's `class_weights`.
        precision: Keras dtype policy.
        distribute: `auto` uses all local devices, `none` a single one.
        seed: seed for weights, shuffling and augmentation.
        steps_per_epoch: cap on training steps per epoch (0 = whole split).
        box_loss_weight: weight of the box-supervision loss (0 disables). When
            > 0, the classifier's own class-activation map on its last feature
            map (the logits layer applied per cell; what Grad-CAM draws there)
            is trained, through a learnt scale and offset, to give per cell the
            share of the cell inside the RSNA boxes (binary cross-entropy,
            class-weighted like the main loss). Nothing is added to the saved
            model.
        checkpoint: which epoch `model.keras` keeps: `best`, the highest
            validation ROC-AUC (the first of equal ones), or `last`, the last
            epoch (with the cosine schedule, the converged model). A small
            validation split's ROC-AUC reaches 1.0 within a few epochs and then
            cannot tell epochs apart, so `best` keeps an early, half-trained one.
        xla: TensorFlow only: XLA-compile the training and evaluation steps
            (`true`: `jit_compile=True`, about a minute of compiling per model
            for ResNet18 on a CPU) or run them as plain TensorFlow graphs with
            oneDNN kernels (`false`). `auto` picks what measured fastest for the
            machine and precision (`utils.performance.training_xla`): XLA on
            GPUs; on CPUs graphs, except for mixed precision without native
            bfloat16 (no `avx512_bf16`/AMX), where XLA. `false` also suits smoke
            tests and tiny data, where the compile is most of the run. JAX
            always compiles with XLA (its compile is cached on disk), so there
            the setting changes nothing.
    """

    epochs: int = 20
    learning_rate: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    loss: Literal["crossentropy", "focal"] = "crossentropy"
    focal_gamma: float = 2.0
    class_weighting: bool = True
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    distribute: Literal["auto", "none"] = "auto"
    seed: int = 42
    steps_per_epoch: int = 0
    box_loss_weight: float = 0.0
    checkpoint: Literal["best", "last"] = "best"
    xla: Literal[True, False, "auto"] = "auto"


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation settings.

    Attributes:
        bootstrap: bootstrap resamples for the 95 % confidence intervals.
        threshold_method: how the decision threshold is chosen on validation.
        calibration_bins: bins of the reliability diagram and of the ECE.
        age_bands: subgroup analysis: the ages (whole years, increasing, at most
            90) where a new age band starts; `[18, 40, 60, 80]` gives `<18`,
            `18–39`, `40–59`, `60–79`, `80+`.
        min_subgroup_class_count: subgroup analysis: a subgroup with fewer
            positive or fewer negative images than this gets its counts and no
            metric (too small for a number to mean anything).
    """

    bootstrap: int = 1000
    threshold_method: Literal["youden", "f1"] = "youden"
    calibration_bins: int = 10
    age_bands: tuple[int, ...] = (18, 40, 60, 80)
    min_subgroup_class_count: int = 10


@dataclasses.dataclass(frozen=True)
class ExplainConfig:
    """Grad-CAM settings.

    Attributes:
        method: tf-keras-vis method.
        layer: target layer name; empty picks the last convolutional stage.
        target_class: class whose score is explained.
        limit: maximum number of images explained from a data split.
        alpha: heatmap opacity in the overlays, [0, 1].
    """

    method: Literal["gradcam", "gradcam++", "scorecam"] = "gradcam"
    layer: str = ""
    target_class: Literal["pneumonia", "normal", "predicted"] = "pneumonia"
    limit: int = 32
    alpha: float = 0.4


@dataclasses.dataclass(frozen=True)
class Config:
    """All settings; each section is one dataclass above."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    explain: ExplainConfig = dataclasses.field(default_factory=ExplainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (YAML/JSON serialisable; tuples as lists, as JSON reads them back).

        Lists, so that settings recorded in a JSON file (a run record, a model
        card) compare equal to the same settings in memory.
        """
        return {
            section: {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in values.items()
            }
            for section, values in dataclasses.asdict(self).items()
        }


# Range checks on values whose type is right but whose meaning is not.
_POSITIVE = {
    "data.image_size",
    "data.batch_size",
    "data.shuffle_buffer",
    "model.filters",
    "train.epochs",
    "train.learning_rate",
    "evaluate.bootstrap",
    "evaluate.calibration_bins",
    "evaluate.min_subgroup_class_count",
    "explain.limit",
}
_NON_NEGATIVE = {
    "augment.rotation_degrees",
    "augment.brightness",
    "augment.contrast",
    "augment.translation",
    "augment.zoom",
    "augment.gamma",
    "augment.noise",
    "augment.blur",
    "augment.label_smoothing",
    "train.warmup_epochs",
    "train.weight_decay",
    "train.focal_gamma",
    "train.steps_per_epoch",
    "train.box_loss_weight",
}
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_UNIT_INTERVAL = {"model.dropout", "explain.alpha", "augment.blur"}
# Values that must stay below 1 (a zoom of 1 would empty the image; smoothing
# of 1 would erase the labels).
_BELOW_ONE = {"augment.zoom", "augment.label_smoothing"}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Checks `value` against a field annotation; returns it (ints widen to float)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        # By type as well as value: 1 == True, yet `1` is not the choice `true`.
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            names = ", ".join(_yaml_name(choice) for choice in choices)
            raise ConfigError(f"{key} must be one of {names}; got {value!r}")
        return value
    if origin is tuple:
        # Only `tuple[int, ...]` is used: a YAML list of whole numbers.
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        return tuple(_coerce(key, item, typing.get_args(annotation)[0]) for item in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation for {key}")  # schema bug, not user's
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer; got {value!r}")
        return value
    if annotation is float:
        # PyYAML (YAML 1.1) reads `1e-4` without a dot as a string.
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string; got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _check_age_bands(key: str, edges: tuple[int, ...]) -> None:
    """Band edges must be increasing whole years in 1..90 (ages over 89 are stored as 90+)."""
    if not edges:
        raise ConfigError(f"{key} needs at least one age; got []")
    if any(e < 1 or e > 90 for e in edges):
        raise ConfigError(f"{key} must hold ages from 1 to 90; got {list(edges)}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ConfigError(f"{key} must increase; got {list(edges)}")


def _yaml_name(value: Any) -> str:
    """A choice as YAML spells it (`true`, not `True`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_range(key: str, value: Any) -> None:
    if key == "evaluate.age_bands":
        _check_age_bands(key, value)
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{key} must be > 0; got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key} must be ≥ 0; got {value!r}")
    if key in _UNIT_INTERVAL and not 0 <= value <= 1:
        raise ConfigError(f"{key} must be in [0, 1]; got {value!r}")
    if key in _BELOW_ONE and not value < 1:
        raise ConfigError(f"{key} must be < 1; got {value!r}")


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def from_dict(raw: dict[str, Any] | None) -> Config:
    """Builds a validated `Config` from a nested dict (missing keys keep defaults).

    Raises:
        ConfigError: naming the first unknown section/key or badly typed value.
    """
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("settings must be a mapping of sections")
    sections = _section_types()
    built = {}
    for section, values in raw.items():
        if section not in sections:
            first = next(iter(values), None) if isinstance(values, dict) else None
            name = f"{section}.{first}" if first is not None else section
            raise ConfigError(
                f"unknown setting {name!r}: no section {section!r} (known: {', '.join(sections)})"
            )
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be a mapping of keys")
        cls = sections[section]
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = f"{section}.{key}"
            if key not in fields:
                raise ConfigError(
                    f"unknown setting {name!r} (known in {section}: {', '.join(sorted(fields))})"
                )
            kwargs[key] = _coerce(name, value, hints[key])
            _check_range(name, kwargs[key])
        built[section] = cls(**kwargs)
    return Config(**built)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parses `section.key=value` (value in YAML syntax) into its three parts."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value; got {text!r}")
    dotted, _, value_text = text.partition("=")
    dotted = dotted.strip()
    if dotted.count(".") != 1 or not all(dotted.split(".")):
        raise ConfigError(f"--set expects section.key=value; got {text!r}")
    section, key = dotted.split(".")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    return section, key, value


# The presets (`configs/*.yaml` in a checkout). The wheel ships that one folder inside
# the package as `pneumokeras/configs/` (pyproject.toml maps it there), so an installed
# package finds them beside this module and a checkout in its top-level folder.
_PRESET_DIRS = (
    Path(__file__).resolve().parent / "configs",
    Path(__file__).resolve().parents[1] / "configs",
)


def preset_dir() -> Path:
    """The folder holding the presets (`demo.yaml`, `rsna.yaml`, ...)."""
    for folder in _PRESET_DIRS:
        if any(folder.glob("*.yaml")):
            return folder
    raise ConfigError("the settings presets (configs/*.yaml) are missing from this installation")


def presets() -> list[str]:
    """Names of the presets (`demo`, `rsna`, ...)."""
    return sorted(path.stem for path in preset_dir().glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A settings file: `path` itself when it exists, else the preset of that name.

    `--config rsna` (or `rsna.yaml`) therefore works in an installed package, from
    any folder, as `--config configs/rsna.yaml` does in a checkout.
    """
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    try:
        candidate = preset_dir() / f"{name}.yaml"
    except ConfigError:
        return path
    return candidate if candidate.is_file() else path


def load_config(
    path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Config:
    """Loads settings: defaults ← YAML file ← `--set` overrides, then validates.

    Args:
        path: YAML file with top-level sections (`data`, `train`, ...), the name of
            a preset (`resolve_config_path`), or None.
        overrides: strings `section.key=value`; values parse as YAML scalars.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config {path} is not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"config {path} must be a mapping of sections")
    for text in overrides:
        section, key, value = parse_override(text)
        current = raw.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{section} must be a mapping of keys")
        current[key] = value
    return from_dict(raw)
