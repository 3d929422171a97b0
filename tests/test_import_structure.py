"""nnFM's modules form no import cycle (issue 26), and the record modules are leaves.

Run alone: ``pytest tests/test_import_structure.py``. The graph counts module-level and function-level imports
(a function-level import that closes a cycle is still a cycle, only a late one).
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# installed package name -> folder in the repository (setup.py package_dir)
PACKAGES = {"nnfm": ROOT / "nnfm", "nnfm_planners": ROOT / "planners", "nnfm_trainers": ROOT / "trainers"}


def _modules() -> dict:
    modules = {}
    for package, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            parts = [package, *file.relative_to(folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def import_graph() -> dict:
    """module -> the nnFM modules it imports: an import of a package's member counts as the member's module and its
    parent packages (whose __init__ Python runs first); a module's own parent packages are not edges (they are
    running already when it is imported)."""
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, file in modules.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first: the parent packages are edges too
                while target:
                    if target in modules and target != module and not module.startswith(target + "."):
                        graph[module].add(target)
                    target = target.rpartition(".")[0]
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_of_nnfm_takes_part_in_an_import_cycle():
    graph = import_graph()
    assert len(graph) > 100 and graph["nnfm.registry"]  # the walk found the packages
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("leaf", ["nnfm.conventions", "nnfm.encoder_entry", "nnfm.weights.families",
                                  "nnfm.weights.random_init"])
def test_record_modules_are_leaves(leaf):
    """The records that network and filter modules register into import no other nnFM module but these leaves."""
    allowed = {"nnfm", "nnfm.conventions", "nnfm.errors"}
    assert import_graph()[leaf] <= allowed, import_graph()[leaf]


def test_importing_the_registry_alone_loads_no_network_module():
    """As timm's _registry: the lookups import the network modules at the first lookup, never at import."""
    code = ("import sys, nnfm.registry, nnfm.encoder_entry, nnfm.conventions; "
            "print(sorted(m for m in sys.modules if m.startswith('nnfm.networks.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
