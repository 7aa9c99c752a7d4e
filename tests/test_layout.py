"""The tree is the architecture (docs/architecture.md): imports point one way, and the document
shows the tree as it is.

- no import cycle between modules (imports at module level; ``TYPE_CHECKING`` ones aside);
- no cycle between the packages either, leaving out the foundation every layer may import
  (models, settings, constants, errors, signals, the pure rules and the parameter checks): a
  package that imports another is above it, and nothing below reaches back up;
- every package and top-level module is named in docs/architecture.md's tree, and nothing the
  tree names is missing.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "token_exchange"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
FOUNDATION = {
    "models",
    "conf",
    "constants",
    "exceptions",
    "signals",
    "policy",
    "parameters",
    "client_ids",
    "hashers",
    "client_keys",
    "apps",
    "__init__",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def imports(source: str, known: set[str]) -> set[str]:
    """The package's modules ``source`` imports at module level."""
    found: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("token_exchange"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("token_exchange"))
    return found & known


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path.read_text(encoding="utf-8"), set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def group(module: str) -> str:
    """A module's package under token_exchange, or the module itself at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            if group(source) != group(target) and FOUNDATION.isdisjoint({group(source), group(target)}):
                packages[group(source)].add(group(target))
    return packages


def test_no_module_imports_itself_back():
    assert cycles(graph()) == []


def test_packages_import_one_way():
    assert cycles(package_graph(graph())) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles(package_graph({"x.oauth.views": {"x.grant"}, "x.grant": {"x.oauth.server"}})) != []
    assert cycles(package_graph({"x.grant": {"x.models"}, "x.models": {"x.grant"}})) == []  # foundation


def test_the_architecture_document_shows_the_tree():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    tree = text.split("```", 2)[1]
    named = set(re.findall(r"\b([a-z_]+)(?:\.py|/)", tree))
    packages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    top_modules = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    assert packages - named == set(), "packages missing from docs/architecture.md"
    assert top_modules - named == set(), "modules missing from docs/architecture.md"
    stale = named - packages - top_modules - {"token_exchange", "migrations", "templates"}
    assert stale == set(), "docs/architecture.md names what the tree no longer has"
