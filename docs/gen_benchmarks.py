"""Generates the Benchmarks pages from `benchmarks/out/*.json` at build time.

One page per benchmark script (`benchmarks/bench_*.py`): the script's own description
(its docstring), then one section per JSON file it wrote, rendered by the script's
`render_markdown(results)` under the command that produced it
(`benchmarks.common.render_file`). The Benchmarks index page gets the list of pages
appended. No figure is copied by hand.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402 - needs the checkout on sys.path


def page_name(script: str) -> str:
    """The generated page of a script: `benchmarks/train.md` for `bench_train`."""
    return f"benchmarks/{script.removeprefix('bench_')}.md"


def main() -> None:
    files: dict[str, list[Path]] = {name: [] for name in common.scripts()}
    for path in sorted((ROOT / "benchmarks" / "out").glob("*.json")):
        files[common.script_of(path, json.loads(path.read_text()))].append(path)
    index_lines = ["", "## Pages", ""]
    for script, paths in files.items():
        module = importlib.import_module(f"benchmarks.{script}")
        title, description = common.describe(module.__doc__ or script)
        lines = [f"# {title}", "", description, ""]
        if not paths:
            lines += [f"Not measured yet: `python -m benchmarks.{script}`.", ""]
        for path in paths:
            command = json.loads(path.read_text()).get("command")
            command = common.display_command(command or f"python -m benchmarks.{script}")
            _, markdown = common.render_file(path)
            lines += [
                f"## `{command}`",
                "",
                f"From `benchmarks/out/{path.name}`.",
                "",
                markdown,
                "",
            ]
        with mkdocs_gen_files.open(page_name(script), "w") as handle:
            handle.write("\n".join(lines))
        index_lines.append(f"- [{title}]({Path(page_name(script)).name})")
    with mkdocs_gen_files.open("benchmarks/index.md", "a") as handle:
        handle.write("\n".join(index_lines) + "\n")


main()
