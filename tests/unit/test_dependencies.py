"""Every third-party package the code imports is declared in pyproject.toml.

A package that arrives only as some other package's dependency can disappear with that
package's next release; importing it directly means declaring it. ``app/`` may use only
the runtime dependencies; ``bench/`` and ``tests/`` also the ``dev`` extra.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN_PACKAGES = {"app", "bench", "tests"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: Iterable[str]) -> set[str]:
    """Distribution names of requirement strings (``redis>=5.2,<9`` → ``redis``)."""
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        assert match, f"unreadable requirement {requirement!r}"
        names.add(normalized(match.group(1)))
    return names


def imported_top_levels(folder: str) -> dict[str, set[str]]:
    """Top-level module names imported anywhere under ``folder`` (functions included),
    other than the standard library's and this project's, with the files that import them."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN_PACKAGES:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUNTIME = declared(PROJECT["dependencies"])
DEV = declared(PROJECT["optional-dependencies"]["dev"])


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [("app", RUNTIME), ("bench", RUNTIME | DEV), ("tests", RUNTIME | DEV)],
)
def test_every_imported_package_is_declared(folder, allowed):
    """Each imported top-level module belongs to a distribution declared for that code."""
    providers = packages_distributions()
    undeclared = {}
    for module, files in imported_top_levels(folder).items():
        distributions = {normalized(d) for d in providers.get(module, [])}
        if not distributions & allowed:
            undeclared[module] = (sorted(distributions) or ["not installed"], sorted(files))
    assert undeclared == {}, f"imported in {folder}/ but not declared: {undeclared}"


def test_the_check_sees_imports_inside_functions_and_type_checking_blocks():
    """The scan sees an import made only inside a function (markdown_it, imported when
    ``asyncapi --html`` runs) and leaves out the standard library and the project."""
    found = imported_top_levels("app")
    assert "app/cli/asyncapi_html.py" in found["markdown_it"]
    assert {"faststream", "redis", "groq", "aiohttp"} <= found.keys()
    assert not found.keys() & {"os", "asyncio", "app"}
