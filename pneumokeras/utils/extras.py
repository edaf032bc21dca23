"""Optional parts of the installation (`pip install 'pneumokeras[EXTRA]'`).

The core install converts, trains, evaluates, predicts and explains under
TensorFlow. A command that needs more checks for it before it starts, so a missing
extra is one clear line (exit 2) rather than an `ImportError` deep inside.
"""

from __future__ import annotations

import importlib.util

from pneumokeras.errors import UserError

# extra → the modules it provides (the names in pyproject.toml's optional-dependencies).
EXTRAS: dict[str, tuple[str, ...]] = {
    "app": ("streamlit",),
    "export": ("tf2onnx", "onnx", "onnxruntime"),
    "jax": ("jax",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    missing = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent that fails, or a broken entry
            found = False
        if not found:
            missing.append(module)
    return missing


def require(extra: str, what: str) -> None:
    """Raises UserError naming the extra to install when `extra` is not installed.

    Args:
        extra: a key of `EXTRAS`.
        what: what needs it, for the message (`the app`, `KERAS_BACKEND=jax`).
    """
    missing = missing_modules(extra)
    if missing:
        raise UserError(
            f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'pneumokeras[{extra}]'"
        )
