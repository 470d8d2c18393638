"""The package's layers, read from its imports (also those inside functions): text utilities at
the bottom, shared services above them, the stages (forge, judge, train, preference) above those
and never importing one another (preference builds on train, BUILDS_ON), and the commands that run stages at the top. An import that runs back up
a layer fails here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "opensem"
STAGES = {"forge", "judge", "train", "preference"}
# a stage that continues another's output with its machinery: preference trains train's adapter
# further, with train's backend, callbacks and run-state helpers
BUILDS_ON = {"preference": {"train"}}
# run stages or read what they made; nothing below imports them
COMMANDS = {"cli", "__main__", "stages", "pipeline", "registry", "report", "sweep", "serve", "export", "doctor", "infra"}


def imports() -> dict[str, set[str]]:
    """Module name -> the opensem modules it imports anywhere in its code."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("opensem"):
                found |= {node.module} if node.module != "opensem" else {f"opensem.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("opensem")}
        graph[module] = found
    return graph


def part(module: str) -> str:
    """opensem.judge.offline -> judge; opensem.retrieval -> retrieval."""
    return module.split(".")[1] if module.count(".") else module


def test_the_text_utilities_import_no_stage_and_nothing_above_them():
    for module, used in imports().items():
        if part(module) == "text":
            assert {part(u) for u in used} <= {"text", "errors"}, f"{module} imports {sorted(used)}"


def test_no_stage_imports_another_stage():
    for module, used in imports().items():
        if part(module) in STAGES:
            others = {u for u in used if part(u) in STAGES - {part(module)} - BUILDS_ON.get(part(module), set())}
            assert not others, f"{module} imports {sorted(others)}"


def test_shared_modules_import_no_stage_and_no_command():
    for module, used in imports().items():
        if part(module) not in STAGES | COMMANDS | {"text"} and module != "opensem":
            upward = {u for u in used if part(u) in STAGES | COMMANDS}
            assert not upward, f"{module} imports {sorted(upward)}"


def test_the_layout_check_sees_imports_inside_functions(tmp_path):
    """The check reads nested imports: a planted one inside a function is found."""
    source = "def f():\n    from opensem.forge.stage import run\n"
    tree = ast.parse(source)
    nested = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert nested == ["opensem.forge.stage"] and part(nested[0]) == "forge"
