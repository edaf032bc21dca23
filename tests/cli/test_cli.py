"""The command line: backends it refuses before doing any work, one-line errors."""

from __future__ import annotations

import pytest

from pneumokeras.cli import main


def _run(capsys, monkeypatch, backend, argv):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize("backend", ["torch", "nosuch", "numpy", ""])
def test_unsupported_backends_are_one_line_and_create_nothing(
    capsys, monkeypatch, tmp_path, backend
):
    commands = {
        "train": ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
        "evaluate": [
            "evaluate",
            "--model",
            str(tmp_path / "m.keras"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "eval"),
        ],
        "predict": ["predict", "--model", str(tmp_path / "m.keras"), str(tmp_path)],
        "demo": ["demo", "--out", str(tmp_path / "demo")],
    }
    for name, argv in commands.items():
        code, err = _run(capsys, monkeypatch, backend, argv)
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err
        assert "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax" in err
        assert name in err
        if backend:
            assert f"KERAS_BACKEND={backend}" in err
        else:
            assert "empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
