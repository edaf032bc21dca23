"""Generates the API reference pages (one per module, mkdocstrings) at build time."""

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pneumokeras"

modules = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if path.name not in ("__init__.py", "__main__.py") and "app" not in path.parts[-2:-1]
)
index_lines = ["# API reference", "", "One page per module, from its docstrings.", ""]
for path in modules:
    dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    page = Path("reference", "api", *path.relative_to(PACKAGE).with_suffix(".md").parts)
    with mkdocs_gen_files.open(page, "w") as handle:
        handle.write(f"# `{dotted}`\n\n::: {dotted}\n")
    index_lines.append(f"- [`{dotted}`]({page.relative_to('reference/api').as_posix()})")
with mkdocs_gen_files.open("reference/api/index.md", "w") as handle:
    handle.write("\n".join(index_lines) + "\n")
