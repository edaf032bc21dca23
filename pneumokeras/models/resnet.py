"""Backbones from stock Keras layers: ResNet18 and ResNet10 (written here), DenseNet121,
EfficientNetV2B0.

Every model built here shares one contract (the manual's docs/concepts/model-card.md):

- input `image`: `(batch, image_size, image_size, 1)` raw pixel values in
  [0, 255], uint8 or float. The model rescales them itself (a stock
  `Rescaling` layer maps [0, 255] to [-1, 1]), so training and inference can
  never normalise differently.
- output `predictions`: `(batch, num_classes)` float32 softmax probabilities,
  produced by a separate `Activation` layer after the `logits` Dense layer so
  that mixed precision still returns float32 and Grad-CAM tools
  (tf-keras-vis `ReplaceToLinear`) can swap the softmax for a linear activation.

Only stock layers are used, so a saved `.keras` file loads with
`keras.saving.load_model(path)` (safe mode on) under any Keras backend, in a
process that never imported pneumokeras.

ResNet18 follows He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016), laid out exactly like torchvision's `resnet18` (explicit zero
padding, bias-free convolutions, BatchNorm momentum 0.1 in torch terms /
0.9 in Keras terms, epsilon 1e-5, He-normal fan-out initialisation), so weights
map one-to-one from a torch checkpoint and the parameter count matches:
11,171,266 trainable parameters for one input channel and two classes.
ResNet10 is the same network with one basic block per stage instead of two
(MONAI's `resnet10`): about half the layers, so half the tracing and compiling
of a training step, for quick CPU runs and the test suite.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from pneumokeras.config import ModelConfig

# torchvision BatchNorm2d defaults: momentum 0.1 (Keras counts the other way),
# eps 1e-5 (Keras' own default is 1e-3).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_MIN_IMAGE_SIZE = 32
# Basic blocks per stage of the ResNets written here.
RESNET_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet10": (1, 1, 1, 1),
}
# Grad-CAM target layer per model name: the last spatial feature map (after its
# activation) before global pooling; a ResNet's is its last stage's last block.
LAST_CONV_LAYER: dict[str, str] = {
    **{name: f"stack4_block{blocks[3]}_out" for name, blocks in RESNET_BLOCKS.items()},
    "densenet121": "relu",
    "efficientnetv2b0": "top_activation",
}


def _conv_initializer() -> keras.initializers.Initializer:
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name)


def _check_head_args(image_size: int, num_classes: int, dropout: float) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an integer. Received: image_size={image_size!r}")
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be ≥ {_MIN_IMAGE_SIZE}. Received: image_size={image_size}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an integer ≥ 2. Received: num_classes={num_classes!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")


def _image_input(image_size: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Returns the `image` input and its [-1, 1] rescaled version.

    The input keeps the default float dtype: uint8 batches are cast exactly
    (integers up to 255 are exact even in bfloat16).
    """
    image = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="pixel_rescaling")(image)
    return image, x


def _classifier_head(
    features: keras.KerasTensor, num_classes: int, dropout: float
) -> keras.KerasTensor:
    """Pooled features `(batch, C)` → float32 probabilities `(batch, num_classes)`."""
    if dropout > 0:
        features = layers.Dropout(dropout, name="head_dropout")(features)
    logits = layers.Dense(num_classes, name="logits")(features)
    # float32 even under a mixed policy: probabilities, losses and metrics are
    # computed from this tensor.
    return layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def apply_basic_block(
    x: keras.KerasTensor,
    filters: int,
    stride: int = 1,
    conv_shortcut: bool = False,
    name: str = "block",
) -> keras.KerasTensor:
    """ResNet basic block: two 3×3 convolutions with an identity or 1×1 shortcut.

    Args:
        x: input feature map `(batch, H, W, C_in)`.
        filters: output channels of both 3×3 convolutions.
        stride: stride of the first 3×3 convolution (and of the shortcut);
            2 halves `H` and `W`.
        conv_shortcut: project the shortcut with a 1×1 convolution + BN (needed
            when `stride != 1` or `C_in != filters`).
        name: prefix of every layer name; the output layer is `{name}_out`.

    Returns:
        Feature map `(batch, ceil(H / stride), ceil(W / stride), filters)`.
    """
    shortcut = x
    if conv_shortcut:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=stride,
            use_bias=False,
            kernel_initializer=_conv_initializer(),
            name=f"{name}_shortcut_conv",
        )(x)
        shortcut = _batch_norm(f"{name}_shortcut_bn")(shortcut)

    # Explicit symmetric padding (torch `padding=1`): Keras "same" pads a
    # stride-2 convolution asymmetrically, which would break weight mapping.
    if stride > 1:
        x = layers.ZeroPadding2D(padding=1, name=f"{name}_pad1")(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=f"{name}_conv1",
    )(x)
    x = _batch_norm(f"{name}_bn1")(x)
    x = layers.Activation("relu", name=f"{name}_relu1")(x)
    x = layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=f"{name}_conv2",
    )(x)
    x = _batch_norm(f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def apply_stack(
    x: keras.KerasTensor, filters: int, blocks: int, stride: int, name: str
) -> keras.KerasTensor:
    """A ResNet stage: `blocks` basic blocks, the first one with stride `stride`.

    Args:
        x: input feature map `(batch, H, W, C_in)`.
        filters: output channels of the stage.
        blocks: number of basic blocks (2 in ResNet18).
        stride: stride of the first block.
        name: prefix, e.g. `stack2`; blocks are `{name}_block1`, `{name}_block2`, ...

    Returns:
        Feature map `(batch, ceil(H / stride), ceil(W / stride), filters)`.
    """
    conv_shortcut = stride != 1 or x.shape[-1] != filters
    x = apply_basic_block(x, filters, stride, conv_shortcut, name=f"{name}_block1")
    for index in range(2, blocks + 1):
        x = apply_basic_block(x, filters, 1, False, name=f"{name}_block{index}")
    return x


def build_resnet18(
    image_size: int,
    filters: int = 64,
    num_classes: int = 2,
    dropout: float = 0.0,
    name: str = "resnet18",
    last_stride: int = 2,
) -> keras.Model:
    """ResNet18 for one-channel images (He et al., CVPR 2016; torchvision layout).

    Args:
        image_size: side of the square input, pixels (≥ 32).
        filters: stem width; the four stages have `filters × (1, 2, 4, 8)`
            channels (64 is the standard network).
        num_classes: number of output classes (≥ 2).
        dropout: dropout rate before the classifier, [0, 1); 0 adds no layer.
        name: model name.
        last_stride: stride of the last stage, 2 (standard) or 1 (the last
            feature map keeps the third stage's resolution, image / 16).

    Returns:
        A functional model: input `image` `(batch, image_size, image_size, 1)`
        with pixels in [0, 255]; output `predictions` `(batch, num_classes)`
        float32 softmax probabilities. The last feature map is
        `stack4_block2_out`, `(batch, ceil(image_size / 32), ..., 8 × filters)`
        (`/ 16` with `last_stride=1`).

    Raises:
        ValueError: an argument is out of range.
    """
    return build_resnet(
        image_size, RESNET_BLOCKS["resnet18"], filters, num_classes, dropout, name, last_stride
    )


def build_resnet(
    image_size: int,
    blocks: tuple[int, int, int, int],
    filters: int = 64,
    num_classes: int = 2,
    dropout: float = 0.0,
    name: str = "resnet",
    last_stride: int = 2,
) -> keras.Model:
    """A basic-block ResNet for one-channel images with `blocks` blocks per stage.

    `build_resnet18` is `blocks=(2, 2, 2, 2)`; `(1, 1, 1, 1)` is ResNet10. The
    other arguments and the returned model are as in `build_resnet18`; the last
    feature map is `stack4_block{blocks[3]}_out`.

    Raises:
        ValueError: an argument is out of range.
    """
    _check_head_args(image_size, num_classes, dropout)
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise ValueError(f"filters must be an integer ≥ 1. Received: filters={filters!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2. Received: last_stride={last_stride!r}")
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks must be 4 counts ≥ 1. Received: blocks={blocks!r}")

    image, x = _image_input(image_size)
    # Stem: torchvision conv1 (7×7/2, padding 3) + bn1 + relu + maxpool (3×3/2,
    # padding 1). Zero padding before the max-pool equals torch's -inf padding
    # because its input is post-ReLU (≥ 0).
    x = layers.ZeroPadding2D(padding=3, name="stem_pad")(x)
    x = layers.Conv2D(
        filters,
        7,
        strides=2,
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name="stem_conv",
    )(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    x = layers.ZeroPadding2D(padding=1, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(pool_size=3, strides=2, name="stem_pool")(x)

    for stage, (multiplier, count) in enumerate(zip((1, 2, 4, 8), blocks, strict=True), 1):
        x = apply_stack(
            x,
            filters * multiplier,
            blocks=count,
            stride=1 if stage == 1 else last_stride if stage == 4 else 2,
            name=f"stack{stage}",
        )

    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = _classifier_head(x, num_classes, dropout)
    return keras.Model(image, outputs, name=name)


def _build_application(
    factory: Callable[..., keras.Model],
    image_size: int,
    num_classes: int,
    dropout: float,
    name: str,
    **kwargs: object,
) -> keras.Model:
    """Wraps a `keras.applications` backbone in the shared input/head contract.

    The backbone is built on our rescaled input tensor (`input_tensor=`), so its
    layers sit flat in one functional model and Grad-CAM can reach them by name.
    """
    _check_head_args(image_size, num_classes, dropout)
    image, x = _image_input(image_size)
    backbone = factory(
        include_top=False,
        weights=None,
        input_tensor=x,
        input_shape=(image_size, image_size, 1),
        pooling="avg",
        **kwargs,
    )
    outputs = _classifier_head(backbone.output, num_classes, dropout)
    return keras.Model(image, outputs, name=name)


def build_densenet121(
    image_size: int, num_classes: int = 2, dropout: float = 0.0, name: str = "densenet121"
) -> keras.Model:
    """DenseNet121 (Huang et al., CVPR 2017) from `keras.applications`, random init.

    Args:
        image_size: side of the square input, pixels (≥ 32).
        num_classes: number of output classes (≥ 2).
        dropout: dropout rate before the classifier, [0, 1).
        name: model name.

    Returns:
        Same contract as `build_resnet18`; last feature map `relu`.
    """
    return _build_application(
        keras.applications.DenseNet121, image_size, num_classes, dropout, name
    )


def build_efficientnetv2b0(
    image_size: int, num_classes: int = 2, dropout: float = 0.0, name: str = "efficientnetv2b0"
) -> keras.Model:
    """EfficientNetV2-B0 (Tan & Le, ICML 2021) from `keras.applications`, random init.

    The application's own preprocessing (`include_preprocessing=True`) would
    rescale [0, 255] to [-1, 1] a second time after our `pixel_rescaling`
    layer; it is disabled because our input is already in [-1, 1], the range
    the network expects without it.

    Args:
        image_size: side of the square input, pixels (≥ 32).
        num_classes: number of output classes (≥ 2).
        dropout: dropout rate before the classifier, [0, 1).
        name: model name.

    Returns:
        Same contract as `build_resnet18`; last feature map `top_activation`.
    """
    return _build_application(
        keras.applications.EfficientNetV2B0,
        image_size,
        num_classes,
        dropout,
        name,
        include_preprocessing=False,
    )


def build_model(config: ModelConfig, image_size: int, num_classes: int = 2) -> keras.Model:
    """Builds the backbone named by `config.name` with the shared head.

    Args:
        config: model settings; `filters` and `last_stride` apply to the ResNets only.
        image_size: side of the square input, pixels (≥ 32); must match the data.
        num_classes: number of output classes.

    Returns:
        Model with input `image` `(batch, image_size, image_size, 1)`, pixels in
        [0, 255], and output `predictions` `(batch, num_classes)` float32
        probabilities. `LAST_CONV_LAYER[config.name]` names its Grad-CAM layer.

    Raises:
        ValueError: unknown model name or an argument out of range.
    """
    if config.name in RESNET_BLOCKS:
        return build_resnet(
            image_size,
            RESNET_BLOCKS[config.name],
            filters=config.filters,
            num_classes=num_classes,
            dropout=config.dropout,
            name=config.name,
            last_stride=config.last_stride,
        )
    if config.last_stride != 2:
        raise ValueError(
            f"model.last_stride applies to resnet18 and resnet10 only. Received: {config.name!r}"
        )
    if config.name == "densenet121":
        return build_densenet121(image_size, num_classes=num_classes, dropout=config.dropout)
    if config.name == "efficientnetv2b0":
        return build_efficientnetv2b0(image_size, num_classes=num_classes, dropout=config.dropout)
    raise ValueError(
        f"model name must be one of {', '.join(LAST_CONV_LAYER)}. Received: name={config.name!r}"
    )


def add_box_head(model: keras.Model, layer: str) -> tuple[keras.Model, int]:
    """The classifier plus its class-activation map as a box map, for training only.

    `layer` is the feature map `(batch, g, g, C)` that global pooling reduces
    before the `logits` Dense layer. Applying that same Dense layer to every
    cell gives per-cell logits whose mean is the image's logits (pooling and an
    affine layer commute); their pneumonia-minus-normal difference `d(x, y)` is
    the class-activation map, the map Grad-CAM draws at this layer. A learnt
    scale and offset turn `d` into per-cell box probabilities, returned
    flattened to `(batch, g·g)` (float32). A loss on them (see `train`) teaches
    the classifier to put its evidence where the boxes are. No new feature
    weights are added and `model` itself is what gets saved.

    Args:
        model: a 2-class model from `build_model` (layers `logits`, `predictions`).
        layer: name of its last feature map, square.

    Returns:
        `(training model with outputs {"predictions", "box_map"}, g)`.

    Raises:
        ValueError: `layer` is not in `model`, not a square feature map, or not the
            map the `logits` layer reads (its channel count differs).
    """
    try:
        features = model.get_layer(layer).output
    except ValueError as exc:
        raise ValueError(f"no layer named {layer!r} in model {model.name!r}") from exc
    logits_layer = model.get_layer("logits")
    if len(features.shape) != 4 or features.shape[1] != features.shape[2]:
        raise ValueError(
            f"layer {layer!r} must output a square feature map (batch, g, g, C). "
            f"Received: shape={features.shape}"
        )
    if features.shape[-1] != logits_layer.kernel.shape[0] or logits_layer.units != 2:
        raise ValueError(
            f"layer {layer!r} ({features.shape[-1]} channels) is not the feature map "
            "that the 2-class logits layer pools"
        )
    grid = int(features.shape[1])
    cell_logits = logits_layer(features)  # (batch, g, g, 2), the classifier's own weights
    # [normal, pneumonia] → pneumonia minus normal: the class-activation map.
    difference = layers.Dense(
        1,
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant([[-1.0], [1.0]]),
        name="box_cam",
    )(cell_logits)
    scaled = layers.Dense(
        1, kernel_initializer="ones", bias_initializer="zeros", name="box_logits"
    )(difference)
    probabilities = layers.Activation("sigmoid", dtype="float32", name="box_probabilities")(scaled)
    box_map = layers.Reshape((grid * grid,), name="box_map")(probabilities)
    outputs = {"predictions": model.get_layer("predictions").output, "box_map": box_map}
    return keras.Model(model.input, outputs, name=model.name), grid
