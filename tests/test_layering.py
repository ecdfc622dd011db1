"""Layering: the library (``stages`` outside ``stages/cli``) never imports the CLI, and the
``workflows`` modules import each other without a cycle (lazy imports inside functions count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` anywhere in the file names (relative
    imports resolved against ``package``; ``from a import b`` yields ``a`` and ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_library_does_not_import_the_cli():
    offenders = []
    for path in sorted((ROOT / "stages").rglob("*.py")):
        rel = path.relative_to(ROOT / "stages")
        if rel.parts[0] == "cli" or rel.name == "__main__.py":  # the CLI and the `python -m stages` entry
            continue
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        bad = sorted(m for m in imported_modules(path, package) if m == "stages.cli" or m.startswith("stages.cli."))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
    assert offenders == [], "the library imports the CLI; move the shared piece below stages/cli:\n" + "\n".join(offenders)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from stages.cli.run_cmd import prepare_actor\n    from . import cli\n")
    mods = imported_modules(src, "stages")
    assert "stages.cli.run_cmd" in mods and "stages.cli" in mods


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from its first node)."""
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_no_import_cycle_between_workflows_modules():
    paths = sorted((ROOT / "workflows").glob("*.py"))
    names = {module_name(p) for p in paths}
    graph = {module_name(p): {m for m in imported_modules(p, "workflows") if m in names} - {module_name(p)}
             for p in paths}
    assert "workflows.build" in graph and "workflows.helm" in graph["workflows.build"]
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
