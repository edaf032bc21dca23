"""The explainability web app (Streamlit): upload a chest X-ray, see what the model does.

Start it with `python cli.py app --model RUN` (or `make app` after `make demo`); the
page takes the model from `PNEUMOKERAS_MODEL`, an optional converted folder to
browse from `PNEUMOKERAS_DATA` and the per-file upload limit from
`PNEUMOKERAS_MAX_UPLOAD_MB` (`server.py`), so `KERAS_BACKEND=tensorflow streamlit
run pneumokeras/app/page.py` with those variables shows the same page. It needs
the TensorFlow backend (Grad-CAM uses `tf.GradientTape`) and says so otherwise;
models trained under JAX load unchanged. A `cv` ensemble shows the mean of its
members' maps and their spread.

The page only lays out widgets and results: reading, predicting, explaining and
the download tables are the other `app` modules'. It changes no process-wide
state (the server's `main` does that). The model and each heatmap explainer are
built once per process (`st.cache_resource`); an image's analysis is cached by
its content and the heatmap settings, so moving the opacity slider redraws the
overlay without running the model again. Uploaded files stay in memory (a
private temporary folder holds one only while it is read). Whatever fails, the
page shows one line, never a traceback. Research and education only; not for
diagnosis.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

from pneumokeras.app import analysis, downloads, examples, model_panel, server
from pneumokeras.errors import UserError
from pneumokeras.models.model_card import Classifier
from pneumokeras.records import manifest as manifest_lib

if TYPE_CHECKING:
    from pneumokeras.explain.cam import EnsembleHeatmapExplainer, HeatmapExplainer

VIEWS = ("Upload X-rays", "Synthetic examples", "Browse converted data")
METHOD_LABELS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Score-CAM (slow)": "scorecam"}
PAGE_SIZE = 4
# What an analysis depends on: model path, image content, method, layer, target, TTA copies.
AnalysisKey = tuple[str, str, str, str, str, int]


# ------------------------------------------------------------------ cached resources


@st.cache_resource(show_spinner="Loading the model (once per server process)…")
def load_model(path: str) -> Classifier:
    """The classifier (model + card), loaded once per process."""
    from pneumokeras.models.model_card import load_classifier

    classifier = load_classifier(path, require_card=False)
    classifier.warm_up()  # compiles the forward pass now, not on the first upload
    return classifier


@st.cache_resource(show_spinner=False)
def load_explainer(
    path: str, method: str, layer: str
) -> HeatmapExplainer | EnsembleHeatmapExplainer:
    """One heatmap explainer per (model, method, layer), built once per process.

    For an ensemble, the mean of its members' maps, each at `layer`.
    """
    from pneumokeras.explain.explain import heatmap_explainer

    explainer = heatmap_explainer(load_model(path), method, layer)
    if method != "scorecam":  # its first call costs what the first upload would
        size = load_model(path).input_size
        explainer(np.zeros((1, size, size, 1), np.float32), [1])
    return explainer


@st.cache_resource(show_spinner="Reading the split…")
def load_split(data_dir: str, split: str) -> list[dict[str, Any]]:
    """A converted split's records, read once per process."""
    from pneumokeras.records import tfrecords

    return tfrecords.read_split(data_dir, split)


@st.cache_resource(show_spinner=False)
def load_manifest(data_dir: str) -> manifest_lib.Manifest:
    return manifest_lib.load_manifest(data_dir)


@st.cache_resource(show_spinner="Rendering synthetic patients…")
def load_synthetic_examples() -> list[examples.Example]:
    return examples.synthetic_examples()


@st.cache_data(max_entries=64, show_spinner="Predicting and computing the heatmap…")
def analyse_bytes(
    key: AnalysisKey,
    name: str,
    _data: bytes,
    limit_mb: float,
    source: str,
    truth: int | None = None,
    _boxes: np.ndarray | None = None,
) -> analysis.Result:
    """`analysis.analyse_upload`, cached by `key` (model, content digest, settings)."""
    path, _, method, layer, target, tta = key
    return analysis.analyse_upload(
        load_model(path),
        load_explainer(path, method, layer),
        name,
        _data,
        limit_mb,
        target=target,
        tta=tta,
        source=source,
        truth=truth,
        boxes=_boxes,
    )


@st.cache_data(max_entries=64, show_spinner="Predicting and computing the heatmap…")
def analyse_pixels(
    key: AnalysisKey, name: str, _example: examples.Example, source: str
) -> analysis.Result:
    """`analysis.analyse` of a split example, cached by `key`."""
    path, _, method, layer, target, tta = key
    assert _example.pixels is not None  # a split example holds its pixels
    record = analysis.record_from_pixels(_example.pixels, name, _example.name)
    return analysis.analyse(
        load_model(path),
        load_explainer(path, method, layer),
        name,
        record,
        target=target,
        tta=tta,
        source=source,
        truth=_example.truth,
        boxes=_example.boxes,
    )


@st.cache_data(max_entries=128, show_spinner=False)
def overlay(key: tuple[str | int, ...], alpha: float, _result: analysis.Result) -> bytes:
    return analysis.overlay_png(_result, alpha)


# ------------------------------------------------------------------------- drawing


def show_result(
    result: analysis.Result, key: AnalysisKey, alpha: float, slot: int, headline: str
) -> None:
    """One image's card: input, overlay, probability and label, TTA, members, warnings, facts."""
    with st.container(border=True):
        st.markdown(f"**{result.name}**")
        if not result.ok:
            st.error(f"{result.name}: {result.error}")
            return
        left, middle, right = st.columns([1, 1.5, 1.2])
        record = result.record
        assert record is not None  # a predicted image's record is kept
        size = record.pixels.shape[0]
        left.image(
            record.pixels, caption=f"as the model sees it ({size} × {size} px)", width="stretch"
        )
        png = overlay((*key, result.name), alpha, result)
        middle.image(png, caption=analysis.shown_text(result), width="stretch")
        right.metric(headline, f"{result.probability:.3f}")
        right.markdown(f"Label: **{result.class_name}** (threshold {result.threshold:.3f})")
        if result.tta:
            count, mean, std = result.tta
            right.markdown(
                f"TTA ({count} augmented copies): {mean:.3f} ± {std:.3f}",
                help="Mean ± SD over flips, ±5° rotations and ±5 % brightness: how "
                "much the prediction moves under small changes. Not a "
                "calibrated uncertainty.",
            )
        if result.members is not None:
            right.markdown(
                analysis.members_text(result),
                help="Standard deviation of the fold models' calibrated probabilities: how "
                "much models trained on different data disagree. Not a calibrated "
                "uncertainty.",
            )
        if result.truth is not None:
            truth = "pneumonia" if result.truth else "normal"
            line = f"Truth: **{truth}**"
            if result.pointing_game is not None:
                hit = "hit" if result.pointing_game else "miss"
                line += (
                    f" · pointing game: **{hit}** · energy in boxes {result.energy_in_boxes:.2f}"
                )
            right.markdown(line)
        if result.warning:
            right.warning(result.warning)
        right.markdown("\n".join(f"- {k}: {v}" for k, v in analysis.image_facts(record)))
        right.download_button(
            "Overlay PNG",
            png,
            file_name=f"{os.path.splitext(result.name)[0]}_overlay.png",
            mime="image/png",
            key=f"overlay-{slot}",
            on_click="ignore",
        )


def _one_line(err: BaseException) -> str:
    """An error as one line: a UserError's message, else its type and first line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, UserError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def show_safely(
    make_result: Callable[[], analysis.Result],
    name: str,
    key: AnalysisKey,
    alpha: float,
    slot: int,
    headline: str,
) -> analysis.Result:
    """Analyses and draws one image (card number `slot`); any failure stays on its card."""
    try:
        result = make_result()
        show_result(result, key, alpha, slot, headline)
        return result
    except Exception as err:
        st.error(f"{name}: could not be analysed ({_one_line(err)})")
        return analysis.Result(name=name, error=_one_line(err))


def show_downloads(results: Sequence[analysis.Result], classifier: Classifier, label: str) -> None:
    rows = [downloads.result_row(r) for r in results]
    if not rows:
        return
    left, right = st.columns(2)
    left.download_button(
        f"{label} as CSV",
        downloads.results_csv(rows),
        file_name="pneumokeras_results.csv",
        mime="text/csv",
        on_click="ignore",
    )
    right.download_button(
        f"{label} as JSON",
        downloads.results_json(rows, model_panel.model_summary(classifier)),
        file_name="pneumokeras_results.json",
        mime="application/json",
        on_click="ignore",
    )


def sidebar(classifier: Classifier) -> dict[str, Any]:
    """Heatmap settings and the model panel; returns the settings."""
    bar = st.sidebar
    bar.header("Heatmap")
    method = METHOD_LABELS[
        bar.radio(
            "Method",
            list(METHOD_LABELS),
            key="method",
            help="Score-CAM runs the model once per channel of the "
            "layer: seconds to minutes per image on a CPU.",
        )
    ]
    layers = model_panel.explainable_layers(classifier)[::-1]
    default = model_panel.default_layer(classifier, layers[::-1])
    layer = bar.selectbox(
        "Layer" + (" (of each member)" if classifier.card.members else ""),
        layers,
        index=layers.index(default) if default else 0,
        key="layer",
        help="Deeper layers: coarser maps, closer to the decision.",
    )
    target = bar.selectbox("Class explained", ["pneumonia", "normal", "predicted"], key="target")
    alpha = bar.slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key="alpha")
    tta = bar.number_input(
        "Test-time augmentations (0 = off)",
        0,
        32,
        0,
        key="tta",
        help="Mean ± SD of the probability over randomly flipped, rotated and brightened copies.",
    )
    bar.header("Model")
    if classifier.card_missing:
        bar.warning(
            "No model card (model.json) beside the model: uncalibrated probabilities, "
            "placeholder threshold 0.5."
        )
    elif not classifier.card.fitted:
        bar.warning(
            "Threshold and temperature are training's defaults: run `evaluate` on "
            "this model to fit them."
        )
    bar.markdown("\n".join(f"- **{k}**: {v}" for k, v in model_panel.model_facts(classifier)))
    return {
        "method": method,
        "layer": layer,
        "target": target,
        "alpha": alpha,
        "tta": int(tta),
        "headline": model_panel.probability_label(classifier),
    }


# --------------------------------------------------------------------------- views


def upload_view(classifier: Classifier, settings: Mapping[str, Any], model_path: str) -> None:
    limit = server.upload_limit_mb(os.environ)
    files = st.file_uploader(
        "Chest X-rays: DICOM, PNG or JPEG (one or more)",
        accept_multiple_files=True,
        key="uploads",
        help=f"Up to {limit:g} MB per file. Files stay in this server's memory "
        "and are never saved.",
    )
    if not files:
        st.info("No X-ray at hand? Choose **Synthetic examples** above.")
        return
    results = []
    for slot, file in enumerate(files):
        data = file.getvalue()
        key = _key(model_path, hashlib.sha256(data).hexdigest(), settings)
        results.append(
            show_safely(
                functools.partial(analyse_bytes, key, file.name, data, limit, "upload"),
                file.name,
                key,
                settings["alpha"],
                slot,
                settings["headline"],
            )
        )
    show_downloads(results, classifier, "Results")


def synthetic_view(classifier: Classifier, settings: Mapping[str, Any], model_path: str) -> None:
    st.caption(
        "Synthetic chest phantoms from pneumokeras' own generator (not patients), "
        "rendered in memory as RSNA-like DICOMs and read like uploads. Green boxes: "
        "where the opacities were drawn."
    )
    results = []
    for slot, example in enumerate(load_synthetic_examples()):
        key = _key(model_path, hashlib.sha256(example.data).hexdigest(), settings)
        results.append(
            show_safely(
                functools.partial(
                    analyse_bytes,
                    key,
                    example.name,
                    example.data,
                    float("inf"),
                    "synthetic",
                    example.truth,
                    example.boxes,
                ),
                example.name,
                key,
                settings["alpha"],
                slot,
                settings["headline"],
            )
        )
    summary = examples.localisation_summary(results)
    if summary:
        st.markdown(summary[0].upper() + summary[1:] + ".")
    show_downloads(results, classifier, "Results")


def browse_view(classifier: Classifier, settings: Mapping[str, Any], model_path: str) -> None:
    data_dir = os.environ.get(server.DATA_VARIABLE, "")
    if not data_dir:
        st.info(
            "No converted data given: start the app with `--data DIR` (a folder made by "
            "`python cli.py convert`, e.g. `demo_output/tfrecords`) to browse its images "
            "with their labels, boxes and pointing-game scores."
        )
        return
    try:
        manifest = load_manifest(data_dir)
    except UserError as err:
        st.error(str(err))
        return
    if manifest.image_size != classifier.input_size:
        st.error(
            f"The model takes {classifier.input_size} px images but {data_dir} holds "
            f"{manifest.image_size} px images."
        )
        return
    splits = list(manifest.splits)
    left, middle, right = st.columns(3)
    split = left.selectbox(
        "Split", splits, index=splits.index("test") if "test" in splits else 0, key="split"
    )
    positives = middle.checkbox("Positives only", key="positives")
    try:
        records = load_split(data_dir, split)
    except UserError as err:
        st.error(str(err))
        return
    selected = sum(1 for r in records if r["label"] == 1) if positives else len(records)
    pages = max(1, -(-selected // PAGE_SIZE))
    page = right.number_input(f"Page (of {pages})", 1, pages, 1, key="page")
    shown, _ = examples.split_examples(records, (page - 1) * PAGE_SIZE, PAGE_SIZE, positives)
    st.caption(
        f"{data_dir} · split {split}: {selected} image(s)"
        f"{' with label 1' if positives else ''}; green boxes: the label boxes."
    )
    results = []
    for slot, example in enumerate(shown):
        key = _key(model_path, f"{data_dir}:{split}:{example.name}", settings)
        results.append(
            show_safely(
                functools.partial(analyse_pixels, key, example.name, example, f"split:{split}"),
                example.name,
                key,
                settings["alpha"],
                slot,
                settings["headline"],
            )
        )
    summary = examples.localisation_summary(results)
    if summary:
        st.markdown(summary[0].upper() + summary[1:] + ".")
    show_downloads(results, classifier, "This page's results")


def _key(model_path: str, content: str, settings: Mapping[str, Any]) -> AnalysisKey:
    """What an analysis depends on (the opacity only changes the drawing)."""
    return (
        model_path,
        content,
        settings["method"],
        settings["layer"],
        settings["target"],
        settings["tta"],
    )


# ---------------------------------------------------------------------------- page


def main() -> None:
    st.set_page_config(page_title="pneumokeras: explain a chest X-ray", layout="wide")
    st.title("pneumokeras: what does the model see?")
    st.warning(downloads.RESEARCH_NOTICE)
    try:
        show_page()
    except Exception as err:  # one line on the page, never a traceback
        st.error(f"The page stopped: {_one_line(err)}")


def show_page() -> None:
    model_path = os.environ.get(server.MODEL_VARIABLE, "")
    if not model_path:
        st.error(
            f"No model: set {server.MODEL_VARIABLE}, or start the app with "
            "`python cli.py app --model RUN_OR_MODEL`."
        )
        return
    import keras

    if keras.backend.backend() != "tensorflow":
        st.error(
            "The app needs the TensorFlow backend (Grad-CAM uses tf.GradientTape); this "
            f"process runs {keras.backend.backend()}. Start it with `python cli.py app`."
        )
        return
    try:
        classifier = load_model(model_path)
    except UserError as err:
        st.error(str(err))
        return
    settings = sidebar(classifier)
    with st.spinner("Preparing the heatmap method (once per process)…"):
        load_explainer(model_path, settings["method"], settings["layer"])
    st.caption(model_panel.decision_rule(classifier))
    view = st.radio("Show", VIEWS, horizontal=True, key="view", label_visibility="collapsed")
    if view == VIEWS[0]:
        upload_view(classifier, settings, model_path)
    elif view == VIEWS[1]:
        synthetic_view(classifier, settings, model_path)
    else:
        browse_view(classifier, settings, model_path)


main()
