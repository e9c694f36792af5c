"""The package list in pyproject.toml is explicit (two folders are mapped into
the dtq package); every folder with Python code must be in it."""

from __future__ import annotations

import tomllib

from tests.support.procs import ROOT


def test_every_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "dtq").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    for mapped, folder in config["package-dir"].items():
        assert (ROOT / folder / "__init__.py").exists(), f"{mapped} -> {folder} has no __init__.py"


def test_console_script_and_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["dtq"] == "dtq.cli.main:main"
    import dtq

    assert dtq.__version__ == project["version"]
