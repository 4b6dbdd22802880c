"""The package's layer rule, read from the source with `ast` (nothing is imported).

Layers, bottom-up: errors -> plugins -> config -> models -> methods -> data -> training -> results ->
search -> selection -> cli. A module may import its own layer and the layers below it, never
one above; the import graph has no cycle; the Ray-free core never imports Ray, Optuna or
MLflow, and `results` never imports Ray. A function-local import of a skd_ray module must say
why beside it (`# local: ...`): the only accepted reason is keeping Ray out of a process that
must not load it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skd_ray"
LAYERS = ["errors", "plugins", "config", "models", "methods", "data", "training", "results", "search", "selection",
          "cli", "api"]
ENTRY_POINTS = {"skd_ray", "skd_ray.__main__"}
FORBIDDEN = {layer: {"ray", "optuna", "mlflow"} for layer in ("errors", "plugins", "config", "models", "methods",
                                                               "data", "training")}
FORBIDDEN["results"] = {"ray"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    if module in ENTRY_POINTS:
        return None
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, is function-local, source line) for every import in `path`."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    found: list[tuple[str, int, bool, str]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, child.lineno, local, lines[child.lineno - 1]))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module == "skd_ray":
                    for alias in child.names:
                        found.append((f"skd_ray.{alias.name}", child.lineno, local, lines[child.lineno - 1]))
                else:
                    found.append((child.module, child.lineno, local, lines[child.lineno - 1]))
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def owning_module(imported: str) -> str | None:
    """The skd_ray module (or package) an import statement names."""
    while imported and imported not in MODULES:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_every_module_sits_in_a_layer() -> None:
    stray = [m for m in MODULES if m not in ENTRY_POINTS and layer_of(m) not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_core_stays_free_of_ray(module: str) -> None:
    layer = layer_of(module)
    problems = []
    for imported, line, local, text in imports_of(MODULES[module]):
        top = imported.split(".")[0]
        if layer is not None and top in FORBIDDEN.get(layer, set()):
            problems.append(f"line {line}: the {layer} layer imports {imported}")
        if top != "skd_ray":
            continue
        target = owning_module(imported)
        target_layer = layer_of(target) if target else None
        if layer is not None and target_layer is not None and LAYERS.index(target_layer) > LAYERS.index(layer):
            problems.append(f"line {line}: {layer} imports {imported} from the higher layer {target_layer}")
        if local and "# local:" not in text:
            problems.append(f"line {line}: function-local import of {imported} without a `# local:` reason")
    assert not problems, f"{module}:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for imported, *_ in imports_of(path):
            target = owning_module(imported) if imported.startswith("skd_ray") else None
            if target and target != module:
                graph[module].add(target)
    # A package's __init__ that re-exports its own submodules is not a cycle with them.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in seen:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        seen[node] = 2
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in seen:
            cycle = walk(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)
