"""What the package claims about where it runs agrees everywhere it is said, and each CI cell runs
a combination the claim covers: the classifiers and requirements of the installed distribution,
`tox.ini`'s cells, the README's *Supported* line and docs/support.md (`.ci/run` runs every cell).
"""

from __future__ import annotations

import configparser
import re
import sys
from importlib import metadata
from pathlib import Path

import django
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# `make test`'s own .venv: the cell that is not in tox.ini.
MAIN_CELL = {"python": "3.11", "django": "5.2"}
DEPENDENCIES = ("Django", "django-oauth-toolkit", "oauthlib", "jwcrypto", "cryptography")

distribution = metadata.metadata("django-token-exchange")
classifiers = distribution.get_all("Classifier") or []
requirements = {
    Requirement(line).name: Requirement(line)
    for line in distribution.get_all("Requires-Dist") or []
    if "extra ==" not in line
}


def classified(prefix: str) -> set[str]:
    return {c.removeprefix(prefix) for c in classifiers if re.fullmatch(re.escape(prefix) + r"\d+\.\d+", c)}


DJANGO = classified("Framework :: Django :: ")
PYTHON = classified("Programming Language :: Python :: ")


def tox_cells() -> list[dict[str, str]]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    cells = []
    for env in tox["tox"]["env_list"].split():
        python = re.search(r"py3(\d+)", env)
        version = re.search(r"django(\d)(\d+)", env)
        assert python, f"{env}: a cell names its Python"
        assert version, f"{env}: a cell names its Django"
        cells.append({"python": f"3.{python[1]}", "django": f"{version[1]}.{version[2]}", "env": env})
    return cells


def floor_pins() -> dict[str, str]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    pins = re.findall(r"^floor: *([A-Za-z0-9_.-]+)==(\S+)$", tox["testenv"]["deps"], re.MULTILINE)
    return {Requirement(name).name.lower(): version for name, version in pins}


def test_this_cell_runs_a_combination_the_package_claims() -> None:
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in PYTHON
    assert f"{django.VERSION[0]}.{django.VERSION[1]}" in DJANGO
    for name in DEPENDENCIES:
        installed = metadata.version(name)
        assert requirements[name].specifier.contains(installed, prereleases=True), (name, installed)


def test_every_claimed_django_and_python_has_a_cell() -> None:
    cells = [*tox_cells(), MAIN_CELL]
    assert {cell["django"] for cell in cells} == DJANGO
    assert {cell["python"] for cell in cells} == PYTHON
    assert distribution["Requires-Python"] == f">={min(PYTHON, key=Version)}"


def test_the_floor_cell_pins_every_lower_bound() -> None:
    pins = floor_pins()
    for name in DEPENDENCIES:
        (lower,) = [spec.version for spec in requirements[name].specifier if spec.operator == ">="]
        assert Version(pins[name.lower()]) == Version(lower), (
            f"{name}: floor cell {pins[name.lower()]}, claim {lower}"
        )


def test_the_readme_and_docs_say_the_same() -> None:
    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(r"\*\*Supported\*\*.*?(?:\n\n|\Z)", readme, re.DOTALL)
    line = " ".join(line.split())
    python = sorted(PYTHON, key=Version)
    assert f"Python {python[0]}\N{EN DASH}{python[-1]}" in line
    django_versions = sorted(DJANGO, key=Version)
    assert (
        "Django " + ", ".join(django_versions[:-1]).replace("5.2", "5.2 LTS") + f" and {django_versions[-1]}"
        in line
    )
    dot = requirements["django-oauth-toolkit"].specifier
    assert f"django-oauth-toolkit ≥ {_bound(dot, '>=')} and < {_bound(dot, '<')}" in line
    support = (ROOT / "docs" / "support.md").read_text()
    for cell in tox_cells():
        assert f"`{cell['env']}`" in support, f"docs/support.md does not describe {cell['env']}"


def _bound(specifier: object, operator: str) -> str:
    (version,) = [spec.version for spec in specifier if spec.operator == operator]  # type: ignore[attr-defined]
    return version


@pytest.mark.parametrize("name", DEPENDENCIES)
def test_every_dependency_has_a_floor_and_dot_a_ceiling(name: str) -> None:
    operators = {spec.operator for spec in requirements[name].specifier}
    assert ">=" in operators
    if name == "django-oauth-toolkit":
        assert "<" in operators  # validator.py overrides private DOT methods (docs/support.md)
