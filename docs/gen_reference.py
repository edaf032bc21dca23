"""Generates reference pages at build time: the settings (from pneumokeras/config.py) and
the API (one page per module, mkdocstrings). Nothing here is copied by hand."""

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import mkdocs_gen_files

from pneumokeras import config as config_module

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


# ---------------------------------------------------------------- settings


def _attribute_docs(cls: type) -> dict[str, str]:
    """`name: text` entries of a dataclass docstring's `Attributes:` section, joined."""
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    entries: dict[str, str] = {}
    current = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2).strip()
        elif current and line.startswith("        "):
            entries[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return entries


def _type_name(annotation: object) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return f"`{name}`"


def _settings_page() -> str:
    lines = [
        "# Settings",
        "",
        "One schema (`pneumokeras/config.py`, frozen dataclasses) with the sections below;",
        "every command that takes settings accepts `--config FILE` (YAML, one mapping per",
        "section) and repeated `--set section.key=value`. An unknown key or a wrong type",
        "stops with one line naming the key:",
        "",
        "```",
        "$ python cli.py train --data T --out R --set no.such_key=1",
        "error: unknown setting 'no.such_key': no section 'no' (known: data, augment, model, "
        "train, evaluate, explain)",
        "```",
        "",
        "This page is generated from the schema.",
        "",
        "Presets: `configs/rsna.yaml` (the seed recipe for real RSNA data, 224 px) and",
        "`configs/demo.yaml` (the CPU demo, 128 px).",
        "",
    ]
    defaults = config_module.Config()
    hints = typing.get_type_hints(config_module.Config)
    for section in dataclasses.fields(config_module.Config):
        cls = hints[section.name]
        lines += [f"## `{section.name}`", "", (inspect.getdoc(cls) or "").split("\n")[0], ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        docs = _attribute_docs(cls)
        field_hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            value = getattr(getattr(defaults, section.name), field.name)
            shown = "`''`" if value == "" else f"`{value}`"
            meaning = docs.get(field.name, "").replace("|", "\\|")
            lines.append(
                f"| `{section.name}.{field.name}` | {_type_name(field_hints[field.name])} "
                f"| {shown} | {meaning} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


with mkdocs_gen_files.open("reference/settings.md", "w") as handle:
    handle.write(_settings_page())


# ---------------------------------------------------------------- layers


def _layers_page() -> str:
    """The import contract's layers (pyproject.toml) as a diagram and a module table."""
    import ast
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = project["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    lines = [
        "# Layers and modules",
        "",
        "Generated from the import contract in `pyproject.toml` (checked by `lint-imports` in",
        "`make test`) and from each module's docstring. Top to bottom: a layer may import",
        "the layers below it, never one above; names on one row do not import each other.",
        "",
        "```",
    ]
    rows = [[name.strip() for name in row.split("|")] for row in layers]
    labels = ["   ".join(name.removeprefix("pneumokeras.") for name in row) for row in rows]
    width = max(len(label) for label in labels) + 4
    for index, label in enumerate(labels):
        lines.append("┌" + "─" * width + "┐")
        lines.append("│" + label.center(width) + "│")
        lines.append("└" + "─" * width + "┘")
        if index < len(labels) - 1:
            lines.append(" " * (width // 2) + "▼ imports")
    lines += ["```", "", "| layer | module | what it is |", "|---|---|---|"]
    for row in rows:
        for name in row:
            relative = Path(*name.split(".")[1:])
            folder = PACKAGE / relative
            files = sorted(folder.glob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
            for path in files:
                if path.name == "__init__.py" and len(files) > 1:
                    continue
                tree = ast.parse(path.read_text())
                summary = (ast.get_docstring(tree) or "").split("\n")[0].replace("|", "\\|")
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                lines.append(f"| `{name.removeprefix('pneumokeras.')}` | `{module}` | {summary} |")
    return "\n".join(lines) + "\n"


with mkdocs_gen_files.open("development/layers.md", "w") as handle:
    handle.write(_layers_page())
