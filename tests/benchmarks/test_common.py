"""The benchmarks' shared helper: machine facts, timing summaries, rendering results."""

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import common

OUT = Path(common.REPO_ROOT) / "benchmarks" / "out"


def test_machine_names_the_cpu_flags_and_the_emulation():
    info = common.machine("avx2")
    assert info["cpus"] >= 1
    assert info["isa"] in ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
    assert set(info["cpu_flags"]) <= set(common._NAMED_FLAGS)
    line = common.describe_machine(common.finish_machine(info))
    assert "**AVX2 emulated** (ONEDNN_MAX_CPU_ISA=AVX2 " in line
    assert "load average" in line
    plain = common.describe_machine({"cpu": "X", "cpus": 4, "cpu_flags": ["avx2", "fma"]})
    assert plain == "X, 4 logical CPUs, flags: avx2 fma"
    assert "flags: unknown" in common.describe_machine({})


def test_summaries_and_ratios():
    summary = common.summarise_times([1.0, 2.0, 4.0], [2.0, 2.0, 4.0], items=8)
    assert summary["img_per_s"] == 4.0  # 8 items / median 2 s
    assert (summary["img_per_s_min"], summary["img_per_s_max"]) == (2.0, 8.0)
    assert summary["cpu_per_wall"] == 1.0
    assert common.ratio(3.0, 2.0) == "1.50×"
    assert common.ratio(3.0, None) == common.ratio(None, 2.0) == "n/a"
    assert common.positive("3") == 3
    for bad in ("0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.positive(bad)
    assert common.parse_batches("32, 1,32") == [1, 32]
    for bad in ("", "0,1", "a,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="--batches takes positive"):
            common.parse_batches(bad)


def test_command_lines_reproduce_a_run():
    line = common.command_line(["--isa", "avx2", "--out", "a b.json"], "bench_train")
    assert line == "python -m benchmarks.bench_train --isa avx2 --out 'a b.json'"


def test_results_files_find_their_script():
    assert "bench_train" in common.scripts()
    assert common.script_of(Path("x.json"), {"script": "bench_infer"}) == "bench_infer"
    assert common.script_of(Path("bench_train_avx2.json"), {}) == "bench_train"
    assert common.script_of(Path("bench_convert_folders.json"), {}) == "bench_convert_folders"
    with pytest.raises(ValueError, match="no benchmarks/bench_"):
        common.script_of(Path("notes.json"), {})
    title, description = common.describe("Title.\n\nWhat it does.\n\nUsage:\n    python -m x\n")
    assert (title, description) == ("Title", "What it does.")


@pytest.mark.parametrize("path", sorted(OUT.glob("*.json")), ids=lambda p: p.name)
def test_every_committed_result_renders(path):
    """What the docs generator does with each file (docs/gen_benchmarks.py)."""
    script, markdown = common.render_file(path)
    assert script in common.scripts()
    assert markdown.startswith("Machine: ")
    assert "|" in markdown  # a table


def test_write_results_is_atomic_json(tmp_path):
    path = common.write_results("bench_x", {"a": 1}, tmp_path / "sub" / "r.json")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_recorded_commands_show_output_paths_relative_to_the_checkout():
    recorded = "python -m benchmarks.bench_train --out /tmp/x/benchmarks/out/bench_train_avx2.json"
    assert common.display_command(recorded) == (
        "python -m benchmarks.bench_train --out benchmarks/out/bench_train_avx2.json"
    )


def test_a_worker_answers_step_requests_until_quit(monkeypatch, capsys):
    import io
    import json

    calls = []
    monkeypatch.setattr("sys.stdin", io.StringIO("steps a 1 2\nsteps b 2 1\nquit\nsteps a 1 5\n"))
    status = common.answer_step_requests(lambda key: lambda: calls.append(tuple(key)))
    assert status == 0
    assert calls == [("a", "1"), ("a", "1"), ("b", "2")]  # nothing after `quit`
    answers = [
        json.loads(line[len(common.PREFIX) :])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(common.PREFIX)
    ]
    assert [len(a["times"]) for a in answers] == [2, 1]
    assert all(len(a["cpu_times"]) == len(a["times"]) for a in answers)
