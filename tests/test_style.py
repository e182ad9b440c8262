"""What keeps the code readable and is checked, not only hoped for."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted((ROOT / "bundler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not long, long


def test_the_file_list_reads_as_the_data_flow():
    # sources -> image model -> checks -> sinks, the bundle format and the commands on top.
    packages = {p.name for p in (ROOT / "bundler").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == {"sources", "sinks", "checks", "bundleformat", "commands", "registry"}
    commands = {p.stem for p in (ROOT / "bundler" / "commands").glob("*.py")} - {"__init__"}
    assert {"build", "push", "inspect", "place", "status", "split", "delta"} <= commands
