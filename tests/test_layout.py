"""The house of the design card, checked from the source: one-way imports, no cycles, small modules.

Data flows one way: data -> engine (hessian) -> ops -> callbacks / pruning -> quantizers -> layers ->
quantize -> hawq -> export -> plots/models -> demo -> cli. HAWQ sits above quantize (its plan's perturbation
terms are computed with the quantizers of the layers it would install), below export. A module may import its own room and any room below it, never one
above; modules form no import cycle; no module holds more than about 400 lines.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "keras_hessian"
MAX_LINES = 420

# Rooms, lowest first. Private top-level modules (_validation, _compat, ...) are the floor.
RANKS = {
    "data": 1,
    "hessian": 2,
    "ops": 3,
    "callbacks": 4,
    "hawq": 7.5,
    "pruning": 4,
    "quantizers": 5,
    "layers": 6,
    "quantize": 7,
    "export": 8,
    "plots": 9,
    "models": 9,
    "architectures": 9,
    "demo": 9.5,
    "cli": 10,
    "__main__": 11,
    "__init__": 11,
}


def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        modules[".".join(["keras_hessian", *parts])] = path
    return modules


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(module: str) -> int:
    room = _room(module)
    return 0 if room.startswith("_") and room not in RANKS else RANKS[room]


def _imports(path: pathlib.Path, module: str, known: dict) -> set[str]:
    """keras_hessian modules imported by `path` at module level or inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("keras_hessian") and name != module:
                found.add(name)
    return found


def test_rooms_are_all_ranked():
    rooms = {_room(m) for m in _modules()}
    unranked = sorted(r for r in rooms if not r.startswith("_") and r not in RANKS)
    assert not unranked, f"new rooms need a place in the house: {unranked}"


def test_no_module_imports_a_room_above_it():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        for target in _imports(path, module, modules):
            if target == "keras_hessian":
                if _room(module) != "__init__":
                    upward.append(f"{module} imports the top-level package")
            elif _rank(target) > _rank(module) and _room(target) != _room(module):
                upward.append(f"{module} -> {target}")
    assert not upward, "\n".join(sorted(upward))


def test_the_engine_imports_only_itself_and_the_floor():
    modules = _modules()
    for module, path in modules.items():
        if _room(module) == "hessian":
            for target in _imports(path, module, modules):
                assert _room(target) == "hessian" or _rank(target) == 0, f"{module} -> {target}"


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    # A package __init__ re-exporting its children is not a cycle with them: drop child -> parent edges.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_no_module_over_about_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
