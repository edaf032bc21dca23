"""The explainability web app (Streamlit): upload a chest X-ray, see what the model does.

Start it with `python cli.py app --model RUN` (or `make app` after `make demo`); the
page takes the model from `PNEUMOKERAS_MODEL`, an optional converted folder to
browse from `PNEUMOKERAS_DATA` and the per-file upload limit from
`PNEUMOKERAS_MAX_UPLOAD_MB`, so `streamlit run pneumokeras/app/page.py` with those
variables is the same app. It runs under the TensorFlow backend (Grad-CAM uses
`tf.GradientTape`); models trained under JAX load unchanged.

The page only lays out widgets and results: reading, predicting, explaining and
the download tables are `app_logic`'s. The model and each heatmap explainer are
built once per process (`st.cache_resource`); an image's analysis is cached by
its content and the heatmap settings, so moving the opacity slider redraws the
overlay without running the model again. Uploaded files stay in memory (a
private temporary folder holds one only while it is read). Research and
education only; not for diagnosis.
"""

from __future__ import annotations

import hashlib
import os
import sys

if "keras" not in sys.modules:  # Grad-CAM needs TensorFlow; choose it before Keras loads
    os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np
import streamlit as st

from pneumokeras.app import logic as app_logic
from pneumokeras.errors import UserError
from pneumokeras.utils import environment

environment.set_defaults()

VIEWS = ("Upload X-rays", "Synthetic examples", "Browse converted data")
METHOD_LABELS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Score-CAM (slow)": "scorecam"}
PAGE_SIZE = 4


# ------------------------------------------------------------------ cached resources


@st.cache_resource(show_spinner="Loading the model (once per server process)…")
def load_model(path: str):
    """The classifier (model + card), loaded once per process."""
    from pneumokeras.models.model_card import load_classifier

    classifier = load_classifier(path, require_card=False)
    classifier.warm_up()  # compiles the forward pass now, not on the first upload
    return classifier


@st.cache_resource(show_spinner=False)
def load_explainer(path: str, method: str, layer: str):
    """One `HeatmapExplainer` per (model, method, layer), built once per process."""
    from pneumokeras.explain.cam import HeatmapExplainer

    explainer = HeatmapExplainer(load_model(path).model, method, layer)
    if method != "scorecam":  # its first call costs what the first upload would
        size = load_model(path).input_size
        explainer(np.zeros((1, size, size, 1), np.float32), [1])
    return explainer


@st.cache_resource(show_spinner="Reading the split…")
def load_split(data_dir: str, split: str):
    """A converted split's records, read once per process."""
    from pneumokeras.records import tfrecords

    return tfrecords.read_split(data_dir, split)


@st.cache_resource(show_spinner=False)
def load_manifest(data_dir: str):
    from pneumokeras.records import tfrecords

    return tfrecords.load_manifest(data_dir)


@st.cache_resource(show_spinner="Rendering synthetic patients…")
def load_synthetic_examples():
    return app_logic.synthetic_examples()


@st.cache_data(max_entries=64, show_spinner="Predicting and computing the heatmap…")
def analyse_bytes(
    key: tuple, name: str, _data: bytes, limit_mb: float, source: str, truth=None, _boxes=None
):
    """`app_logic.analyse_upload`, cached by `key` (model, content digest, settings)."""
    path, _, method, layer, target, tta = key
    return app_logic.analyse_upload(
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
def analyse_pixels(key: tuple, name: str, _example, source: str):
    """`app_logic.analyse` of a split example, cached by `key`."""
    path, _, method, layer, target, tta = key
    record = app_logic.record_from_pixels(_example.pixels, name, _example.name)
    return app_logic.analyse(
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
def overlay(key: tuple, alpha: float, _result) -> bytes:
    return app_logic.overlay_png(_result, alpha)


# ------------------------------------------------------------------------- drawing


def show_result(result, key: tuple, alpha: float, slot: int) -> None:
    """One image's card: input, overlay, probability and label, TTA, warnings, facts."""
    with st.container(border=True):
        st.markdown(f"**{result.name}**")
        if not result.ok:
            st.error(f"{result.name}: {result.error}")
            return
        left, middle, right = st.columns([1, 1.5, 1.2])
        record = result.record
        size = record.pixels.shape[0]
        left.image(
            record.pixels, caption=f"as the model sees it ({size} × {size} px)", width="stretch"
        )
        png = overlay((*key, result.name), alpha, result)
        middle.image(png, caption=app_logic.shown_text(result), width="stretch")
        right.metric("P(pneumonia), calibrated", f"{result.probability:.3f}")
        right.markdown(f"Label: **{result.class_name}** (threshold {result.threshold:.3f})")
        if result.tta:
            count, mean, std = result.tta
            right.markdown(
                f"TTA ({count} augmented copies): {mean:.3f} ± {std:.3f}",
                help="Mean ± SD over flips, ±5° rotations and ±5 % brightness: how "
                "much the prediction moves under small changes. Not a "
                "calibrated uncertainty.",
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
        right.markdown("\n".join(f"- {k}: {v}" for k, v in app_logic.image_facts(record)))
        right.download_button(
            "Overlay PNG",
            png,
            file_name=f"{os.path.splitext(result.name)[0]}_overlay.png",
            mime="image/png",
            key=f"overlay-{slot}",
            on_click="ignore",
        )


def show_safely(make_result, name: str, key: tuple, alpha: float, slot: int):
    """Analyses and draws one image (card number `slot`); any failure stays on its card."""
    try:
        result = make_result()
        show_result(result, key, alpha, slot)
        return result
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else ""
        st.error(f"{name}: could not be analysed ({type(err).__name__}: {text})")
        return app_logic.Result(name=name, error=f"{type(err).__name__}: {text}")


def show_downloads(results, classifier, label: str) -> None:
    rows = [app_logic.result_row(r) for r in results]
    if not rows:
        return
    left, right = st.columns(2)
    left.download_button(
        f"{label} as CSV",
        app_logic.results_csv(rows),
        file_name="pneumokeras_results.csv",
        mime="text/csv",
        on_click="ignore",
    )
    right.download_button(
        f"{label} as JSON",
        app_logic.results_json(rows, app_logic.model_summary(classifier)),
        file_name="pneumokeras_results.json",
        mime="application/json",
        on_click="ignore",
    )


def sidebar(classifier) -> dict:
    """Heatmap settings and the model panel; returns the settings."""
    from pneumokeras.explain.cam import spatial_layers

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
    layers = spatial_layers(classifier.model)[::-1]
    default = app_logic.default_layer(classifier, layers[::-1])
    layer = bar.selectbox(
        "Layer",
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
    bar.markdown("\n".join(f"- **{k}**: {v}" for k, v in app_logic.model_facts(classifier)))
    return {"method": method, "layer": layer, "target": target, "alpha": alpha, "tta": int(tta)}


# --------------------------------------------------------------------------- views


def upload_view(classifier, settings, model_path: str) -> None:
    limit = app_logic.upload_limit_mb()
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
                lambda d=data, n=file.name, k=key: analyse_bytes(k, n, d, limit, "upload"),
                file.name,
                key,
                settings["alpha"],
                slot,
            )
        )
    show_downloads(results, classifier, "Results")


def synthetic_view(classifier, settings, model_path: str) -> None:
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
                lambda e=example, k=key: analyse_bytes(
                    k, e.name, e.data, float("inf"), "synthetic", e.truth, e.boxes
                ),
                example.name,
                key,
                settings["alpha"],
                slot,
            )
        )
    summary = app_logic.localisation_summary(results)
    if summary:
        st.markdown(summary[0].upper() + summary[1:] + ".")
    show_downloads(results, classifier, "Results")


def browse_view(classifier, settings, model_path: str) -> None:
    data_dir = os.environ.get(app_logic.DATA_VARIABLE, "")
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
    if manifest["image_size"] != classifier.input_size:
        st.error(
            f"The model takes {classifier.input_size} px images but {data_dir} holds "
            f"{manifest['image_size']} px images."
        )
        return
    splits = list(manifest["splits"])
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
    examples, _ = app_logic.split_examples(records, (page - 1) * PAGE_SIZE, PAGE_SIZE, positives)
    st.caption(
        f"{data_dir} · split {split}: {selected} image(s)"
        f"{' with label 1' if positives else ''}; green boxes: the label boxes."
    )
    results = []
    for slot, example in enumerate(examples):
        key = _key(model_path, f"{data_dir}:{split}:{example.name}", settings)
        results.append(
            show_safely(
                lambda e=example, k=key: analyse_pixels(k, e.name, e, f"split:{split}"),
                example.name,
                key,
                settings["alpha"],
                slot,
            )
        )
    summary = app_logic.localisation_summary(results)
    if summary:
        st.markdown(summary[0].upper() + summary[1:] + ".")
    show_downloads(results, classifier, "This page's results")


def _key(model_path: str, content: str, settings: dict) -> tuple:
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
    st.warning(app_logic.RESEARCH_NOTICE)
    model_path = os.environ.get(app_logic.MODEL_VARIABLE, "")
    if not model_path:
        st.error(
            f"No model: set {app_logic.MODEL_VARIABLE}, or start the app with "
            "`python cli.py app --model RUN_OR_MODEL`."
        )
        st.stop()
    environment.import_tensorflow_quietly()  # its C++ start-up lines would fill the log
    import keras

    app_logic.keep_keras_session()  # the served app keeps its model (see there)

    if keras.backend.backend() != "tensorflow":
        st.error(
            "The app needs the TensorFlow backend (Grad-CAM uses tf.GradientTape); this "
            f"process runs {keras.backend.backend()}. Start it with `python cli.py app`."
        )
        st.stop()
    try:
        classifier = load_model(model_path)
    except UserError as err:
        st.error(str(err))
        st.stop()
    settings = sidebar(classifier)
    with st.spinner("Preparing the heatmap method (once per process)…"):
        load_explainer(model_path, settings["method"], settings["layer"])
    st.caption(app_logic.decision_rule(classifier))
    view = st.radio("Show", VIEWS, horizontal=True, key="view", label_visibility="collapsed")
    if view == VIEWS[0]:
        upload_view(classifier, settings, model_path)
    elif view == VIEWS[1]:
        synthetic_view(classifier, settings, model_path)
    else:
        browse_view(classifier, settings, model_path)


main()
