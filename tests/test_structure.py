"""The package's import structure: no cycle among module-level imports, and the capabilities
import each other only where the README's drawing says so."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "data_arch"

#: part -> the parts it may import at module level (the README's Layout drawing).
ALLOWED = {
    "apps": {"checks", "conf", "wiring"},
    "wiring": {"conf", "routing", "tenancy", "partitioning"},
    "routing": {"conf", "schema_backend"},
    "tenancy": {"conf", "schema_backend"},
    "caching": {"conf", "extras", "tenancy"},
    "partitioning": {"conf", "tenancy"},
    "management": {"conf", "caching", "partitioning", "tenancy", "routing", "alerts", "maintenance",
                   "backfills"},
    "backfills": {"conf", "extras"},
    "routers": {"routing"},
    "checks": {"conf"},
    "testing": {"conf"},
    "admin": {"models"},
    "models": {"backfills"},
    "prometheus": {"extras"},
    "tasks": {"extras", "maintenance"},
    "maintenance": {"conf", "models", "signals", "routing", "tenancy", "partitioning", "caching"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are fine
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else "data_arch"


def test_module_level_imports_have_no_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_parts_import_only_what_the_layout_allows():
    unexpected = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _part(module) != _part(target)
        and _part(target) not in ALLOWED.get(_part(module), set())
        and _part(module) != "data_arch"
    )
    assert unexpected == []
