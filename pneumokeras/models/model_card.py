"""The model artifact: `model.keras`, its model card `model.json`, and a calibrated classifier.

The model card (`model.json` beside `model.keras`; in general the model file's
name with `.json`) is the one description of a trained model that every command and
front end reads: class names, input size, decision threshold and how it was
chosen, calibration temperature and where it was fitted, the backend and
settings it was trained with, the data it was trained on, its validation
metrics and the project version. It is read and written only here
(`read_card`, `write_card`); its defaults live only here.

`load_classifier` takes `model.keras` or the run folder holding it, loads the
model in Keras' safe mode, checks the input contract `(None, S, S, 1)` pixels in
[0, 255] → `(None, 2)` softmax `[normal, pneumonia]`, reads the card and returns
a `Classifier` whose `probabilities` are temperature-calibrated and whose
`decide` applies the stored threshold (`p >= threshold` is pneumonia).
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras import __version__
from pneumokeras.errors import UserError
from pneumokeras.models.temperature import calibrate
from pneumokeras.utils.fileio import atomic_write_json, read_json_object

CLASS_NAMES = ("normal", "pneumonia")
MODEL_FILE = "model.keras"
CARD_FILE = "model.json"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TEMPERATURE = 1.0
# How a threshold came to be: `default` (training's placeholder, nothing fitted),
# chosen on validation by `youden` or `f1`, `manual` (given by the user).
THRESHOLD_METHODS = ("default", "youden", "f1", "manual")
INPUT_CONTRACT = "grayscale pixels in [0, 255], shape (None, H, W, 1)"
OUTPUT_CONTRACT = "softmax probabilities [normal, pneumonia]"
_REQUIRED = ("class_names", "input_size", "threshold", "temperature")


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Everything known about a trained model (`model.json`).

    Attributes:
        input_size: side of the square input images, pixels.
        class_names: names of the two output columns.
        threshold: decision threshold on the calibrated pneumonia probability.
        threshold_method: one of `THRESHOLD_METHODS`.
        temperature: calibration temperature T > 0 (1 = uncalibrated).
        calibration: how T was fitted (`fitted_on`, `n`, NLL before/after,
            warnings); empty until `evaluate` fitted it.
        backend: Keras backend it was trained under.
        keras_version: Keras version it was trained with.
        project_version: pneumokeras version that wrote the card.
        model_name: backbone (`resnet18`, ...).
        gradcam_layer: default target layer for Grad-CAM.
        config: the full training settings (`Config.to_dict()`).
        data: what it was trained on (`source`, `data_dir`, `image_size`,
            split counts, `fingerprint` of the manifest, `source_layout`,
            `images` and `patients`; a card may lack the last three).
        fold: held-out fold, or None.
        class_weights: class weights used in the loss, or None.
        devices: data-parallel devices used in training.
        best_epoch: 1-based epoch saved (best validation ROC-AUC), or None.
        validation: validation metrics of that epoch.
        input_statistics: per-image intensity statistics of training images, for
            out-of-distribution warnings (`mean`, `std`: [low, high] percentiles).
        input: the input contract, in words.
        output: the output contract, in words.
        members: for an ensemble (`cv`), one entry per member model: `name` (its
            nested model's name in the ensemble), `fold`, `gradcam_layer`, ...;
            empty for a single model.
    """

    input_size: int
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = DEFAULT_THRESHOLD
    threshold_method: str = "default"
    temperature: float = DEFAULT_TEMPERATURE
    calibration: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    backend: str = ""
    keras_version: str = ""
    project_version: str = __version__
    model_name: str = ""
    gradcam_layer: str = ""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fold: int | None = None
    class_weights: Mapping[str, float] | None = None
    devices: int = 1
    best_epoch: int | None = None
    validation: Mapping[str, float] = dataclasses.field(default_factory=dict)
    input_statistics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    input: str = INPUT_CONTRACT
    output: str = OUTPUT_CONTRACT
    members: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def fitted(self) -> bool:
        """Whether the threshold and temperature were fitted on data (not defaults)."""
        return self.threshold_method != "default"

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with `changes` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["class_names"] = list(self.class_names)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelCard:
        """Builds a card from `model.json` contents; unknown keys are ignored.

        Raises:
            ValueError: a required key is missing or a value is invalid.
        """
        missing = [key for key in _REQUIRED if key not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        kwargs["class_names"] = tuple(kwargs["class_names"])
        kwargs["members"] = tuple(kwargs.get("members", ()))
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(str(err)) from err


def _problems(card: ModelCard) -> list[str]:
    problems = []
    if (
        not isinstance(card.input_size, int)
        or isinstance(card.input_size, bool)
        or (card.input_size < 1)
    ):
        problems.append(f"input_size must be a positive integer, not {card.input_size!r}")
    if len(card.class_names) != 2 or not all(isinstance(n, str) for n in card.class_names):
        problems.append(f"class_names must be two names, not {list(card.class_names)!r}")
    if not _number(card.threshold) or not 0.0 <= card.threshold <= 1.0:
        problems.append(f"threshold must be in [0, 1], not {card.threshold!r}")
    if not _number(card.temperature) or card.temperature <= 0:
        problems.append(f"temperature must be > 0, not {card.temperature!r}")
    if card.threshold_method not in THRESHOLD_METHODS:
        problems.append(
            f"threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, "
            f"not {card.threshold_method!r}"
        )
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------ paths, read, write


def model_file(path: str | Path) -> Path:
    """`model.keras` itself, or the one inside a run folder.

    Raises:
        UserError: the path does not exist, or is a folder without model.keras.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / MODEL_FILE
        if not inside.is_file():
            ensemble = path / "ensemble.keras"
            hint = f" (a cv folder: pass {ensemble})" if ensemble.is_file() else ""
            raise UserError(
                f"{path} is a folder without {MODEL_FILE}; pass a .keras file or a "
                f"run folder holding model.keras{hint}"
            )
        return inside
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    return path


def card_path(model_path: str | Path) -> Path:
    """The card beside the model file, named after it: `model.keras` → `model.json`.

    (`ensemble.keras` → `ensemble.json`; a run folder → its `model.json`.)
    """
    return model_file(model_path).with_suffix(".json")


def read_card(model_path: str | Path) -> ModelCard:
    """Reads and validates the model card beside a model.

    Raises:
        UserError: no card, unreadable JSON, a missing key or an invalid value.
    """
    path = card_path(model_path)
    if not path.is_file():
        raise UserError(
            f"{path.parent} has no model card ({CARD_FILE}) beside {model_file(model_path).name}"
        )
    values = read_json_object(path, "model card")
    try:
        return ModelCard.from_dict(values)
    except ValueError as err:
        raise UserError(f"model card {path} is incomplete or invalid: {err}") from err


def write_card(model_path: str | Path, card: ModelCard) -> Path:
    """Writes the card beside the model (atomically); returns its path."""
    path = Path(model_path)
    path = (path / CARD_FILE) if path.is_dir() else path.with_suffix(".json")
    atomic_write_json(path, card.to_dict())
    return path


# ------------------------------------------------------------------ the classifier


def load_keras_model(path: str | Path) -> Any:
    """Loads a `.keras` file in safe mode and checks the input/output contract.

    Raises:
        UserError: not a valid `.keras` file, or one that does not take
            `(None, S, S, 1)` images to `(None, 2)` probabilities.
    """
    import keras

    path = model_file(path)
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a valid .keras file (not a zip archive)")
    try:
        model = keras.saving.load_model(path)
    except Exception as err:
        text = str(err).strip()
        reason = text.splitlines()[0] if text else type(err).__name__
        raise UserError(f"{path} is not a valid .keras file ({reason})") from err
    shape_in, shape_out = model.input_shape, model.output_shape
    if (
        not isinstance(shape_in, tuple)
        or len(shape_in) != 4
        or shape_in[1] != shape_in[2]
        or shape_in[3] != 1
        or shape_out != (None, 2)
    ):
        raise UserError(
            f"{path} takes {shape_in} to {shape_out}; expected (None, S, S, 1) to (None, 2)"
        )
    return model


class Classifier:
    """A loaded model with its card: calibrated probabilities and decisions.

    Attributes:
        model: the Keras model (input `(N, S, S, 1)` pixels in [0, 255]).
        card: its `ModelCard`.
        path: the `.keras` file.
    """

    def __init__(self, model: Any, card: ModelCard, path: Path):
        size = int(model.input_shape[1])
        if card.input_size != size:
            raise UserError(
                f"{card_path(path)} says input size {card.input_size} but {path} takes {size} px"
            )
        self.model, self.card, self.path = model, card, Path(path)
        self.card_missing = False  # set by `load_classifier` for a default card
        self._forward: Any = None  # compiled on first use (`forward`)

    @property
    def input_size(self) -> int:
        """Side of the square input images, pixels."""
        return self.card.input_size

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The model's softmax `(n, 2)` of one batch `(n, S, S, 1)` float32.

        Every caller (predict, evaluate, explain, the app, cv) runs the model through
        here: `utils.performance.CompiledForward`, which compiles the forward pass in
        the way measured fastest for the backend and CPU (a traced graph or XLA under
        TensorFlow, `jax.jit` under JAX) once the process has run enough images
        eagerly for the compile to pay off. Equal to the eager call to float32
        rounding.
        """
        return self._compiled_forward()(batch)

    def _compiled_forward(self) -> Any:
        if self._forward is None:
            from pneumokeras.utils.performance import CompiledForward

            self._forward = CompiledForward(self.model)
        return self._forward

    @property
    def forward_path(self) -> str:
        """How `forward` runs the model once compiled (`graph`, `xla`, `jit`, `eager`)."""
        return str(self._compiled_forward().path)

    def warm_up(self, batch_size: int = 1) -> None:
        """Compiles the forward pass for `batch_size` images now (a server, before requests)."""
        self._compiled_forward().compile(batch_size)

    def raw_probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Uncalibrated pneumonia probabilities `(N,)` float64 of `(N, S, S[, 1])` images."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., None]
        size = self.input_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 1):
            raise ValueError(f"images must be (N, {size}, {size}, 1). Received: {images.shape}")
        outputs = [
            self.forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(outputs)[:, 1].astype(np.float64)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Applies the card's temperature to raw pneumonia probabilities."""
        return calibrate(raw, self.card.temperature)

    def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Calibrated pneumonia probabilities `(N,)` float64."""
        return self.calibrate(self.raw_probabilities(images, batch_size))

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Labels `(N,)` int: 1 (pneumonia) where `p >= threshold`."""
        return (np.asarray(probabilities) >= self.card.threshold).astype(int)

    def class_name(self, label: int) -> str:
        """Name of output column `label`."""
        return self.card.class_names[int(label)]


def load_classifier(model_path: str | Path, require_card: bool = True) -> Classifier:
    """Loads `model.keras` (or a run folder's) with its card as a `Classifier`.

    Args:
        model_path: a `.keras` file or a run folder holding `model.keras`.
        require_card: when False, a model without `model.json` gets a default
            card (threshold 0.5, method `default`, temperature 1) and
            `Classifier.card_missing` is True; a card that exists is always
            validated.

    Raises:
        UserError: missing model, invalid `.keras` file, a missing card (when
            required), an incomplete card, or one that disagrees with the
            model's input size.
    """
    path = model_file(model_path)
    if require_card or card_path(path).is_file():
        card, missing = read_card(path), False
    else:
        card, missing = None, True
    model = load_keras_model(path)
    if card is None:
        card = ModelCard(input_size=int(model.input_shape[1]))
    classifier = Classifier(model, card, path)
    classifier.card_missing = missing
    return classifier
