"""Benchmark: how long the web app takes to load its model and to answer one upload.

The 224 px ResNet18 of the default settings (`resnet.build_model(ModelConfig(), 224)`,
11.2 M parameters, random weights, seed 0) is saved with a model card into a
temporary run folder. A fresh worker process (as a freshly started app server)
then times, under the TensorFlow backend:

- **start-up**: importing TensorFlow and Keras; `load_classifier` (the `.keras`
  file and its card); compiling the forward pass (`Classifier.warm_up`) and
  building the Grad-CAM explainer (`cam.HeatmapExplainer`, which clones the model
  once), each with one warm-up call. The app does these once per process.
- **per upload**, on synthetic RSNA-like DICOMs (1024 px, JPEG Baseline), each
  stage the app runs for one file: `app.uploads.read_upload` (the converter's reader),
  the calibrated probability (`Classifier.probabilities`, compiled; the eager call for
  comparison), Grad-CAM at `stack4_block2_out`, and the overlay
  figure (`app.analysis.overlay_png`); and the whole (`analyse_upload` + `overlay_png`).
  The first upload (which traces TensorFlow functions) is reported apart from the
  median and maximum of the others. Grad-CAM++ is timed likewise; Score-CAM on one
  image with `--scorecam` (it runs the model once per channel: 512 here).
- **the page** (`--page`): `streamlit.testing.v1.AppTest` runs `pneumokeras/app/page.py`
  itself: the first page run (model loading included), then one run per upload
  (Streamlit's own work included; only the browser's transfer and drawing are not);
  once with Streamlit's default of clearing the Keras session after every run, once
  as `cli.py app` serves it (`app.server.main` keeps the Keras session).

Writes `benchmarks/out/bench_app.json` (atomically) and prints the Markdown.

    python -m benchmarks.bench_app [--images 8] [--page] [--scorecam]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_app"
SIZE = 224
DICOM_SIZE = 1024
TARGET_SECONDS = 2.0  # issue #13: probability and first overlay within 2 s after loading


def build_run(run_dir: Path) -> None:
    """Saves the default 224 px ResNet18 (random weights) and a fitted-looking card."""
    import keras

    from pneumokeras.config import ModelConfig
    from pneumokeras.models import model_card, resnet

    keras.utils.set_random_seed(0)
    model = resnet.build_model(ModelConfig(), SIZE)
    model.save(run_dir / "model.keras")
    model_card.write_card(
        run_dir,
        model_card.ModelCard(
            input_size=SIZE,
            threshold=0.5,
            threshold_method="youden",
            temperature=1.3,
            model_name="resnet18",
            gradcam_layer=resnet.LAST_CONV_LAYER["resnet18"],
            backend=keras.backend.backend(),
            keras_version=keras.__version__,
        ),
    )


def _dicoms(count: int, seed: int = 123) -> list[bytes]:
    """RSNA-like synthetic DICOMs (1024 px, JPEG Baseline), half of them positive."""
    from pneumokeras import synth

    classes = [synth.LUNG_OPACITY if i % 2 == 0 else synth.NORMAL for i in range(count)]
    files = []
    for index, label_class in enumerate(classes):
        spec = synth.sample_patient(synth.patient_seed(seed, index), label_class)
        files.append(synth.encode_dicom(spec, synth.render_image(spec, DICOM_SIZE)))
    return files


def _clock(func, *args, **kwargs):
    start = time.perf_counter()
    value = func(*args, **kwargs)
    return value, time.perf_counter() - start


def _summary(seconds: list[float]) -> dict[str, float]:
    """First call apart; median and maximum of the rest."""
    rest = seconds[1:] or seconds
    return {
        "first": seconds[0],
        "median": statistics.median(rest),
        "max": max(rest),
        "n": len(seconds),
    }


def measure(run_dir: Path, images: int, page: bool, scorecam: bool) -> dict:
    """Runs in a fresh process: start-up, per-upload stages, optionally the page."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    from pneumokeras.utils import environment

    environment.set_defaults()
    results: dict = {}
    start = time.perf_counter()
    environment.import_tensorflow_quietly()
    import keras  # noqa: F401
    import numpy as np

    results["import_tensorflow_keras_s"] = time.perf_counter() - start
    from pneumokeras.app import analysis
    from pneumokeras.app.uploads import read_upload
    from pneumokeras.explain.cam import HeatmapExplainer
    from pneumokeras.models.model_card import load_classifier

    classifier, results["load_classifier_s"] = _clock(load_classifier, run_dir)
    # What the app's cached loaders do: compile the forward pass, build and warm Grad-CAM.
    start = time.perf_counter()
    classifier.warm_up()
    results["trace_forward_s"] = time.perf_counter() - start
    results["forward_path"] = classifier.forward_path
    start = time.perf_counter()
    explainer = HeatmapExplainer(classifier.model, "gradcam", classifier.card.gradcam_layer)
    explainer(np.zeros((1, SIZE, SIZE, 1), np.float32), [1])
    results["build_gradcam_s"] = time.perf_counter() - start
    results["startup_total_s"] = sum(
        results[k]
        for k in (
            "import_tensorflow_keras_s",
            "load_classifier_s",
            "trace_forward_s",
            "build_gradcam_s",
        )
    )
    files = _dicoms(images)

    stages: dict[str, list[float]] = {
        k: []
        for k in (
            "read",
            "probability",
            "probability_eager",
            "gradcam",
            "overlay",
            "total",
            "total_cpu",
        )
    }
    for index, data in enumerate(files):
        name = f"case-{index}.dcm"
        record, seconds = _clock(read_upload, name, data, SIZE, 100)
        stages["read"].append(seconds)
        pixels = record.pixels[None, :, :, None].astype("float32")
        stages["probability"].append(_clock(classifier.probabilities, pixels)[1])
        stages["probability_eager"].append(_clock(classifier.model, pixels, training=False)[1])
        stages["gradcam"].append(_clock(explainer, pixels, [1])[1])
        start, cpu = time.perf_counter(), time.process_time()
        result = analysis.analyse_upload(classifier, explainer, name, data, 100)
        analysed = time.perf_counter()
        analysis.overlay_png(result, 0.4)
        stages["overlay"].append(time.perf_counter() - analysed)
        stages["total"].append(time.perf_counter() - start)
        # CPU seconds of this process (all its threads): on an otherwise idle 2-core
        # machine the wall time lies between half of it and all of it.
        stages["total_cpu"].append(time.process_time() - cpu)
    results["per_upload_s"] = {k: _summary(v) for k, v in stages.items()}

    plus, results["build_gradcam++_s"] = _clock(
        HeatmapExplainer, classifier.model, "gradcam++", classifier.card.gradcam_layer
    )
    pixels = read_upload("x.dcm", files[0], SIZE, 100).pixels[None, ..., None]
    results["gradcam++_s"] = _summary([_clock(plus, pixels, [1])[1] for _ in range(3)])
    if scorecam:
        score = HeatmapExplainer(classifier.model, "scorecam", classifier.card.gradcam_layer)
        results["scorecam_s"] = _summary([_clock(score, pixels, [1])[1]])
    if page:
        # Streamlit's default first (it clears the Keras session after every run),
        # then as `cli.py app` serves it (`app.server.main` keeps the Keras session).
        # New files for each (the page caches analyses by content, across sessions).
        results["page_streamlit_default_s"] = measure_page(
            run_dir, _dicoms(images, 456), server=False
        )
        results["page_s"] = measure_page(run_dir, _dicoms(images, 789), server=True)
    return results


def measure_page(run_dir: Path, files: list[bytes], server: bool) -> dict:
    """The app script itself under AppTest: first run, then one run per new upload."""
    import keras
    from streamlit.testing.v1 import AppTest

    from pneumokeras.app import server as app_server

    os.environ[app_server.MODEL_VARIABLE] = str(run_dir)
    # What `app.server.main` does in the server process; Streamlit's default otherwise.
    streamlit_default = keras.backend.clear_session
    if server:
        keras.backend.clear_session = app_server.keep_session
    page = common.REPO_ROOT / "pneumokeras" / "app" / "page.py"
    app = AppTest.from_file(str(page), default_timeout=600)
    _, first = _clock(app.run)
    uploads = []
    for index, data in enumerate(files):
        app.file_uploader[0].set_value((f"page-{index}.dcm", data, "application/dicom"))
        _, seconds = _clock(app.run)
        if app.exception or len(app.metric) != 1:
            raise RuntimeError(f"the page did not show one prediction: {app.exception}")
        uploads.append(seconds)
    keras.backend.clear_session = streamlit_default
    return {"first_run_s": first, "upload_run_s": _summary(uploads)}


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    per = results["per_upload_s"]
    lines = [
        f"Machine: {common.describe_machine(results['machine'])}.",
        "",
        f"224 px ResNet18 (default settings, random weights), {results['images']} synthetic "
        "1024 px JPEG DICOMs, TensorFlow backend:",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| import TensorFlow + Keras | {results['import_tensorflow_keras_s']:.2f} |",
        f"| load_classifier (model.keras + card) | {results['load_classifier_s']:.2f} |",
        f"| compile the forward pass ({results.get('forward_path', 'graph')}; one warm-up "
        f"call) | {results['trace_forward_s']:.2f} |",
        f"| build the Grad-CAM explainer (and one warm-up call) | "
        f"{results['build_gradcam_s']:.2f} |",
        f"| **start-up, once per process** | **{results['startup_total_s']:.2f}** |",
    ]
    for key, label in (
        ("read", "read the DICOM (1024 px → 224 px)"),
        ("probability", "calibrated probability (`Classifier.probabilities`, compiled)"),
        ("probability_eager", "(the model's eager call, for comparison)"),
        ("gradcam", "Grad-CAM (stack4_block2_out)"),
        ("overlay", "overlay figure (PNG)"),
        ("total", "**one upload: read + probability + Grad-CAM + overlay**"),
        ("total_cpu", "the same in CPU seconds (all threads)"),
    ):
        item = per[key]
        lines.append(
            f"| {label}: median (max) of {item['n'] - 1}; first | "
            f"{item['median']:.3f} ({item['max']:.3f}); {item['first']:.3f} |"
        )
    plus = results["gradcam++_s"]
    lines.append(
        f"| Grad-CAM++ instead: median; first | {plus['median']:.3f}; {plus['first']:.3f} |"
    )
    if "scorecam_s" in results:
        lines.append(f"| Score-CAM instead (one image) | {results['scorecam_s']['first']:.1f} |")
    if "page_s" in results:
        lines.append(
            f"| the page (AppTest): first run of a fresh process, model loading "
            f"included | {results['page_streamlit_default_s']['first_run_s']:.2f} |"
        )
    for key, how in (
        ("page_s", "as served by `pneumokeras app`"),
        ("page_streamlit_default_s", "Streamlit clearing the Keras session"),
    ):
        if key not in results:
            continue
        item = results[key]["upload_run_s"]
        lines.append(
            f"| the page ({how}): one upload, median (max); first | "
            f"{item['median']:.2f} ({item['max']:.2f}); {item['first']:.2f} |"
        )
    total = per["total"]["median"]
    verdict = "met" if total < results["target_seconds"] else "**not met**"
    lines += [
        "",
        f"- One upload after loading: {total:.2f} s median, {per['total_cpu']['median']:.2f} "
        f"CPU s (target < {results['target_seconds']:.0f} s: {verdict}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="uploads to time (≥ 2)")
    parser.add_argument("--page", action="store_true", help="also time the page (AppTest)")
    parser.add_argument("--scorecam", action="store_true", help="also time Score-CAM once")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the worker
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be ≥ 2")
    if args.measure:
        print(json.dumps(measure(args.measure, args.images, args.page, args.scorecam)))
        return

    machine = common.machine()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with tempfile.TemporaryDirectory(prefix="bench-app-") as folder:
        run_dir = Path(folder)
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); "
                "from benchmarks.bench_app import build_run; "
                "from pathlib import Path; build_run(Path(sys.argv[2]))",
                str(common.REPO_ROOT),
                str(run_dir),
            ],
            check=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        )
        command = (
            [sys.executable, "-m", f"benchmarks.{NAME}", "--measure", str(run_dir)]
            + ["--images", str(args.images)]
            + ["--page"] * args.page
            + ["--scorecam"] * args.scorecam
        )
        done = subprocess.run(
            command,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow"},
            cwd=common.REPO_ROOT,
        )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    results.update(
        script=NAME,
        command=common.command_line(argv, NAME),
        machine=common.finish_machine(machine),
        images=args.images,
        image_size=SIZE,
        target_seconds=TARGET_SECONDS,
    )
    path = common.write_results(NAME, results, args.out)
    print(render_markdown(results))
    print(f"\nresults in {path}")


if __name__ == "__main__":
    main()
