"""No module of ``token_exchange`` but the one adapter imports the private internals of Django, DOT
or oauthlib (issue 19; docs/support.md, "The private names we lean on").

The rule, checked on the source of every module under ``token_exchange/`` (an AST scan, nothing
is imported), for every module except ``ADAPTER`` (``token_exchange/db/orm_internals.py``, which is
enabled only on the Django versions CI tests and compared with the public ORM on each):

(a) no ``from X import _name`` and no ``import``/``from`` of a module path with a ``_private``
    component, where ``X`` is ``django``, ``oauth2_provider`` or ``oauthlib`` or below them
    (``from django.utils.translation import gettext as _`` is fine: the alias is ours);
(b) nothing from the internal modules in ``INTERNAL_MODULES`` (the SQL compiler and query, the
    PostgreSQL insert compiler; ``django.db.models.query``, whose ``ModelIterable`` and
    ``get_related_populators`` are how a queryset builds rows — ``QuerySet`` itself comes from
    ``django.db.models``).

Allowed explicitly: imports inside an ``if TYPE_CHECKING:`` block from the modules of (b), for
annotations only (``SQLCompiler`` in a signature costs nothing at run time, and mypy runs on the
matrix); ``django.db.backends.base.base.BaseDatabaseWrapper`` is no internal module and is
allowed anywhere. An underscore name stays banned even under ``TYPE_CHECKING``. Modules loaded
with ``importlib`` are not seen: don't.

Besides the rule, ``private_attribute_report()`` lists (does not fail on) what an import scan
cannot see: ``obj._name`` accesses to names this package does not define itself (other than
Django's documented ``_meta``, ``_state``, ``_default_manager``, ``_base_manager`` and dunders),
and our classes' overrides of a third-party class's ``_private`` method. Print it with
``python -m tests.test_private_imports`` or ``pytest -s -k report``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "token_exchange"
ADAPTER = PACKAGE / "db" / "orm_internals.py"
THIRD_PARTY = ("django", "oauth2_provider", "oauthlib")
INTERNAL_MODULES = (
    "django.db.models.sql",  # and below: query, compiler, where, datastructures…
    "django.db.models.query",  # ModelIterable, RelatedPopulator, get_related_populators
    "django.db.backends.postgresql.compiler",  # the UNNEST bulk insert
)
DOCUMENTED_PRIVATE = {"_meta", "_state", "_default_manager", "_base_manager"}


def _is_third_party(module: str) -> bool:
    return module.split(".")[0] in THIRD_PARTY


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_internal(module: str) -> bool:
    return any(module == banned or module.startswith(banned + ".") for banned in INTERNAL_MODULES)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """The line numbers of statements inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = (
                test.id
                if isinstance(test, ast.Name)
                else test.attr
                if isinstance(test, ast.Attribute)
                else ""
            )
            if name == "TYPE_CHECKING":
                for statement in node.body:
                    lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def banned_imports(source: str, filename: str = "<snippet>") -> list[str]:
    """The imports of ``source`` the rule above forbids, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    typing_only = _type_checking_lines(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        imported: list[tuple[str, str | None]] = []  # (module, name or None for the module itself)
        if isinstance(node, ast.Import):
            imported = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported = [(node.module, alias.name) for alias in node.names]
        for module, name in imported:
            if not _is_third_party(module):
                continue
            where = f"{filename}:{node.lineno}"
            what = f"{module}.{name}" if name else module
            if any(_is_private(part) for part in module.split(".")) or (name and _is_private(name)):
                found.append(f"{where}: private name {what}")
            elif (_is_internal(module) or (name and _is_internal(f"{module}.{name}"))) and (
                node.lineno not in typing_only
            ):
                found.append(f"{where}: internal module {what}")
    return found


def package_modules() -> Iterator[Path]:
    yield from sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)


def test_no_module_but_the_adapter_imports_private_internals() -> None:
    found = [
        problem
        for path in package_modules()
        if path != ADAPTER
        for problem in banned_imports(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    ]
    assert not found, (
        "Move these into token_exchange/db/orm_internals.py (or use a public API):\n" + "\n".join(found)
    )


def test_the_adapter_exists_and_is_where_the_internals_are() -> None:
    assert banned_imports(ADAPTER.read_text(encoding="utf-8")), "the adapter imports no internal: drop it"


@pytest.mark.parametrize(
    "snippet",
    [
        "from django.db.models.query import get_related_populators",
        "from django.db.models.query import ModelIterable",
        "from django.db.models.sql.compiler import SQLCompiler",
        "from django.db.models.sql import Query",
        "import django.db.models.sql.compiler",
        "from django.db.models import sql",
        "from django.db.backends.postgresql.compiler import InsertUnnest",
        "from django.db.models.query import _get_from_db",
        "from oauth2_provider.oauth2_validators import _private",
        "from oauthlib.oauth2.rfc6749 import _helper as helper",
        "from django.utils._os import safe_join",
        "import oauthlib._internal",
        "if TYPE_CHECKING:\n    from django.db.models.query import _get_from_db",
        "def f():\n    from django.db.models.query import get_related_populators",
    ],
)
def test_the_checker_catches_a_banned_import(snippet: str) -> None:
    assert banned_imports(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "from django.utils.translation import gettext_lazy as _",
        "from django.db.models import Model, Q, QuerySet",
        "from django.db.backends.base.base import BaseDatabaseWrapper",
        "if TYPE_CHECKING:\n    from django.db.models.sql.compiler import SQLCompiler",
        "if typing.TYPE_CHECKING:\n    from django.db.models.query import ModelIterable",
        "from .lookups import _private_of_ours",
        "from token_exchange.db.lookups import PreparedLookup",
        "import jwt",
    ],
)
def test_the_checker_lets_public_and_our_own_names_through(snippet: str) -> None:
    assert not banned_imports(snippet), snippet


# The report: what the import rule cannot see.


def _own_private_names() -> set[str]:
    """Underscore names this package defines: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for path in package_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return {name for name in names if _is_private(name)}


def private_attribute_report() -> list[str]:
    """``obj._name`` on objects that are not ours, and our overrides of third-party private
    methods, outside the adapter: for the lead's list, not a failure."""
    own = _own_private_names()
    report: list[str] = []
    for path in package_modules():
        if path == ADAPTER:
            continue
        relative = path.relative_to(PACKAGE.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and node.attr not in DOCUMENTED_PRIVATE
                and node.attr not in own
            ):
                report.append(f"{relative}:{node.lineno}: {ast.unparse(node)}")
    for info in pkgutil.walk_packages([str(PACKAGE)], "token_exchange."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            for name in vars(cls):
                if not _is_private(name) or name in DOCUMENTED_PRIVATE:
                    continue
                for base in cls.__mro__[1:]:
                    if _is_third_party(base.__module__) and name in vars(base):
                        theirs = f"{base.__module__}.{base.__qualname__}"
                        report.append(f"{info.name}.{cls.__qualname__}.{name} overrides {theirs}")
                        break
    return report


@pytest.mark.django_db
def test_report_private_attributes_of_third_party_objects() -> None:
    """Shown with ``pytest -s``; docs/support.md lists what remains."""
    report = private_attribute_report()
    print(f"\n{len(report)} private attribute uses outside the adapter (reported, not failed):")
    for line in report:
        print("  " + line)


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    django.setup()
    print("\n".join(private_attribute_report()))
