import sys

import pytest

from pneumokeras.errors import UserError
from pneumokeras.utils import extras


def test_installed_extras_pass(monkeypatch):
    # The full set (requirements.txt) is installed where the tests run.
    for extra in extras.EXTRAS:
        assert extras.missing_modules(extra) == []
        extras.require(extra, "this")


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_a_missing_module_names_its_extra_in_one_line(monkeypatch, extra):
    module = extras.EXTRAS[extra][-1]
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert extras.missing_modules(extra) == [module]
    with pytest.raises(UserError) as error:
        extras.require(extra, "the thing")
    message = str(error.value)
    assert "\n" not in message
    assert message == (
        f"the thing needs the [{extra}] extra ({module} not installed): "
        f"pip install 'pneumokeras[{extra}]'"
    )


def test_every_extra_is_declared_in_pyproject():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]
    for extra, modules in extras.EXTRAS.items():
        names = " ".join(declared[extra]).replace("-", "_").lower()
        for module in modules:
            assert module in names, (extra, module)
