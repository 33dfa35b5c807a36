"""The contracts between the parts: import boundaries and documented hooks."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from hulumanage import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each file of ``package`` imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("proxy_plugin", "hulumanage"), ("hulumanage", "proxy_plugin")])
def test_plugin_and_host_never_import_each_other(package: str, forbidden: str) -> None:
    offenders = {
        path: sorted(n for n in names if n == forbidden or n.startswith(forbidden + "."))
        for path, names in imported_modules(package).items()
    }
    offenders = {p: n for p, n in offenders.items() if n}
    assert offenders == {}, f"{package} must meet {forbidden} only through the plugin protocol"


def hook_signatures() -> dict[str, str]:
    """name -> 'name(arg, ...)' for every hookspec."""
    specs = {}
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(func, "hulumanage_spec"):
            specs[name] = f"{name}({', '.join(inspect.signature(func).parameters)})"
    return specs


def test_every_hook_has_a_docstring_and_a_readme_section_with_its_exact_signature() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^#### `([a-z_]+\([^)]*\))`$", readme, re.MULTILINE))
    specs = hook_signatures()
    assert {"register_approaches", "add_options", "lifespan", "register_routes"} <= set(specs)
    for name, signature in specs.items():
        assert getattr(hookspecs, name).__doc__, f"hook {name} has no docstring"
        assert signature in documented, f"README has no section '#### `{signature}`'"
