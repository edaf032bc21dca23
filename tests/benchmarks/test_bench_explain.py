"""The Grad-CAM benchmark's Markdown and arguments (its workers build a 224 px ResNet18)."""

import pytest

from benchmarks import bench_explain

MACHINE = {"cpu": "AMD EPYC", "cpus": 2, "cpu_flags": ["avx512f", "avx512_bf16"]}


def _row(onednn, mode, batch, rate):
    return {
        "onednn": onednn,
        "mode": mode,
        "how": bench_explain.MODES[mode],
        "batch": batch,
        "filters": 64,
        "img_per_s": rate,
        "img_per_s_min": rate * 0.9,
        "img_per_s_max": rate * 1.1,
        "settings": {"max_abs_difference": 2e-6},
    }


def test_markdown_compares_each_way_with_the_eager_whole_model():
    rows = [
        _row(True, "whole", 16, 10.0),
        _row(True, "split", 16, 40.0),
        _row(False, "split", 16, 20.0),
        _row(False, "whole", 16, 5.0),
    ]
    text = bench_explain.render_markdown({"machine": MACHINE, "results": rows})
    table = [line for line in text.splitlines() if line.startswith("| split") or "eager" in line]
    assert table[0].startswith("| split at the target (explain's way) | on | 16 | 40.0 |")
    assert table[0].endswith("| 4.00× |")
    assert table[1].startswith("| split at the target (explain's way) | off |")
    assert table[3].endswith("| 0.50× |")  # whole model, oneDNN off
    assert "differ by at most 2.0e-06 (raw Grad-CAM values" in text
    assert "the split model is 4.00× the whole-model eager path" in text
    assert "with oneDNN off the split model runs at 0.50× its speed" in text


def test_only_the_width_that_does_not_crash_is_offered(capsys):
    with pytest.raises(SystemExit):
        bench_explain._parser().parse_args(["--filters", "8"])
    assert "--filters" in capsys.readouterr().err


def test_markdown_prefers_the_relative_difference():
    row = _row(True, "split", 1, 10.0)
    row["settings"] = {"max_abs_difference": 1e-9, "max_relative_difference": 3e-6}
    text = bench_explain.render_markdown({"machine": MACHINE, "results": [row]})
    assert "differ by at most 3.0e-06 of their largest value" in text
