"""The command line: backends it refuses before doing any work, one-line errors."""

from __future__ import annotations

import sys

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


@pytest.mark.parametrize(
    "module, backend, argv, extra",
    [
        ("streamlit", "tensorflow", ["app", "--model", "{tmp}"], "app"),
        ("onnxruntime", "tensorflow", ["export", "--model", "{tmp}", "--format", "onnx"], "export"),
        ("jax", "jax", ["predict", "--model", "{tmp}/m.keras", "{tmp}"], "jax"),
        ("jax", "jax", ["train", "--data", "{tmp}/d", "--out", "{tmp}/run"], "jax"),
    ],
)
def test_a_missing_extra_is_named_in_one_line(
    capsys, monkeypatch, tmp_path, module, backend, argv, extra
):
    """Simulates an install without the extra: its module cannot be found."""
    monkeypatch.setitem(sys.modules, module, None)  # find_spec then reports it missing
    code, err = _run(capsys, monkeypatch, backend, [a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"needs the [{extra}] extra ({module}" in err
    assert err.strip().endswith(f"pip install 'pneumokeras[{extra}]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_saved_model_export_needs_no_onnx_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, err = _run(
        capsys, monkeypatch, "tensorflow", ["export", "--model", str(tmp_path / "no.keras"),
                                            "--format", "saved_model"]
    )  # fmt: skip
    assert code == 2
    assert "extra" not in err
    assert "does not exist" in err
