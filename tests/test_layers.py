"""The layers contract (pyproject.toml, checked by lint-imports in `make lint`) covers every
package and module, and an import that runs upward breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contracts() -> list[dict[str, object]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        found: list[dict[str, object]] = tomllib.load(file)["tool"]["importlinter"]["contracts"]
    return found


def layered(container: str = "") -> set[str]:
    """Every name the layers contract of ``container`` (or the top one) places in a layer."""
    containers = [container] if container else []
    for contract in contracts():
        if contract["type"] == "layers" and contract.get("containers", []) == containers:
            layers = contract["layers"]
            assert isinstance(layers, list)
            return {name.strip() for layer in layers for name in layer.split("|")}
    raise AssertionError(f"no layers contract for {container or 'the top level'}")


def children(package: Path) -> set[str]:
    """The sub-packages and modules directly inside ``package``."""
    return {
        path.stem if path.suffix == ".py" else path.name
        for path in package.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }


def test_every_package_of_the_app_has_a_layer():
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").exists() and path.name not in {"tests", "migrations", "bench"}
    }
    assert layered() == packages


@pytest.mark.parametrize("container", ["distribution", "core"])
def test_every_part_of_a_layered_package_has_a_layer(container):
    assert layered(container) == children(ROOT / container)


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "tree"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(".venv", ".git", "instance", "node_modules", "*.png"),
    )
    assert subprocess.run([LINT_IMPORTS], cwd=copy, capture_output=True).returncode == 0
    with (copy / "core" / "settings.py").open("a") as file:
        file.write("\nimport accounts.models  # noqa\n")

    broken = subprocess.run([LINT_IMPORTS], cwd=copy, capture_output=True, text=True)

    assert broken.returncode != 0
    assert "core is not allowed to import accounts" in broken.stdout
