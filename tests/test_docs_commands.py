"""The README's command blocks run as written, on a tiny synthetic RSNA folder.

Every `bash` block of README.md is read; each command is either run (the
`python cli.py …` lines, in a folder holding `rsna/` from `synth` and the
checkout's `configs/`) or on a short list of commands other tests cover (make,
pip: tests/test_packaging.py). Only speed settings are appended (`SPEED`): one
epoch of a thin network, few bootstrap resamples, two heatmaps. The documentation
site repeats the README's RSNA block word for word (checked here too).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Pages that show the README's RSNA block too.
PAGES_WITH_THE_RSNA_BLOCK = (ROOT / "docs" / "getting-started" / "index.md",)
# Commands covered elsewhere (installation: tests/test_packaging.py; the suite itself).
NOT_RUN_HERE = {
    "make demo",
    "make test",
    "pip install .",
    "pip install '.[app,export,jax]'",
    "pneumokeras --version",
}
# Appended per command: settings that change only how long it takes.
SPEED = {
    "train": [
        "--set", "train.epochs=1", "--set", "model.filters=8", "--set", "data.batch_size=4",
        "--set", "data.shuffle_buffer=16", "--set", "evaluate.bootstrap=20",
    ],
    "evaluate": ["--set", "evaluate.bootstrap=20"],
    "explain": ["--limit", "2"],
}  # fmt: skip


def bash_blocks(markdown: str) -> list[str]:
    """The text of every ```bash block."""
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def commands(block: str) -> list[str]:
    """The commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    lines = (line.split(" #")[0].strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_commands_are_read_from_blocks():
    block = "python cli.py a \\\n  --b c   # note\n# comment\n\nmake x\n"
    assert commands(block) == ["python cli.py a --b c", "make x"]
    assert bash_blocks("x\n```bash\nls\n```\n```text\nno\n```") == ["ls\n"]


def test_the_site_shows_the_readmes_rsna_block():
    rsna = [b for b in bash_blocks(README.read_text()) if "rsna/stage_2_train_images" in b]
    assert len(rsna) == 1
    for page in PAGES_WITH_THE_RSNA_BLOCK:
        shown = [b for b in bash_blocks(page.read_text()) if "rsna/stage_2_train_images" in b]
        assert shown == rsna, f"{page.relative_to(ROOT)} differs from the README's RSNA block"


def _as_run(command: str, cli: Path) -> tuple[dict[str, str], list[str]]:
    """(environment additions, argv) of a README command, with the speed settings."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[:2] == ["python", "cli.py"], command
    name = next(w for w in words[2:] if not w.startswith("-"))
    return env, [sys.executable, str(cli), *words[2:], *SPEED.get(name, [])]


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    from pneumokeras.synth import generate

    run_here = [
        c
        for block in bash_blocks(README.read_text())
        for c in commands(block)
        if c not in NOT_RUN_HERE
    ]
    names = [shlex.split(c)[shlex.split(c).index("cli.py") + 1] for c in run_here]
    assert names == ["convert", "train", "evaluate", "explain"]  # the RSNA walk-through
    generate(tmp_path / "rsna", patients=40, size=256, seed=3, workers=0, progress=False)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for command in run_here:
        extra, argv = _as_run(command, ROOT / "cli.py")
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env={**os.environ, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "rsna" / "model.keras").is_file()
    assert (tmp_path / "runs" / "rsna" / "eval" / "metrics.json").is_file()
    assert list((tmp_path / "runs" / "rsna" / "explain").glob("*.png"))
