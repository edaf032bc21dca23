"""Class activation maps of a classifier (tf-keras-vis, TensorFlow backend).

Three methods, all computed on one named spatial layer of the model:

- Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
  via Gradient-based Localization", ICCV 2017.
- Grad-CAM++: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
  Visual Explanations for Deep Convolutional Networks", WACV 2018.
- Score-CAM: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
  Convolutional Neural Networks", CVPR Workshops 2020.

tf-keras-vis differentiates with `tf.GradientTape`, so `HeatmapExplainer` needs
the TensorFlow backend; models saved under JAX load and explain here unchanged.
Layer resolution (`spatial_layers`, `resolve_layer`) works under any backend.
Maps are returned at the input size (bilinear, half-pixel centres), each
min-max normalised to [0, 1].
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from pneumokeras.errors import UserError
from pneumokeras.models.model_card import CLASS_NAMES

METHODS = ("gradcam", "gradcam++", "scorecam")
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}
# What to explain: a class name (`pneumonia`, `normal`, `predicted`) or one index per image.
Targets = str | Sequence[int] | np.ndarray
# Output columns of model.keras (its contract: the manual's docs/concepts/model-card.md).
CLASS_INDEX = {name: index for index, name in enumerate(CLASS_NAMES)}
# Images per tf-keras-vis call: bounds eager-mode memory for large inputs.
BATCH = 16
# Score-CAM evaluates the model on one masked copy of the input per channel of the
# target layer (512 for ResNet18), so it runs one image at a time.
_SCORECAM_PREDICT_BATCH = 64


def require_tensorflow() -> None:
    """Raises UserError unless Keras runs on TensorFlow (tf-keras-vis needs tf.GradientTape)."""
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


def _model_outputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's outputs `(N, C)` for `(N, S, S, 1)` images, eagerly in batches.

    Only for `target_class="predicted"` (the argmax), on any model with any number
    of classes; calibrated decisions come from `model_card.Classifier`. A plain
    forward pass: cheaper than `Model.predict`, which traces a new function for
    every loaded model, for the few dozen images explained.
    """
    outputs = [
        keras.ops.convert_to_numpy(model(images[start : start + BATCH], training=False))
        for start in range(0, len(images), BATCH)
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


def _tensor_key(tensor: keras.KerasTensor) -> tuple[int, int, int]:
    """Identity of a symbolic tensor in a functional graph: (operation, node, output)."""
    operation, node_index, tensor_index = tensor._keras_history
    return id(operation), node_index, tensor_index


def split_at_layer(
    model: keras.Model, layer: str
) -> tuple[Callable[[np.ndarray], list[Any]], keras.Model]:
    """Splits a functional model at a layer: the layers up to it, and those after it.

    The head's inputs are the target layer's output and, when the layers after
    it also read earlier tensors (a residual shortcut around a layer inside a
    block), those tensors too; the split is exact for any layer.

    Args:
        model: functional Keras model with one input and one output.
        layer: name of the layer to split at (its output is the head's first input).

    Returns:
        `(activations, head)`: `activations(images)` runs the layers up to the
        target as one TensorFlow graph and returns the head's inputs as a list of
        tensors (target output first); `head` is a functional model from those
        inputs to the model's output.
    """
    import tensorflow as tf

    target = model.get_layer(layer).output
    target_key = _tensor_key(target)
    depends: dict[tuple[int, int, int], bool] = {}

    def reads_target(tensor: keras.KerasTensor) -> bool:
        key = _tensor_key(tensor)
        if key not in depends:
            operation, node_index, _ = tensor._keras_history
            node = operation._inbound_nodes[node_index]
            depends[key] = key == target_key or any(
                reads_target(parent) for parent in node.input_tensors
            )
        return depends[key]

    extra: dict[tuple[int, int, int], keras.KerasTensor] = {}
    pending, seen = [model.outputs[0]], set()
    while pending:
        tensor = pending.pop()
        key = _tensor_key(tensor)
        if key in seen or key == target_key:
            continue
        seen.add(key)
        operation, node_index, _ = tensor._keras_history
        for parent in operation._inbound_nodes[node_index].input_tensors:
            if reads_target(parent):
                pending.append(parent)
            else:
                extra[_tensor_key(parent)] = parent
    head_inputs = [target, *extra.values()]
    head = keras.Model(head_inputs, model.outputs[0], name=f"{model.name}_after_{layer}")
    prefix = keras.Model(model.inputs, head_inputs, name=f"{model.name}_to_{layer}")
    # One graph for any batch size (`reduce_retracing`); forward passes only.
    run = tf.function(lambda images: prefix(images, training=False), reduce_retracing=True)

    def activations(images: np.ndarray) -> list[Any]:
        return tf.nest.flatten(run(tf.constant(images, dtype=tf.float32)))

    return activations, head


class _CompiledCall(keras.layers.Layer):
    """Calls a functional model through one XLA-compiled TensorFlow function.

    Its gradient under an eager `GradientTape` is that function's gradient, compiled
    too, instead of one eager kernel per layer (see `HeatmapExplainer`).
    """

    def __init__(self, model: keras.Model, **kwargs: Any) -> None:
        import tensorflow as tf

        super().__init__(**kwargs)
        self._model = model
        self._call = tf.function(
            lambda inputs: model(inputs, training=False), jit_compile=True, autograph=False
        )

    def call(self, inputs: Any) -> Any:
        return self._call(inputs)


def _gradient_model(head: keras.Model, layer: str) -> keras.Model:
    """The model tf-keras-vis differentiates: the head's inputs, `layer` named on the first.

    An `Identity` layer named like the target layer marks the head's first input
    as the penultimate output tf-keras-vis takes the gradient with respect to.
    """
    inputs = [keras.Input(tensor.shape[1:], dtype=tensor.dtype) for tensor in head.inputs]
    marked = keras.layers.Identity(name=layer)(inputs[0])
    outputs = _CompiledCall(head, name="layers_after_target")([marked, *inputs[1:]])
    return keras.Model(inputs, outputs, name=f"{head.name}_gradient")


class HeatmapExplainer:
    """Class activation maps of one model, method and target layer (tf-keras-vis).

    The model is cloned once with its output softmax replaced by a linear
    activation (`ReplaceToLinear`): Grad-CAM and Grad-CAM++ then differentiate the
    class's log-odds (its logit minus the other class's, see `log_odds_score`)
    instead of a saturating probability, and
    Score-CAM, which applies a softmax to the model outputs itself, scores masked
    inputs by the class probability. The original model is left untouched.

    Grad-CAM and Grad-CAM++ only need the gradient of the score with respect to
    the target layer, so the clone is split there (`split_at_layer`): the layers
    up to the target run as one TensorFlow graph, outside any gradient tape, and
    tf-keras-vis differentiates only the layers after it, which run as one
    XLA-compiled function (`_gradient_model`). tf-keras-vis on the whole model
    would record every layer on an eager `GradientTape` and backpropagate to the
    input, computing every convolution's kernel gradient on the way: about 4x the
    work, and on AVX-512 CPUs TensorFlow 2.21's eager oneDNN `Conv2DBackpropFilter`
    corrupts the heap for thin layers (8 filters: "double free or corruption").
    The maps are the same to float32 rounding.

    Args:
        model: functional model, input `(batch, S, S, 1)`, output `(batch, 2)`.
        method: `gradcam`, `gradcam++` or `scorecam`.
        layer: target layer name; '' = last spatial layer (see `resolve_layer`).

    Raises:
        UserError: not running under TensorFlow, unknown method or bad layer.
    """

    def __init__(self, model: keras.Model, method: str = "gradcam", layer: str = "") -> None:
        require_tensorflow()
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

        self.model = model
        self.method = method
        self.layer = resolve_layer(model, layer)
        self.num_classes = int(model.output_shape[-1])
        if method == "scorecam":
            # Forward passes only: tf-keras-vis scores masked inputs on the whole model.
            self._activations: Callable[[np.ndarray], list[Any]] | None = None
            self._visualizer = Scorecam(model, model_modifier=ReplaceToLinear(), clone=True)
            return
        linear = keras.models.clone_model(model)
        linear.set_weights(model.get_weights())
        ReplaceToLinear()(linear)
        self._activations, head = split_at_layer(linear, self.layer)
        factory = GradcamPlusPlus if method == "gradcam++" else Gradcam
        self._visualizer = factory(_gradient_model(head, self.layer), clone=False)

    def targets(self, images: np.ndarray, target_class: Targets) -> np.ndarray:
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
                return np.argmax(_model_outputs(self.model, images), axis=-1).astype(int)
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
            assert self._activations is not None  # set for every method but Score-CAM
            activations = [np.asarray(t) for t in self._activations(batch)]
            cams = self._visualizer(score, activations, **kwargs)
        return np.asarray(keras.ops.convert_to_numpy(cams), dtype=np.float32)

    def __call__(self, images: np.ndarray, target_class: Targets = "pneumonia") -> np.ndarray:
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
        step = 1 if self.method == "scorecam" else BATCH
        maps = []
        for start in range(0, len(images), step):
            batch = images[start : start + step]
            cams = self._raw_maps(batch, indices[start : start + step])
            maps.append(_normalize_maps(_upsample(cams, images.shape[1])))
        return np.concatenate(maps, axis=0)


class EnsembleHeatmapExplainer:
    """The mean of an ensemble's member maps, each at its own target layer.

    For `cv`'s `ensemble.keras` (the `Average` of nested member models): each
    member is explained by its own `HeatmapExplainer` at its own layer (its last
    convolutional stage by default), every map normalised to [0, 1] as usual;
    their mean is normalised again. All members explain the same class: the
    target indices are decided once, on the ensemble's output for `predicted`.

    Args:
        model: the ensemble, output `(batch, 2)`, holding the member models.
        members: names of the nested member models in `model`.
        method: `gradcam`, `gradcam++` or `scorecam`.
        layers: one target layer per member ('' = that member's last spatial layer).

    Raises:
        UserError: not under TensorFlow, unknown method, member or layer.
    """

    def __init__(
        self,
        model: keras.Model,
        members: Sequence[str],
        method: str = "gradcam",
        layers: Sequence[str] | None = None,
    ) -> None:
        require_tensorflow()
        layers = list(layers) if layers is not None else [""] * len(members)
        if not members or len(layers) != len(members):
            raise ValueError(
                f"needs one layer per member. Received: {len(members)} members, "
                f"{len(layers)} layers"
            )
        known = {layer.name for layer in model.layers}
        missing = [name for name in members if name not in known]
        if missing:
            raise UserError(f"the ensemble holds no member model {missing[0]!r}")
        self.model = model
        self.method = method
        self.members = [
            HeatmapExplainer(model.get_layer(name), method, layer)
            for name, layer in zip(members, layers, strict=True)
        ]
        self.num_classes = int(model.output_shape[-1])
        distinct = sorted({m.layer for m in self.members})
        self.layer = f"{distinct[0]} of each member" if len(distinct) == 1 else ", ".join(distinct)

    def targets(self, images: np.ndarray, target_class: Targets) -> np.ndarray:
        """Class index per image, decided on the ensemble (see `HeatmapExplainer.targets`)."""
        if isinstance(target_class, str) and target_class == "predicted":
            return np.argmax(_model_outputs(self.model, images), axis=-1).astype(int)
        return self.members[0].targets(images, target_class)

    def member_maps(self, images: np.ndarray, target_class: Targets = "pneumonia") -> np.ndarray:
        """Each member's maps `(M, N, S, S)` in [0, 1]."""
        images = np.asarray(images, dtype=np.float32)
        indices = self.targets(images if images.ndim == 4 else images[..., None], target_class)
        return np.stack([member(images, indices) for member in self.members])

    def __call__(self, images: np.ndarray, target_class: Targets = "pneumonia") -> np.ndarray:
        """The members' mean maps `(N, S, S)` float32, min-max normalised to [0, 1]."""
        maps = self.member_maps(images, target_class)
        if maps.shape[1] == 0:
            return maps[0]
        return _normalize_maps(maps.mean(axis=0))


def compute_heatmaps(
    model: keras.Model,
    images: np.ndarray,
    method: str = "gradcam",
    layer: str = "",
    target_class: Targets = "pneumonia",
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
