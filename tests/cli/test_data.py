"""Tests of the `synth` command's options (pneumokeras/cli/data.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pneumokeras import synth
from pneumokeras.cli.main import cli


def _run(*args: str):
    return CliRunner().invoke(cli, ["synth", *args], catch_exceptions=False)


def test_shift_and_single_settings_reach_the_scanner(tmp_path) -> None:
    out = tmp_path / "site"
    args = ["--out", str(out), "--patients", "3", "--size", "64", "--workers", "0"]
    result = _run(*args, "--shift", "--gain", "150:180", "--markers", "0", "--gamma", "2")
    assert result.exit_code == 0, result.output
    scanner = json.loads((out / synth.SETTINGS_JSON).read_text())["scanner"]
    assert scanner["gain"] == [150.0, 180.0]
    assert scanner["markers"] == 0.0
    assert scanner["log_gamma"] == pytest.approx([0.6931, 0.6931], abs=1e-4)
    assert scanner["noise"] == list(synth.SHIFTED_SCANNER.noise)


def test_subgroup_gap_is_recorded(tmp_path) -> None:
    out = tmp_path / "gap"
    args = ["--out", str(out), "--patients", "2", "--size", "64", "--workers", "0"]
    assert _run(*args, "--subgroup-gap", "age=80+:0.3").exit_code == 0
    gap = json.loads((out / synth.SETTINGS_JSON).read_text())["subgroup_gap"]
    assert gap == {"attribute": "age", "value": "80+", "factor": 0.3}


@pytest.mark.parametrize(
    "option, message",
    [
        (["--gain", "a:b"], "LOW:HIGH"),
        (
            ["--gain", "300:200"],
            "Invalid value for '--gain': LOW must not be above HIGH; got '300:200'",
        ),
        (["--gamma", "3:1"], "Invalid value for '--gamma': LOW must not be above HIGH"),
        (["--subgroup-gap", "sex=X"], "no subgroup"),
        (["--markers", "2"], "0<=x<=1"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    tmp_path, capsys, option: list[str], message: str
) -> None:
    from pneumokeras.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["synth", "--out", str(tmp_path / "x"), "--patients", "2", "--size", "64", *option])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "x" / synth.LABELS_CSV).exists()
