"""Export for serving: ONNX and TensorFlow SavedModel, each checked against the `.keras`.

`export_model` loads a model with its card through `model_card.load_classifier` (a
run folder's `model.keras`, a `cv` folder's `ensemble.keras`, any `.keras` of the
project's contract) and writes one of:

- **ONNX** (`fmt="onnx"`, default `<stem>.onnx` beside the model): Keras'
  `model.export(format="onnx")` (tf2onnx). Input `image` float32 `(N, S, S, 1)`,
  N dynamic, pixels in [0, 255]; output `predictions` float32 `(N, 2)` softmax
  `[normal, pneumonia]`. The model card is in `metadata_props` under
  `pneumokeras.models.model_card` (the card's JSON), export facts under
  `pneumokeras.serving.export`, and the card is also written beside as `<out>.json`.
- **SavedModel** (`fmt="saved_model"`, default `<stem>_savedmodel/` beside the
  model): signature `serving_default` (input `image`, output `predictions`, as
  above) and the function `serve(image) -> probabilities`. The card is a tracked
  asset (`assets/model.json`, `loaded.model_card.asset_path`) and also written
  as `model.json` beside `saved_model.pb`.

The export always runs under TensorFlow: the `.keras` file is backend-neutral, and
ONNX from JAX would need jax2onnx. When Keras runs another backend in this
process (a model trained under JAX), the export runs in a spawned child process
with `KERAS_BACKEND=tensorflow`. A model saved with a mixed-precision dtype
policy is exported in float32 (its variables are float32 already).

Check before anything is declared done: the exported model, run by onnxruntime
(resp. `tf.saved_model.load`), and the `.keras` model under TensorFlow both
predict fixed synthetic images (two chest phantoms from `synth`, noise, black,
white, a ramp) and any `check_files` (read by `images.read_image`, as `predict`
reads them), as one batch and as a batch of one. The largest absolute difference
of the softmax outputs must be ≤ `TOLERANCE` (float32); otherwise
`ExportCheckError` is raised. Everything is written in a hidden staging folder
beside the output and renamed into place only after the check passes, so a
failure (bad input or check) leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumokeras import __version__
from pneumokeras.errors import PneumokerasError, UnreadableInputError, UserError
from pneumokeras.utils.spawn import call_under_tensorflow, keras_backend

FORMATS = ("onnx", "saved_model")
FORMAT_NAMES = {"onnx": "ONNX", "saved_model": "SavedModel"}
TOLERANCE = 1e-5  # largest |exported - keras| allowed on a softmax output (float32)
ONNX_CARD_KEY = "pneumokeras.models.model_card"
ONNX_EXPORT_KEY = "pneumokeras.serving.export"
INPUT_NAME = "image"
OUTPUT_NAME = "predictions"
CARD_NAME = "model.json"  # the card's name inside a SavedModel (asset and beside)
SAVED_MODEL_PB = "saved_model.pb"
CARD_KEYS = ("class_names", "input_size", "threshold", "temperature")  # what every card has


class ExportCheckError(PneumokerasError, RuntimeError):
    """The exported model disagrees with the `.keras` model; nothing was written."""


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What `export_model` wrote and how well it matched.

    Attributes:
        format: `onnx` or `saved_model`.
        model: the `.keras` file exported.
        out: the ONNX file or SavedModel folder written.
        card: the model card written beside it.
        max_abs_diff: largest |exported - keras| over all checked softmax outputs.
        tolerance: the limit it had to stay under.
        synthetic_images: fixed synthetic images checked.
        check_files: given image files checked.
        batch_sizes: batch sizes the exported model was run with.
        details: versions and format facts (opset, tf2onnx, ...).
        notes: things the user should know (defaults in the card, float32 cast, ...).
        seconds: wall time of the export and check.
    """

    format: str
    model: Path
    out: Path
    card: Path
    max_abs_diff: float
    tolerance: float
    synthetic_images: int
    check_files: int
    batch_sizes: tuple[int, ...]
    details: dict[str, Any]
    notes: tuple[str, ...]
    seconds: float


# ------------------------------------------------------------------ paths


def default_out(model_path: Path, fmt: str) -> Path:
    """`model.keras` → `model.onnx` or `model_savedmodel/`, beside the model."""
    if fmt == "onnx":
        return model_path.with_suffix(".onnx")
    return model_path.with_name(f"{model_path.stem}_savedmodel")


def card_beside(out: Path, fmt: str) -> Path:
    """Where the card is written next to the export: `<out>.json` or `<out>/model.json`."""
    return out.with_name(out.name + ".json") if fmt == "onnx" else out / CARD_NAME


def _check_out(out: Path, fmt: str, force: bool, model_path: Path) -> None:
    """Refuses outputs that exist (without `force`) or that `force` must not replace.

    Raises:
        UserError: see the messages.
    """
    if fmt == "onnx" and out.suffix.lower() != ".onnx":
        raise UserError(f"--out {out} must end in .onnx for the ONNX format")
    if out.resolve() in (model_path.resolve(), model_path.parent.resolve()):
        raise UserError(f"--out {out} would replace the model itself; choose another path")
    sidecar = card_beside(out, fmt)
    existing = [p for p in (out, sidecar) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise UserError(f"{existing[0]} exists; pass --force to replace it")
    if sidecar.exists() and fmt == "onnx" and not _is_card(sidecar):
        raise UserError(f"{sidecar} is not a model card; refusing to replace it")
    if not out.exists():
        return
    if fmt == "onnx" and not out.is_file():
        raise UserError(f"--out {out} is a folder; the ONNX format writes one file")
    if fmt == "onnx" and not _is_onnx_model(out):
        raise UserError(f"--out {out} is not an ONNX model; refusing to replace it")
    if fmt == "saved_model" and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SAVED_MODEL_PB).is_file())
    ):
        raise UserError(
            f"--out {out} is not a SavedModel folder (no {SAVED_MODEL_PB}); refusing to replace it"
        )


def _is_onnx_model(path: Path) -> bool:
    """Whether `path` parses as an ONNX model with a graph (an earlier export, or another's)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises its own DecodeError, and others for odd files
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


def _is_card(path: Path) -> bool:
    """Whether `path` is a model card (JSON with the card's required keys)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(values, dict) and all(key in values for key in CARD_KEYS)


# ------------------------------------------------------------------ check images


def synthetic_images(size: int) -> np.ndarray:
    """The fixed check images `(6, size, size)` uint8.

    Two chest phantoms from `synth` (a normal and a lung-opacity patient, seed 0),
    uniform noise (seed 0), black, white and a left-to-right ramp.
    """
    from pneumokeras import synth

    phantoms = [
        synth.render_image(synth.sample_patient(synth.patient_seed(0, index), label), size)
        for index, label in enumerate((synth.NORMAL, synth.LUNG_OPACITY))
    ]
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, size).round().astype(np.uint8), (size, size))
    flat = [np.zeros((size, size), np.uint8), np.full((size, size), 255, np.uint8)]
    return np.stack([*phantoms, noise, *flat, ramp])


def _read_check_files(paths: Sequence[Path], size: int) -> np.ndarray:
    """`paths` read as `predict` reads them: `(N, size, size)` uint8.

    Raises:
        UserError: a file that cannot be read as an image.
    """
    from pneumokeras.io.images import read_image

    pixels = []
    for path in paths:
        try:
            pixels.append(read_image(path, size).pixels)
        except UnreadableInputError as err:
            raise UserError(f"--check-images {path}: {err}") from err
    return np.stack(pixels) if pixels else np.zeros((0, size, size), np.uint8)


# ------------------------------------------------------------------ writers and runtimes


def _float32_model(model: Any) -> tuple[Any, list[str]]:
    """The model computing in float32: itself, or a copy when saved with a mixed policy.

    Mixed policies keep float32 variables, so the copy (same config, every dtype
    policy set to float32, nested models included) takes the weights as they are.
    """
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            config = node.get("config")
            if (
                node.get("class_name") == "DTypePolicy"
                and isinstance(config, dict)
                and config.get("name") != "float32"
            ):
                found.add(str(config.get("name")))
                config["name"] = "float32"
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(serialized)
    if not found:
        return model, []
    copy = keras.saving.deserialize_keras_object(serialized)
    copy.set_weights(model.get_weights())
    return copy, [
        f"exported in float32 (the model was saved with dtype policy {', '.join(sorted(found))})"
    ]


def _signature(size: int) -> Any:
    import tensorflow as tf

    return tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME)


def _card_json(card: Any) -> str:
    return json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n"


def _write_onnx(
    model: Any, card: Any, size: int, path: Path, facts: dict[str, Any]
) -> dict[str, Any]:
    """ONNX file at `path`: tf2onnx through Keras, output renamed, card in metadata."""
    import logging

    import onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    raw = path.with_name("raw.onnx")
    with _quiet_stdout(), warnings.catch_warnings():
        # Keras' numpy-2 patch of tf2onnx probes `np.object`, which warns.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*np.object")
        model.export(str(raw), format="onnx", verbose=False, input_signature=[_signature(size)])
    proto = onnx.load(str(raw))
    raw.unlink()
    old = proto.graph.output[0].name
    for node in proto.graph.node:  # the output keeps tf2onnx's name ('Identity:0') otherwise
        node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
    proto.graph.output[0].name = OUTPUT_NAME
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    details = {**facts, "onnx_opset": opset, "onnx": onnx.__version__}
    with contextlib.suppress(ImportError):
        import tf2onnx

        details["tf2onnx"] = tf2onnx.__version__
    proto.doc_string = "pneumokeras pneumonia classifier; research and education only"
    for key, value in (
        (ONNX_CARD_KEY, _card_json(card)),
        (ONNX_EXPORT_KEY, json.dumps(details, sort_keys=True)),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return details


def _write_saved_model(
    model: Any, card: Any, size: int, path: Path, facts: dict[str, Any]
) -> dict[str, Any]:
    """SavedModel folder at `path`: `serving_default` + `serve`, the card as an asset."""
    import tensorflow as tf

    staged_card = path.with_name(CARD_NAME)
    staged_card.write_text(_card_json(card))

    @tf.function(input_signature=[_signature(size)], autograph=False)
    def serve(image: Any) -> Any:
        return model(image, training=False)

    @tf.function(input_signature=[_signature(size)], autograph=False)
    def serving_default(image: Any) -> Any:
        return {OUTPUT_NAME: serve(image)}

    module = tf.Module()
    module.model_variables = list(model.variables)  # tracked, so saved
    module.model_card = tf.saved_model.Asset(str(staged_card))
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serving_default})
    staged_card.unlink()
    (path / CARD_NAME).write_text(_card_json(card))
    return {**facts, "signature": "serving_default", "asset": f"assets/{CARD_NAME}"}


def _onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """`(N, S, S, 1)` float32 → `(N, 2)` through onnxruntime (CPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def _saved_model_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """`(N, S, S, 1)` float32 → `(N, 2)` through the SavedModel's `serving_default`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures["serving_default"]

    def run(images: np.ndarray, loaded: Any = loaded) -> np.ndarray:
        # `loaded` stays referenced here: its signatures need it alive.
        return signature(image=tf.constant(images))[OUTPUT_NAME].numpy()

    return run


_WRITERS = {"onnx": _write_onnx, "saved_model": _write_saved_model}


def _runner(fmt: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    return _onnx_runner(path) if fmt == "onnx" else _saved_model_runner(path)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """tf2onnx prints its progress with print(); the CLI's stdout is for results."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# ------------------------------------------------------------------ staging


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out`, removed on exit; folders created for it go on failure."""
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _install(stage: Path, artifact: Path, card: Path, out: Path, fmt: str) -> None:
    """Renames the checked export (and its card) into place, replacing an old one."""
    if fmt == "saved_model" and out.exists():
        os.replace(out, stage / "previous")  # a folder cannot be replaced in one rename
    os.replace(artifact, out)
    if fmt == "onnx":
        os.replace(card, card_beside(out, fmt))


# ------------------------------------------------------------------ the export


def _compare(
    run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, reference: np.ndarray
) -> float:
    """Largest |run - reference| over the whole batch and over a batch of one."""
    diffs = []
    for batch, expected in ((images, reference), (images[:1], reference[:1])):
        got = np.asarray(run(batch), dtype=np.float64)
        if got.shape != expected.shape or not np.all(np.isfinite(got)):
            return float("inf")
        diffs.append(float(np.max(np.abs(got - expected))))
    return max(diffs)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _export_tensorflow(
    model_path: Path, fmt: str, out: Path, force: bool, check_files: list[Path]
) -> ExportSummary:
    """The export in a process whose Keras runs TensorFlow (see the module docstring)."""
    from pneumokeras.utils import environment

    environment.import_tensorflow_quietly()
    import keras
    import tensorflow as tf

    from pneumokeras.models.model_card import load_classifier

    start = time.perf_counter()
    classifier = load_classifier(model_path, require_card=True)
    card, size = classifier.card, classifier.input_size
    notes = []
    if not card.fitted:
        notes.append(
            f"the card's threshold {card.threshold} and temperature {card.temperature} are "
            "training's defaults, not fitted on validation data (run `evaluate` first)"
        )
    model, cast_notes = _float32_model(classifier.model)
    notes += cast_notes
    synthetic = synthetic_images(size)
    images = np.concatenate([synthetic, _read_check_files(check_files, size)])
    images = images[..., None].astype(np.float32)
    reference = keras.ops.convert_to_numpy(model(images, training=False)).astype(np.float64)
    facts = {
        "source": classifier.path.name,
        "source_sha256": _sha256(classifier.path),
        "project_version": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "input": f"{INPUT_NAME}: float32 (N, {size}, {size}, 1) pixels in [0, 255]",
        "output": f"{OUTPUT_NAME}: float32 (N, 2) softmax {list(card.class_names)}",
    }
    _check_out(out, fmt, force, classifier.path)  # again: the child may run later
    with _staging(out) as stage:
        artifact = stage / out.name
        details = _WRITERS[fmt](model, card, size, artifact, facts)
        card_file = stage / "card.json"  # beside an ONNX file (a SavedModel holds its own)
        if fmt == "onnx":
            card_file.write_text(_card_json(card))
        diff = _compare(_runner(fmt, artifact), images, reference)
        if not diff <= TOLERANCE:
            raise ExportCheckError(
                f"the {FORMAT_NAMES[fmt]} export differs from {classifier.path} by up to "
                f"{diff:.3g} (limit {TOLERANCE:g}) on {len(images)} check images; "
                "nothing was written"
            )
        _install(stage, artifact, card_file, out, fmt)
    return ExportSummary(
        format=fmt,
        model=classifier.path,
        out=out,
        card=card_beside(out, fmt),
        max_abs_diff=diff,
        tolerance=TOLERANCE,
        synthetic_images=len(synthetic),
        check_files=len(check_files),
        batch_sizes=(len(images), 1),
        details=details,
        notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )


def export_model(
    model_path: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    check_images: Sequence[str | os.PathLike[str]] | None = None,
) -> ExportSummary:
    """Exports `model.keras` (or a run folder's) to ONNX or SavedModel, checked.

    Args:
        model_path: `.keras` file or run folder; its model card is required.
        fmt: `onnx` or `saved_model`.
        out: the ONNX file (`*.onnx`) or SavedModel folder to write; default
            beside the model (`default_out`).
        force: replace an existing export at `out` (never anything else).
        check_images: image files or folders (DICOM, PNG, JPEG) checked besides
            the synthetic images.

    Returns:
        What was written and the largest difference found.

    Raises:
        UserError: unknown format, missing or invalid model or card, an output
            that exists (without `force`) or cannot be replaced, unreadable check
            images.
        ExportCheckError: the exported model differs from the `.keras` by more
            than `TOLERANCE`; nothing was written.
    """
    from pneumokeras.io.images import find_inputs
    from pneumokeras.models.model_card import model_file

    if fmt not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = model_file(Path(model_path))
    out = Path(out) if out is not None else default_out(path, fmt)
    _check_out(out, fmt, force, path)
    files = find_inputs(check_images or [])
    if check_images and not files:
        raise UserError(f"no image files in --check-images {', '.join(map(str, check_images))}")
    backend = keras_backend()
    summary = call_under_tensorflow(_export_tensorflow, path, fmt, out, force, files)
    if backend == "tensorflow":
        return summary
    note = f"exported under TensorFlow in a child process (KERAS_BACKEND={backend})"
    return dataclasses.replace(summary, notes=(note, *summary.notes))
