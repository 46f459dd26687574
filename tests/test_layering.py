"""The package's import structure: no cycles, lower layers never import higher ones, and
inference never imports the training loop (docs/design.md, "Layers").

Imports are read from the source with ``ast`` (module-level and function-level alike, so an
import moved into a function to dodge a cycle still counts); nothing is imported.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Iterable

PACKAGE = "spinconv_train"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)

# Layer of each top-level part of the package (a module imports only its layer and below).
LAYERS: dict[str, int] = {
    "": 0, "config": 0, "config_ocp": 0, "registry": 0, "atomic_files": 0, "distributed": 0, "tables": 0,
    "graph": 1,
    "models": 2, "datasets": 2, "loggers": 2, "rundir": 2, "plots": 2,
    "tasks": 3,
    "checkpoints": 4,
    "calculators": 5, "relaxation": 5, "md": 5, "ocp": 5,
    "training": 6,
    "launch": 7, "commands": 7, "benchmarks": 7, "results": 7,
}
TRAINING = "training"
# Inference paths: none of them may reach the training loop, directly or through others.
INFERENCE = ("checkpoints", "calculators", "relaxation", "md", "commands.evaluate_structures",
             "commands.export_model", "commands.inspect_checkpoint", "commands.run_md", "ocp", "commands.import_ocp")


def package_modules(root: str) -> dict[str, str]:
    """``{dotted module name: file}`` of every ``.py`` file under ``root`` (packages as their name)."""
    modules = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(root))[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            modules[".".join(rel)] = os.path.join(folder, name)
    return modules


def imports_of(module: str, path: str, known: set[str]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its file (``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``)."""
    is_package = path.endswith("__init__.py")
    found: set[str] = set()
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c` of a package: its longest known prefix
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: str = ROOT) -> dict[str, set[str]]:
    modules = package_modules(root)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def part(module: str) -> str:
    """The top-level part of a module name (``""`` for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ""


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a higher layer, and every part without a layer."""
    problems = sorted({f"{part(m)!r} (in {m}) has no layer in LAYERS" for m in graph if part(m) not in LAYERS})
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if part(module) in LAYERS and part(target) in LAYERS and LAYERS[part(target)] > LAYERS[part(module)]:
                problems.append(f"{module} (layer {LAYERS[part(module)]}) imports {target} "
                                f"(layer {LAYERS[part(target)]})")
    return problems


def reachable(graph: dict[str, set[str]], starts: Iterable[str]) -> dict[str, str]:
    """Every module reachable from ``starts``, with the module it was first reached from."""
    seen: dict[str, str] = {s: "" for s in starts}
    todo = list(seen)
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen[nxt] = node
                todo.append(nxt)
    return seen


def training_reached_by_inference(graph: dict[str, set[str]]) -> list[str]:
    """``chain`` of imports from an inference module to the training loop, one per start."""
    problems = []
    for start in sorted(m for m in graph if any(m == f"{PACKAGE}.{p}" or m.startswith(f"{PACKAGE}.{p}.")
                                                for p in INFERENCE)):
        seen = reachable(graph, [start])
        hits = sorted(m for m in seen if part(m) == TRAINING or part(m) in ("trainers",))
        if hits:
            chain, node = [hits[0]], hits[0]
            while seen[node]:
                node = seen[node]
                chain.append(node)
            problems.append(" -> ".join(reversed(chain)))
    return problems


def test_the_walk_sees_function_level_and_relative_imports():
    graph = import_graph()
    # function-level: the command line imports the loop inside its mode functions
    assert f"{PACKAGE}.training.loop" in graph[f"{PACKAGE}.launch.cli"]
    # relative: the calculators package re-exports its modules with `from .calculator import ...`
    assert f"{PACKAGE}.calculators.calculator" in graph[f"{PACKAGE}.calculators"]
    # `from a import b` of a module is an import of a.b
    assert f"{PACKAGE}.distributed" in graph[f"{PACKAGE}.rundir"]


def test_no_import_cycles():
    assert find_cycles(import_graph()) == []


def test_lower_layers_never_import_higher_ones():
    assert layer_violations(import_graph()) == []


def test_inference_never_imports_the_training_loop():
    graph = import_graph()
    assert f"{PACKAGE}.checkpoints.builder" in graph  # the inference starts exist
    assert training_reached_by_inference(graph) == []


def test_the_checks_catch_what_they_look_for():
    """The same checks on a small made-up graph with a cycle, an upward import and an
    inference path into the loop."""
    p = PACKAGE
    graph = {f"{p}.launch.cli": {f"{p}.launch.sweep"}, f"{p}.launch.sweep": {f"{p}.launch.cli"},
             f"{p}.tasks.forces": {f"{p}.training.loop"}, f"{p}.training.loop": set(),
             f"{p}.calculators.calculator": {f"{p}.tasks.forces"}, f"{p}.mystery": set()}
    assert find_cycles(graph) == [[f"{p}.launch.cli", f"{p}.launch.sweep"]]
    assert layer_violations(graph) == [f"'mystery' (in {p}.mystery) has no layer in LAYERS",
                                       f"{p}.tasks.forces (layer 3) imports {p}.training.loop (layer 6)"]
    assert training_reached_by_inference(graph) == [
        f"{p}.calculators.calculator -> {p}.tasks.forces -> {p}.training.loop"]
