"""The app benchmark's worker on a tiny model: every stage it times still exists and runs."""

from __future__ import annotations

from benchmarks import bench_app, common


def test_the_worker_times_every_stage_and_the_page_renders(tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(bench_app, "SIZE", 32)
    monkeypatch.setattr(bench_app, "DICOM_SIZE", 64)
    bench_app.build_run(tmp_path)
    clear_session = keras.backend.clear_session
    results = bench_app.measure(tmp_path, images=2, page=True, scorecam=False)
    assert keras.backend.clear_session is clear_session  # the page runs leave it as found
    stages = results["per_upload_s"]
    assert set(stages) == {
        "read", "probability", "probability_eager", "gradcam", "overlay", "total", "total_cpu",
    }  # fmt: skip
    assert all(stage["n"] == 2 and stage["median"] > 0 for stage in stages.values())
    assert results["page_s"]["upload_run_s"]["n"] == 2
    assert results["page_streamlit_default_s"]["first_run_s"] > 0
    record = {
        **results,
        "script": bench_app.NAME,
        "command": "python -m benchmarks.bench_app --images 2 --page",
        "machine": common.finish_machine(common.machine()),
        "images": 2,
        "image_size": 32,
        "target_seconds": bench_app.TARGET_SECONDS,
    }
    assert bench_app.render_markdown(record).startswith("Machine: ")
