"""The contracts between the parts: import boundaries, no import cycles, and documented hooks."""

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


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` test is ``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The imports run when a module is imported: module level, inside if/try/with, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            found += _import_time_statements(node.orelse)
            if not _is_type_checking(node.test):
                found += _import_time_statements(node.body)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                found += _import_time_statements(block)
        elif isinstance(node, ast.With):
            found += _import_time_statements(node.body)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports at import time (relative imports resolved)."""
    files = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: set[str] = set()
        for node in _import_time_statements(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
                continue
            if node.level:  # relative: `from . import x` in pkg/mod.py or pkg/__init__.py is pkg.x
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            edges.add(base)
            edges.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None if the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        """Depth-first search from ``node``; return a cycle through the current path, if any."""
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycle_among_plugin_modules() -> None:
    graph = import_graph(ROOT, "proxy_plugin")
    assert "proxy_plugin.routing.registry" in graph["proxy_plugin.config.checks"]  # the graph sees real edges
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_config_does_not_import_provider() -> None:
    graph = import_graph(ROOT, "proxy_plugin")
    seen, todo = set(), ["proxy_plugin.config"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    assert "proxy_plugin.routing.registry" in seen
    assert "proxy_plugin.provider" not in seen, "config must reach routing's names without importing provider.py"


def test_the_cycle_check_finds_a_cycle_and_ignores_type_checking_and_function_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (pkg / "a.py").write_text("from pkg.sub import leaf\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    (pkg / "sub" / "leaf.py").write_text("try:\n    from ..a import x\nexcept ImportError:\n    pass\n")
    cycle = find_cycle(import_graph(tmp_path, "pkg"))
    assert cycle is not None and cycle[0] == cycle[-1] and {"pkg.a", "pkg.sub.leaf"} <= set(cycle)


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


#: The small copies each side keeps deliberately (docs/internals.md, "Deliberate copies"): the
#: plugin must load into any host that speaks the protocol, so host and plugin share no code.
#: what -> ((host file, host name), (plugin file, plugin name))
COPIES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "error with a status": (("hulumanage/errors.py", "ApiError"), ("proxy_plugin/errors.py", "ProxyError")),
    "OpenAI error body": (("hulumanage/errors.py", "error_payload"), ("proxy_plugin/wrap.py", "_payload")),
    "in-process SDK transport": (("hulumanage/transport.py", "ApproachTransport"), ("proxy_plugin/wrap.py", "PoolTransport")),
    "its streamed body": (("hulumanage/transport.py", "_Body"), ("proxy_plugin/wrap.py", "_SSEBody")),
    "fields never sent upstream": (("hulumanage/transport.py", "HOST_FIELDS"), ("proxy_plugin/wrap.py", "HOST_FIELDS")),
    "raw response": (("hulumanage/call.py", "RawResponse"), ("proxy_plugin/buffered.py", "RawResponse")),
    "the [DONE] event": (("hulumanage/results.py", "DONE"), ("proxy_plugin/sse.py", "DONE_EVENT")),
    "the admin rule": (("hulumanage/admin.py", "refusal"), ("proxy_plugin/admin.py", "admin_refusal")),
}
#: A copy longer than this is no longer small: share it through the protocol instead.
MAX_COPY_LINES = 40
#: Names defined on both sides that are not copies of one another.
SAME_NAME_NOT_A_COPY = frozenset({"_json"})


def top_level(path: Path) -> dict[str, ast.stmt]:
    """Name -> statement of every top-level class, function and assignment of ``path``."""
    found: dict[str, ast.stmt] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            found.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
    return found


@pytest.mark.parametrize("what", sorted(COPIES))
def test_each_deliberate_copy_exists_on_both_sides_and_stays_small(what: str) -> None:
    for path, name in COPIES[what]:
        node = top_level(ROOT / path).get(name)
        assert node is not None, f"{path} no longer defines {name} ({what}): update COPIES and docs/internals.md"
        size = (node.end_lineno or node.lineno) - node.lineno + 1
        assert size <= MAX_COPY_LINES, (
            f"{path}: {name} ({what}) is {size} lines, past {MAX_COPY_LINES}: the copy is no longer small")
    internals = (ROOT / "docs" / "internals.md").read_text()
    for path, name in COPIES[what]:
        assert f"`{name}`" in internals and f"`{path}`" in internals, f"docs/internals.md does not list {path} {name}"


def test_no_other_class_or_function_is_defined_on_both_sides() -> None:
    hooks = set(hook_signatures()) | {"hookimpl"}
    copies = {name for pair in COPIES.values() for _path, name in pair}

    def names(package: str) -> set[str]:
        return {
            name
            for path in (ROOT / package).rglob("*.py")
            for name, node in top_level(path).items()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }

    both = (names("hulumanage") & names("proxy_plugin")) - hooks - copies - SAME_NAME_NOT_A_COPY
    assert both == set(), f"defined in both packages: {sorted(both)}; a deliberate copy goes into COPIES and docs/internals.md"


def test_no_test_module_imports_another_or_the_conftest() -> None:
    """Shared test code lives in ``tests/support``; test modules and ``conftest.py`` are never imported."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                first = name.split(".")[0]
                if first == "conftest" or first.startswith("test_"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == [], "move shared test code into tests/support:\n" + "\n".join(offenders)


def test_no_module_is_over_400_lines() -> None:
    """One concern a module: a module past 400 lines holds more than one (split it)."""
    long = {str(p.relative_to(ROOT)): n for pkg in ("hulumanage", "proxy_plugin") for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
