"""Options and helpers shared by the commands: one definition of each repeated option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

WORKERS_HELP = "Processes (default: all cores; 0 = in-process)."
MODEL_HELP = "model.keras, ensemble.keras or the run folder holding it."


def example(*lines: str) -> str:
    """A command epilog: 'Example:' and the invocation, kept verbatim by click."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def model_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--model PATH` (required), passed as `model_path`."""
    return click.option("--model", "model_path", required=True, type=click.Path(), help=MODEL_HELP)(
        func
    )


def data_option(
    help_text: str = "Converted folder (cli.py convert).", required: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--data DIR`, passed as `data_dir`."""
    return click.option(
        "--data", "data_dir", required=required, type=click.Path(), default=None, help=help_text
    )


def out_dir_option(
    help_text: str, name: str = "out_dir"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--out DIR` (required), a folder, passed as `name`."""
    return click.option(
        "--out", name, required=True, type=click.Path(file_okay=False), help=help_text
    )


def workers_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--workers N`: the same meaning for every command that has it."""
    return click.option("--workers", type=int, default=None, help=WORKERS_HELP)(func)


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--config FILE` and repeated `--set section.key=value`."""
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one setting (repeatable), e.g. --set train.epochs=3.",
    )(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML settings file, or the name of a preset (demo, rsna: configs/*.yaml).",
    )(func)


def load_config(config_path: str | None, overrides: tuple[str, ...]) -> Any:
    """The validated settings (`config.load_config`)."""
    from pneumokeras.config import load_config as load

    return load(config_path, overrides)


def setting_given(config_path: str | None, overrides: tuple[str, ...], dotted: str) -> bool:
    """Whether the user set `section.key` (`--set`, or in the `--config` file).

    Called after `load_config` accepted both, so the file is readable YAML.
    """
    from pneumokeras.config import parse_override

    section, key = dotted.split(".")
    if any(parse_override(text)[:2] == (section, key) for text in overrides):
        return True
    if config_path is None:
        return False
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    return isinstance(raw.get(section), dict) and key in raw[section]


def debugging() -> bool:
    """Whether `--debug` was given (the group's context object)."""
    context = click.get_current_context(silent=True)
    while context is not None and context.parent is not None:
        context = context.parent
    return bool(context and context.obj and context.obj.get("debug"))


def import_tensorflow() -> None:
    """Imports TensorFlow, its start-up lines hidden unless `--debug` was given."""
    from pneumokeras.utils import environment

    environment.import_tensorflow_quietly(keep_output=debugging())
