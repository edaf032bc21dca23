"""Tests for pneumokeras.app.server and the `app` command: which model, which address."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from pneumokeras.app import server
from pneumokeras.errors import UserError


def test_server_command(tmp_path, classifier):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    argv, env = server.server_command(
        classifier.path, data, "127.0.0.1", 8600, 20, {"KERAS_BACKEND": "jax", "PATH": "/bin"}
    )
    assert argv[:3] == [sys.executable, "-m", "pneumokeras.app.server"]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--server.address": "127.0.0.1",
        "--server.port": "8600",
        "--server.maxUploadSize": "20",
        "--server.headless": "true",
        "--server.fileWatcherType": "none",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "viewer",
    }
    assert env["KERAS_BACKEND"] == "tensorflow"
    assert env["PATH"] == "/bin"
    assert env[server.MODEL_VARIABLE] == str(classifier.path)
    assert env[server.DATA_VARIABLE] == str(data.resolve())
    assert env[server.UPLOAD_LIMIT_VARIABLE] == "20"
    assert server.upload_limit_mb(env) == 20
    assert server.upload_limit_mb({}) == server.DEFAULT_UPLOAD_LIMIT_MB


def test_server_command_refuses_bad_arguments(tmp_path, classifier):
    with pytest.raises(UserError, match=r"has no manifest.json"):
        server.server_command(classifier.path, tmp_path, "127.0.0.1", 8501, 100, {})
    with pytest.raises(UserError, match="--port"):
        server.server_command(classifier.path, None, "127.0.0.1", 0, 100, {})
    with pytest.raises(UserError, match="--max-upload-mb"):
        server.server_command(classifier.path, None, "127.0.0.1", 8501, 0, {})


def test_the_model_comes_from_the_option_then_the_environment(tmp_path, classifier, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = classifier.path.parent
    env = {server.MODEL_VARIABLE: str(run)}
    assert server.resolve_model(None, env) == classifier.path.resolve()
    assert server.resolve_model(classifier.path, {server.MODEL_VARIABLE: "nowhere"}) == (
        classifier.path.resolve()
    )
    with pytest.raises(UserError, match=r"^PNEUMOKERAS_MODEL: model nowhere does not exist$"):
        server.resolve_model(None, {server.MODEL_VARIABLE: "nowhere"})
    with pytest.raises(UserError, match="run `make demo` first"):
        server.resolve_model(None, {})


def _serve(argv, monkeypatch, capsys):
    """`cli.py app ARGV` with the server start intercepted: (exit code, stderr, execve args)."""
    from pneumokeras.cli import main

    started = []

    def execve(program, args, env):
        started.append((program, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    with pytest.raises(SystemExit) as done:
        main(["app", *argv])
    return done.value.code, capsys.readouterr().err, started


def test_cli_app_serves_the_model_it_names(classifier, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv(server.MODEL_VARIABLE, str(classifier.path.parent))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, err, started = _serve(["--port", str(port)], monkeypatch, capsys)
    assert code == 0
    assert err.strip().splitlines()[-1] == (
        f"serving {classifier.path.resolve()} at http://127.0.0.1:{port} (Ctrl+C stops it); "
        "research use only"
    )
    ((_, args, env),) = started
    assert args[1:3] == ["-m", "pneumokeras.app.server"]
    assert env[server.MODEL_VARIABLE] == str(classifier.path.resolve())


def test_cli_app_errors_are_one_line_before_serving(classifier, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(server.MODEL_VARIABLE, raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for argv, message in (
            ([], "run `make demo` first"),
            (["--model", str(tmp_path / "x.keras")], "does not exist"),
            (
                ["--model", str(classifier.path), "--port", str(port)],
                f"127.0.0.1:{port} is in use; choose another --port",
            ),
        ):
            code, err, started = _serve(argv, monkeypatch, capsys)
            assert code == 2
            assert len(err.strip().splitlines()) == 1, err
            assert message in err
            assert "serving" not in err
            assert not started
