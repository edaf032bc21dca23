"""Shared test fixtures: paths to the optional real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_file():
    """Returns a path in ../shared/data, skipping the test when it is absent."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_file():
            pytest.skip(f"real data file {name} not available (../shared/data)")
        return path

    return get
