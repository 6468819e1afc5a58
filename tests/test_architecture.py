"""The package's imports flow one way (docs/architecture.md): no module imports a higher floor, and no
import cycle, counting imports inside functions too; no function over 60 lines but the parser, no public
function or class without a docstring. Parses the source; imports nothing of seglab."""
import ast
import os
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"

# floor -> module prefixes; a module's floor is that of its longest matching prefix
FLOORS = {
    0: ["seglab.errors", "seglab.fileio", "seglab.durations", "seglab.registry", "seglab.rank",
        "seglab.collectives", "seglab.lazy"],
    1: ["seglab.config"],
    2: ["seglab.tracking"],
    3: ["seglab.data", "seglab.metrics", "seglab.artifacts"],
    4: ["seglab.models", "seglab.losses"],
    5: ["seglab.evaluation", "seglab.deploy"],
    6: ["seglab.engine"],
    7: ["seglab.reporting"],
    8: ["seglab.workflows"],
    9: ["seglab.api", "seglab.cli", "seglab.__main__", "seglab.reference", "seglab"],
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "seglab").rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def floor_of(name: str) -> int:
    best, floor = -1, None
    for f, prefixes in FLOORS.items():
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), f
    assert floor is not None, f"{name}: no floor in FLOORS; add it there and to docs/architecture.md"
    return floor


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (floor {floor_of(m)}) imports {d} (floor {floor_of(d)})"
            for m, deps in sorted(graph.items()) for d in sorted(deps) if floor_of(d) > floor_of(m)]


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_no_module_imports_a_higher_floor():
    upward = find_upward(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    cycles = find_cycles(_graph())
    assert not cycles, "\n".join(cycles)


def test_the_checks_find_what_they_look_for():
    made_up = {"seglab.api": {"seglab.workflows.experiments"}, "seglab.workflows.experiments": {"seglab.api"},
               "seglab.engine.trainer": {"seglab.reporting.report"}, "seglab.reporting.report": set()}
    assert find_cycles(made_up) == ["seglab.api -> seglab.workflows.experiments -> seglab.api"]
    assert find_upward(made_up) == ["seglab.engine.trainer (floor 6) imports seglab.reporting.report (floor 7)",
                                    "seglab.workflows.experiments (floor 8) imports seglab.api (floor 9)"]


MAX_FUNCTION_LINES = 60
LONG_ALLOWED = {"seglab.cli.build_parser"}  # one declaration of every command and option


def find_long_functions(modules: dict[str, Path], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit and f"{name}.{node.name}" not in LONG_ALLOWED:
                    out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: {lines} lines (at most {limit})")
    return out


def find_undocumented(modules: dict[str, Path]) -> list[str]:
    out = []
    for name, path in sorted(modules.items()):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and not node.name.startswith("_") and not ast.get_docstring(node)):
                out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: no docstring")
    return out


def test_no_function_is_longer_than_60_lines_but_the_parser():
    long = find_long_functions(_modules())
    assert not long, "\n".join(long)


def test_every_public_function_and_class_has_a_docstring():
    missing = find_undocumented(_modules())
    assert not missing, "\n".join(missing)


def test_the_style_checks_find_what_they_look_for(tmp_path):
    f = tmp_path / "made_up.py"
    f.write_text("def public():\n" + "    x = 1\n" * 61 + "\n\ndef _private():\n    pass\n")
    where = os.path.relpath(f, ROOT)
    assert find_long_functions({"made_up": f}) == [f"{where}:1 public: 62 lines (at most 60)"]
    assert find_undocumented({"made_up": f}) == [f"{where}:1 public: no docstring"]
    assert find_long_functions({"made_up": f}, limit=62) == []
