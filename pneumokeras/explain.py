"""Class activation maps (tf-keras-vis, TensorFlow backend), overlays and localization scores.

Three methods, all computed on one named spatial layer of the model:

- Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
  via Gradient-based Localization", ICCV 2017.
- Grad-CAM++: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
  Visual Explanations for Deep Convolutional Networks", WACV 2018.
- Score-CAM: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks", CVPR Workshops 2020.

tf-keras-vis differentiates with `tf.GradientTape`, so this module needs the
TensorFlow backend; models saved under JAX load and explain here unchanged.

Localization is scored against the RSNA ground-truth boxes with the pointing game
(Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016; here
without tolerance margin) and the share of the map's mass inside the boxes (the
energy-based pointing game of Wang et al., 2020).

`explain_run` writes into its output folder:
    <name>.png          one overlay per image (X-ray, heatmap, colour bar, boxes)
    contact_sheet.png   the first overlays in a grid
    explain.csv         one row per image: probability, labels, localization scores
    summary.json        method, layer, target class, count, mean localization scores
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pneumokeras.config import Config
from pneumokeras.errors import UserError
from pneumokeras.fileio import atomic_open, atomic_write_bytes, atomic_write_json

METHODS = ("gradcam", "gradcam++", "scorecam")
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
# Output columns of model.keras (DESIGN.md contract).
CLASS_INDEX = {"normal": 0, "pneumonia": 1}
CLASS_NAMES = ("normal", "pneumonia")
CONTACT_SHEET_TILES = 32
CONTACT_SHEET_COLUMNS = 8
CONTACT_SHEET_TILE_PX = 320
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
# Images per tf-keras-vis call: bounds eager-mode memory for large inputs.
_BATCH = 16
# Score-CAM evaluates the model on one masked copy of the input per channel of the
# target layer (512 for ResNet18), so it runs one image at a time.
_SCORECAM_PREDICT_BATCH = 64
_RESERVED_STEMS = {"contact_sheet", "explain", "summary"}


def _require_tensorflow() -> None:
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UserError(
            f"explain needs KERAS_BACKEND=tensorflow (tf-keras-vis uses tf.GradientTape); "
            f"the current backend is {backend}"
        )


# --------------------------------------------------------------------------- layers


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the layers with a 4-D output `(batch, H, W, C)`, in graph order."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer called more than once
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def resolve_layer(model: keras.Model, layer: str = "") -> str:
    """Validates a target layer name; empty picks the last spatial feature map.

    The last layer with a 4-D output is the last convolutional stage before global
    pooling: `stack4_block2_out` in our ResNet18, `relu` in DenseNet121,
    `top_activation` in EfficientNetV2-B0 (`resnet.LAST_CONV_LAYER`).

    Args:
        model: functional Keras model.
        layer: layer name, or '' for the default.

    Returns:
        The layer name.

    Raises:
        UserError: unknown layer, or one whose output is not `(batch, H, W, C)`.
    """
    candidates = spatial_layers(model)
    if not candidates:
        raise UserError(f"model {model.name!r} has no layer with a (batch, H, W, C) output")
    if not layer:
        return candidates[-1]
    known = {item.name: item for item in model.layers}
    examples = ", ".join(candidates[-4:][::-1])
    if layer not in known:
        raise UserError(f"model has no layer {layer!r}; spatial layers include: {examples}")
    if layer not in candidates:
        raise UserError(
            f"layer {layer!r} has no (batch, H, W, C) output to explain; "
            f"spatial layers include: {examples}"
        )
    return layer


# ------------------------------------------------------------------------- heatmaps


def _normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max scales each map `(N, H, W)` to [0, 1]; a constant map becomes zeros."""
    maps = np.asarray(maps, dtype=np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    # A (numerically) flat map carries no location: zeros, not amplified noise.
    flat = span <= 1e-6 * np.maximum(1.0, np.abs(low))
    scaled = (maps - low) / np.where(flat, 1.0, span)
    return np.clip(np.where(flat, 0.0, scaled), 0.0, 1.0).astype(np.float32)


def _upsample(cams: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of `(N, h, w)` maps to `(N, size, size)`, half-pixel centres.

    tf-keras-vis' own expansion (`scipy.ndimage.zoom`, order 1) aligns the corner
    cells with the corner pixels, which stretches a coarse map (2 × 2 at 64 px,
    7 × 7 at 224 px) towards the image border; half-pixel centres keep each cell
    over the image region it summarises.
    """
    resized = keras.ops.image.resize(
        np.asarray(cams, dtype=np.float32)[..., None], (size, size), interpolation="bilinear"
    )
    return keras.ops.convert_to_numpy(resized)[..., 0]


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities `(N, 2)` of `(N, S, S, 1)` images, eagerly in batches.

    A plain forward pass: cheaper than `Model.predict`, which traces a new
    function for every loaded model, for the few dozen images explained.
    """
    outputs = [
        keras.ops.convert_to_numpy(model(images[start : start + _BATCH], training=False))
        for start in range(0, len(images), _BATCH)
    ]
    return np.concatenate(outputs, axis=0).astype(np.float64)


@contextlib.contextmanager
def _quiet_predict() -> Iterator[None]:
    """Silences Score-CAM's `Model.predict` calls (no `verbose` argument there).

    It passes the masked images as a one-element list, which Keras accepts but
    warns about on every call.
    """
    enabled = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The structure of `inputs`")
            yield
    finally:
        if enabled:
            keras.utils.enable_interactive_logging()


def log_odds_score(indices: Sequence[int] | np.ndarray) -> Callable[[Any], Any]:
    """tf-keras-vis score: the target class's logit minus the other class's.

    A 2-way softmax depends only on the difference of its two logits, so a shift
    common to both (evidence for "an X-ray", not for either class) changes no
    prediction; differentiating one logit alone would still spread heat over it.
    The difference is the log-odds of the target class, which Grad-CAM explains.

    Args:
        indices: `(N,)` target class per image, 0 or 1.
    """
    signs = np.where(np.eye(2, dtype=np.float32)[np.asarray(indices, dtype=int)] > 0, 1.0, -1.0)

    def score(output: Any) -> Any:
        return keras.ops.sum(output * signs.astype(np.float32), axis=-1)

    return score


class HeatmapExplainer:
    """Class activation maps of one model, method and target layer (tf-keras-vis).

    The model is cloned once with its output softmax replaced by a linear
    activation (`ReplaceToLinear`): Grad-CAM and Grad-CAM++ then differentiate the
    class's log-odds (its logit minus the other class's, see `log_odds_score`)
    instead of a saturating probability, and
    Score-CAM, which applies a softmax to the model outputs itself, scores masked
    inputs by the class probability. The original model is left untouched.

    Args:
        model: functional model, input `(batch, S, S, 1)`, output `(batch, 2)`.
        method: `gradcam`, `gradcam++` or `scorecam`.
        layer: target layer name; '' = last spatial layer (see `resolve_layer`).

    Raises:
        UserError: not running under TensorFlow, unknown method or bad layer.
    """

    def __init__(self, model: keras.Model, method: str = "gradcam", layer: str = "") -> None:
        _require_tensorflow()
        if method not in METHODS:
            raise UserError(
                f"unknown explain method {method!r}; choose one of {', '.join(METHODS)}"
            )
        # tf-keras-vis imports TensorFlow-only code: only after the backend check.
        with warnings.catch_warnings():
            # tf-keras-vis 0.8.7 imports `zoom` from a deprecated scipy namespace.
            warnings.filterwarnings("ignore", "Please import `zoom`", DeprecationWarning)
            from tf_keras_vis.gradcam import Gradcam
            from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
            from tf_keras_vis.scorecam import Scorecam
            from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

        factory = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam}[method]
        self.model = model
        self.method = method
        self.layer = resolve_layer(model, layer)
        self.num_classes = int(model.output_shape[-1])
        self._visualizer = factory(model, model_modifier=ReplaceToLinear(), clone=True)

    def targets(self, images: np.ndarray, target_class: str | Sequence[int]) -> np.ndarray:
        """Class index explained for each image.

        Args:
            images: `(N, S, S, 1)` pixels in [0, 255].
            target_class: `pneumonia`, `normal`, `predicted` (argmax of the model's
                output per image) or one class index per image.

        Returns:
            `(N,)` int class indices.
        """
        count = len(images)
        if isinstance(target_class, str):
            if target_class == "predicted":
                return np.argmax(predict_probabilities(self.model, images), axis=-1).astype(int)
            if target_class not in CLASS_INDEX:
                raise UserError(
                    f"unknown target class {target_class!r}; choose pneumonia, normal or predicted"
                )
            return np.full(count, CLASS_INDEX[target_class], dtype=int)
        indices = np.asarray(target_class, dtype=int).reshape(-1)
        if len(indices) != count:
            raise ValueError(
                f"target_class needs one index per image. Received: {len(indices)} for {count}"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_classes):
            raise ValueError(
                f"class indices must be in [0, {self.num_classes}). Received: {indices}"
            )
        return indices

    def _raw_maps(self, batch: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Un-normalised maps `(n, h, w)` at the target layer's resolution."""
        from tf_keras_vis.utils.scores import CategoricalScore

        kwargs: dict[str, Any] = {
            "penultimate_layer": self.layer,
            "seek_penultimate_conv_layer": False,
            "expand_cam": False,
            "normalize_cam": False,
        }
        if self.method == "scorecam" or self.num_classes != 2:
            score: Any = CategoricalScore([int(i) for i in indices])
        else:
            score = log_odds_score(indices)
        if self.method == "scorecam":
            kwargs["batch_size"] = _SCORECAM_PREDICT_BATCH
            with _quiet_predict():
                cams = self._visualizer(score, batch, **kwargs)
        else:
            cams = self._visualizer(score, batch, **kwargs)
        return np.asarray(keras.ops.convert_to_numpy(cams), dtype=np.float32)

    def __call__(
        self, images: np.ndarray, target_class: str | Sequence[int] = "pneumonia"
    ) -> np.ndarray:
        """Heatmaps for a batch of images.

        Args:
            images: `(N, S, S, 1)` (or `(N, S, S)`) pixels in [0, 255].
            target_class: see `targets`.

        Returns:
            `(N, S, S)` float32 maps in [0, 1] (each min-max normalised; a map with
            no positive evidence is all zeros).
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] != 1 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be (N, S, S, 1). Received: shape={images.shape}")
        if len(images) == 0:
            return np.zeros(images.shape[:3], dtype=np.float32)
        indices = self.targets(images, target_class)
        step = 1 if self.method == "scorecam" else _BATCH
        maps = []
        for start in range(0, len(images), step):
            batch = images[start : start + step]
            cams = self._raw_maps(batch, indices[start : start + step])
            maps.append(_normalize_maps(_upsample(cams, images.shape[1])))
        return np.concatenate(maps, axis=0)


def compute_heatmaps(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    layer: str = "",
    target_class: str | Sequence[int] = "pneumonia",
) -> np.ndarray:
    """Grad-CAM / Grad-CAM++ / Score-CAM heatmaps of a classifier (tf-keras-vis).

    Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel of the target
    layer by the spatial mean of the gradient of the class logit; Grad-CAM++
    (Chattopadhay et al., WACV 2018) by higher-order, pixel-wise weighted
    gradients; Score-CAM (Wang et al., CVPR-W 2020) by the class probability of
    the input masked with that channel. The weighted sum is rectified, resized
    bilinearly to the input size and min-max normalised per image.

    Args:
        model: functional model with input `(batch, S, S, 1)` pixels in [0, 255]
            and a softmax output `(batch, 2)` `[normal, pneumonia]`.
        images: `(N, S, S, 1)` float32 (or uint8) pixels in [0, 255].
        method: `gradcam`, `gradcam++` or `scorecam`.
        layer: target layer name; '' = last layer with a 4-D output.
        target_class: `pneumonia`, `normal`, `predicted` (argmax per image), or
            one class index per image.

    Returns:
        `(N, S, S)` float32 heatmaps in [0, 1].

    Raises:
        UserError: not under the TensorFlow backend, unknown method or layer.
    """
    return HeatmapExplainer(model, method, layer)(images, target_class)


# ---------------------------------------------------------------- localization scores


def _box_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """Pixels `(H, W)` whose centre lies inside any box (normalised `x, y, w, h`)."""
    height, width = shape
    cy = (np.arange(height) + 0.5) / height
    cx = (np.arange(width) + 0.5) / width
    mask = np.zeros(shape, dtype=bool)
    for x, y, w, h in boxes:
        rows = (cy >= y) & (cy < y + h)
        cols = (cx >= x) & (cx < x + w)
        mask |= rows[:, None] & cols[None, :]
    return mask


def _check_map_and_boxes(heatmap: np.ndarray, boxes: Any) -> tuple[np.ndarray, np.ndarray]:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W). Received: shape={heatmap.shape}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return heatmap, boxes


def pointing_game(heatmap: np.ndarray, boxes: Any) -> bool:
    """Whether the heatmap's maximum falls inside a ground-truth box.

    The pointing game of Zhang et al. (ECCV 2016), without tolerance margin: a hit
    when the centre of the maximal pixel (the first in row-major order on ties)
    lies inside any box. A map with no peak (constant) never hits.

    Args:
        heatmap: `(H, W)` map, any scale.
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image width/height.

    Returns:
        True on a hit; False on a miss, a constant map or no boxes.
    """
    heatmap, boxes = _check_map_and_boxes(heatmap, boxes)
    if len(boxes) == 0 or heatmap.size == 0 or np.ptp(heatmap) <= 0:
        return False
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(_box_mask(heatmap.shape, boxes)[row, col])


def energy_in_boxes(heatmap: np.ndarray, boxes: Any) -> float:
    """Fraction of the heatmap's mass inside the union of the boxes.

    The energy-based pointing game of Wang et al. (Score-CAM, CVPR-W 2020):
    `sum(map · inside) / sum(map)`, where `inside` marks pixels whose centre lies
    in at least one box, so overlapping boxes are not counted twice.

    Args:
        heatmap: `(H, W)` non-negative map (e.g. in [0, 1]).
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image width/height.

    Returns:
        A fraction in [0, 1]; 0 when the map is all zeros or there are no boxes.

    Raises:
        ValueError: the heatmap is not 2-D or has negative values.
    """
    heatmap, boxes = _check_map_and_boxes(heatmap, boxes)
    if heatmap.size and heatmap.min() < 0:
        raise ValueError("heatmap must be non-negative for energy_in_boxes")
    total = float(heatmap.sum())
    if len(boxes) == 0 or total <= 0:
        return 0.0
    return float(heatmap[_box_mask(heatmap.shape, boxes)].sum() / total)


# ------------------------------------------------------------------------ overlays


def render_overlay(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    title: str = "",
    boxes: np.ndarray | None = None,
    colorbar_label: str = "heatmap (normalised)",
) -> bytes:
    """Draws an X-ray with its heatmap, a colour bar and ground-truth boxes.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).

    Args:
        pixels: `(S, S)` uint8 grey image.
        heatmap: `(S, S)` map in [0, 1].
        alpha: heatmap opacity, [0, 1].
        title: figure title (may have several lines).
        boxes: `(K, 4)` boxes `x, y, w, h` as fractions of the image, or None.
        colorbar_label: label of the colour bar.

    Returns:
        PNG bytes.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    height, width = pixels.shape[:2]
    # Blend once here (what two stacked imshow layers would draw): one image to
    # resample instead of two, which halves the drawing time.
    jet = matplotlib.colormaps["jet"]
    grey = np.asarray(pixels, dtype=np.float32)[..., None] / 255.0
    colour = jet(np.clip(heatmap, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * grey + alpha * colour
    # Fixed axes (no tight/constrained layout, which would draw the figure twice):
    # a square image panel, the colour bar on its right, the title above.
    fig_w, fig_h, panel = 5.2, 5.0, 4.05  # inches
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    FigureCanvasAgg(fig)
    bottom = 0.15 / fig_h
    ax = fig.add_axes((0.03, bottom, panel / fig_w, panel / fig_h))
    cax = fig.add_axes((0.03 + (panel + 0.12) / fig_w, bottom, 0.16 / fig_w, panel / fig_h))
    ax.imshow(np.clip(blended, 0.0, 1.0))
    if boxes is not None:
        for x, y, w, h in np.asarray(boxes, dtype=float).reshape(-1, 4):
            # Pixel centres sit at integer coordinates: an image edge is at -0.5.
            ax.add_patch(
                Rectangle(
                    (x * width - 0.5, y * height - 0.5),
                    w * width,
                    h * height,
                    fill=False,
                    edgecolor="lime",
                    linewidth=1.5,
                )
            )
    ax.set_axis_off()
    if title:
        # Centred on the figure: long lines may be wider than the image panel.
        fig.suptitle(title, fontsize=9, x=0.5, y=0.99, va="top")
    # The bar shows the opaque colour scale, not the faded overlay colours.
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=jet), cax=cax)
    bar.set_label(colorbar_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def contact_sheet(overlays: Sequence[bytes], columns: int = CONTACT_SHEET_COLUMNS) -> bytes:
    """Tiles overlay PNGs (at most `CONTACT_SHEET_TILES`) in a grid; returns PNG bytes."""
    from PIL import Image

    tiles = []
    for png in overlays[:CONTACT_SHEET_TILES]:
        tile = Image.open(io.BytesIO(png)).convert("RGB")
        tile.thumbnail((CONTACT_SHEET_TILE_PX, CONTACT_SHEET_TILE_PX))
        tiles.append(tile)
    if not tiles:
        raise ValueError("contact_sheet needs at least one overlay")
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    cell_w = max(tile.width for tile in tiles)
    cell_h = max(tile.height for tile in tiles)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        sheet.paste(tile, (col * cell_w + (cell_w - tile.width) // 2, row * cell_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------ run


@dataclasses.dataclass
class _Sample:
    name: str  # overlay file stem
    patient_id: str
    file: str  # source path ('' for TFRecord examples)
    pixels: np.ndarray  # (S, S) uint8
    label: int | None = None
    boxes: np.ndarray | None = None  # (K, 4) normalised x, y, w, h; None = unknown


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


def _model_file(model_path: str | Path) -> Path:
    """`model.keras` itself, or the one inside a run folder."""
    path = Path(model_path)
    return path / "model.keras" if path.is_dir() else path


def _decode_png(png: bytes) -> np.ndarray:
    """8-bit grayscale PNG bytes → `(S, S)` uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint8)


def _split_samples(
    data_dir: str | Path, split: str, size: int, limit: int, only_positives: bool
) -> list[_Sample]:
    """The first `limit` examples of a split (positives only when asked), in file order."""
    from pneumokeras import tfrecords

    stored = tfrecords.load_manifest(data_dir)["image_size"]
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
                pixels=_decode_png(record["png"]),
                label=int(record["label"]),
                boxes=np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4),
            )
        )
        if len(samples) >= limit:
            break
    return samples


def _file_samples(files: Sequence[str | Path], size: int, limit: int | None) -> list[_Sample]:
    """Files (folders searched like `predict`), read exactly as `predict` reads them."""
    from pneumokeras.dicom import DicomError
    from pneumokeras.predict import ImageError, find_inputs, load_image

    samples = []
    for path in find_inputs(files)[:limit]:
        try:
            pixels, patient_id = load_image(path, size)
        except (DicomError, ImageError) as err:
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


def _title(
    sample: _Sample,
    probability: float,
    predicted: int,
    threshold: float,
    method: str,
    explained: int,
    layer: str,
    empty: bool,
) -> str:
    """Three lines: image name; probability, decision and truth; what is shown."""
    decision = f"P(pneumonia) = {probability:.3f} → {CLASS_NAMES[predicted]}"
    decision += f" (threshold {threshold:.2f})"
    if sample.label is not None:
        decision += f"; truth: {CLASS_NAMES[sample.label]}"
    shown = f"{METHOD_TITLES[method]} of '{CLASS_NAMES[explained]}' at {layer}"
    if empty:
        # An all-zero map paints the image uniformly: say so rather than mislead.
        shown += " (no positive evidence)"
    return "\n".join([sample.name, decision, shown])


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
) -> dict[str, Any]:
    """Explains a trained model on files or on a converted split; writes overlays.

    Settings come from `config.explain` (method, layer, target class, limit,
    alpha); the decision threshold, calibration temperature, input size and
    default target layer from the `model.json` beside `model.keras`. The reported
    probability is the temperature-calibrated probability of pneumonia; the
    predicted label compares it with the threshold, and `target_class: predicted`
    explains that label.

    Args:
        model_path: `model.keras`, or the run folder holding it.
        out_dir: output folder (created); see the module docstring for its files.
        config: settings; only `config.explain` is read.
        files: DICOM/PNG/JPEG files (read with `predict.load_image`); or None.
        data_dir: converted TFRecord folder (with `manifest.json`); or None.
        split: split of `data_dir` to explain.
        limit: maximum number of images, in file order (after `only_positives`);
            None = `config.explain.limit` for a split, all given files.
        only_positives: from a split, keep label-1 patients only.
        progress: show a progress bar on stderr.

    Returns:
        The summary written to `summary.json`: `method`, `layer`,
        `target_class`, `count`, `positives`, `positives_with_boxes`,
        `pointing_game` and `energy_in_boxes` (their means over positives with
        boxes; None when there are none), `threshold`, `temperature`,
        `input_size`, `model`, `source` and `out_dir`.

    Raises:
        UserError: not under TensorFlow, no/both inputs, unreadable model or
            inputs, bad layer, or nothing to explain.
    """
    from tqdm import tqdm

    _require_tensorflow()
    settings = config.explain
    if (files is None) == (data_dir is None):
        raise UserError("explain needs either image files or a data folder (--data), not both")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be ≥ 1; got {limit}")
    if files is not None and only_positives:
        raise UserError("--only-positives needs labels: use a data folder, not files")
    from pneumokeras.evaluate import calibrate, load_model

    model_file = _model_file(model_path)
    model, meta = load_model(model_file)
    size = int(model.input_shape[1])
    if int(meta.get("input_size", size)) != size:
        raise UserError(
            f"model.json says input size {meta['input_size']}, the model takes {size} px"
        )
    threshold = float(meta.get("threshold", 0.5))
    temperature = float(meta.get("temperature", 1.0))
    explainer = HeatmapExplainer(
        model, settings.method, settings.layer or meta.get("gradcam_layer", "")
    )

    if files is not None:
        samples = _file_samples(files, size, limit)
        source: dict[str, Any] = {"files": len(samples)}
    else:
        samples = _split_samples(data_dir, split, size, limit or settings.limit, only_positives)
        source = {"data_dir": str(data_dir), "split": split, "only_positives": only_positives}
    if not samples:
        why = " (no positives in the split)" if only_positives else ""
        raise UserError(f"no images to explain{why}")
    _assign_names(samples)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    sheet: list[bytes] = []
    hits: list[float] = []
    energies: list[float] = []
    with tqdm(total=len(samples), desc="explain", unit="img", disable=not progress) as bar:
        for start in range(0, len(samples), _BATCH):
            batch = samples[start : start + _BATCH]
            images = np.stack([s.pixels for s in batch]).astype(np.float32)[..., None]
            probs = predict_probabilities(model, images)[:, 1]
            calibrated = calibrate(probs, temperature)
            predicted = (calibrated >= threshold).astype(int)
            targets = predicted if settings.target_class == "predicted" else settings.target_class
            explained = explainer.targets(images, targets)
            maps = explainer(images, explained)
            for sample, prob, pred, cls, heatmap in zip(
                batch, calibrated, predicted, explained, maps, strict=True
            ):
                scored = sample.boxes is not None and len(sample.boxes) > 0
                hit = pointing_game(heatmap, sample.boxes) if scored else None
                energy = energy_in_boxes(heatmap, sample.boxes) if scored else None
                if scored and sample.label == 1:
                    hits.append(float(hit))
                    energies.append(energy)
                title = _title(
                    sample,
                    prob,
                    pred,
                    threshold,
                    settings.method,
                    cls,
                    explainer.layer,
                    empty=not heatmap.any(),
                )
                png = render_overlay(
                    sample.pixels,
                    heatmap,
                    alpha=settings.alpha,
                    title=title,
                    boxes=sample.boxes if scored else None,
                    colorbar_label=f"{METHOD_TITLES[settings.method]} (normalised)",
                )
                overlay = f"{sample.name}.png"
                atomic_write_bytes(out_dir / overlay, png)
                if len(sheet) < CONTACT_SHEET_TILES:
                    sheet.append(png)
                rows.append(
                    {
                        "name": sample.name,
                        "patient_id": sample.patient_id,
                        "file": sample.file,
                        "probability": f"{prob:.6f}",
                        "predicted_label": int(pred),
                        "true_label": "" if sample.label is None else sample.label,
                        "explained_class": CLASS_NAMES[cls],
                        "pointing_game": "" if hit is None else int(hit),
                        "energy_in_boxes": "" if energy is None else f"{energy:.6f}",
                        "overlay": overlay,
                    }
                )
                bar.update()

    atomic_write_bytes(out_dir / "contact_sheet.png", contact_sheet(sheet))
    with atomic_open(out_dir / "explain.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "method": settings.method,
        "layer": explainer.layer,
        "target_class": settings.target_class,
        "count": len(rows),
        "positives": sum(1 for s in samples if s.label == 1),
        "positives_with_boxes": len(hits),
        "pointing_game": _mean(hits),
        "energy_in_boxes": _mean(energies),
        "threshold": threshold,
        "temperature": temperature,
        "input_size": size,
        "model": str(model_file),
        "source": source,
        "out_dir": str(out_dir),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
