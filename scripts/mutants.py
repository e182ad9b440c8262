"""Mutation testing for one module, one mutant at a time, against that module's own tests.

Each mutant is one small, plausible bug put into the module's source: a comparison flipped
(< to <=, == to !=, in to not in), an integer constant off by one, a condition negated, a
`raise` or a boolean `return` turned around, `and` swapped for `or`, `fullmatch` for `match`,
`min` for `max`, `+` for `-`. The module's test files are run against it (stop at the first
failure, with a time limit); a mutant the tests fail on is killed, one they pass survives and
is printed with its line, for a person to judge: a missing test, or an equivalent mutant that
no test can tell apart.

The file is edited in place and restored after each mutant (and on Ctrl-C); stale bytecode is
removed so each run imports what is on disk. Runs one mutant at a time: the suite is shared.
Only the standard library.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
        ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
        ast.Is: ast.IsNot, ast.IsNot: ast.Is}
ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
         ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.FloorDiv: ast.Mult,
         ast.Mult: ast.FloorDiv}
# The checking modules and their own tests: `scripts/mutants tarstream` runs these.
MODULES = {
    "tarstream": ("bundler/tarstream.py",
                  ["tests/test_tarstream.py", "tests/test_tar_differential.py"]),
    "strictjson": ("bundler/strictjson.py", ["tests/test_strictjson.py"]),
    "digest": ("bundler/digest.py", ["tests/test_digest.py"]),
    "auth": ("bundler/registry/auth.py", ["tests/test_registry_auth.py"]),
    "targets": ("bundler/registry/targets.py", ["tests/test_registry_targets.py"]),
    "retry": ("bundler/registry/retry.py", ["tests/test_registry_retry.py"]),
    "frames": ("bundler/bundleformat/compress.py", ["tests/test_compress.py"]),
    "layout": ("bundler/checks/layout.py", ["tests/test_layout.py"]),
    "reference": ("bundler/reference.py",
                  ["tests/test_reference.py", "tests/test_reference_properties.py"]),
    "platform": ("bundler/platform.py",
                 ["tests/test_platform.py", "tests/test_platform_properties.py"]),
    "push": ("bundler/commands/push.py", ["tests/test_push.py"]),
    "verify": ("bundler/checks/verify.py",
               ["tests/test_verify.py", "tests/test_verify_hostile.py"]),
    "place": ("bundler/commands/place.py", ["tests/test_place.py", "tests/test_place_hostile.py"]),
    "signing": ("bundler/bundleformat/signing.py", ["tests/test_signing.py"]),
    "checksums": ("bundler/bundleformat/checksums.py", ["tests/test_checksums.py"]),
    # A cached frame's check: the frame walk and copy, and the tar bytes it must decode to.
    "framecheck": ("bundler/bundleformat/compress.py", ["tests/test_framecheck.py"]),
    "segmentcheck": ("bundler/bundleformat/archive.py",
                     ["tests/test_framecheck.py", "tests/test_archive.py"]),
    "text": ("bundler/text.py", ["tests/test_text.py"]),
    # A bundle's index.json and manifest.json, read once for every command.
    "metadata": ("bundler/bundleformat/metadata.py",
                 ["tests/test_metadata.py", "tests/test_refname.py"]),
    # The parts list carried across the gap with a bundle's parts.
    "parts": ("bundler/bundleformat/parts.py",
              ["tests/test_parts.py", "tests/test_parts_hostile.py"]),
}
# frames: only the frame walk, not the compressor set-up.
FUNCTIONS = {"frames": ["Seeking", "frames", "_frame_header", "_blocks", "_exact", "_skip"],
             "framecheck": ["copy_checked", "frame_header", "compress_bound", "_CopyingReader"],
             "segmentcheck": ["SegmentCheck", "_expected"]}
CALLS = {"fullmatch": "match", "min": "max", "max": "min", "any": "all", "all": "any"}


@dataclass(frozen=True)
class Mutant:
    line: int
    start: int  # offsets into the source text
    end: int
    text: str  # what replaces source[start:end]
    what: str

    def apply(self, source: str) -> str:
        return source[:self.start] + self.text + source[self.end:]


def _offsets(source: str) -> list[int]:
    starts, n = [0], 0
    for line in source.splitlines(keepends=True):
        n += len(line.encode())
        starts.append(n)
    return starts


class _Finder(ast.NodeVisitor):
    def __init__(self, source: str, lines: range | None):
        self.source = source
        self.data = source.encode()
        self.starts = _offsets(source)
        self.lines = lines
        self.found: list[Mutant] = []
        self._skip = 0  # inside an f-string, an annotation or a docstring

    def _span(self, node: ast.AST) -> tuple[int, int]:
        a = self.starts[node.lineno - 1] + node.col_offset
        b = self.starts[node.end_lineno - 1] + node.end_col_offset
        # ast columns are UTF-8 byte offsets: convert to str offsets.
        return len(self.data[:a].decode()), len(self.data[:b].decode())

    def _add(self, node: ast.AST, new: ast.AST | str, what: str, paren: bool = True) -> None:
        if self._skip or (self.lines and node.lineno not in self.lines):
            return
        text = new if isinstance(new, str) else ast.unparse(new)
        if paren:
            text = f"({text})"
        a, b = self._span(node)
        self.found.append(Mutant(node.lineno, a, b, text, what))

    # What not to mutate: annotations, docstrings, f-strings (messages), `__all__`.
    def visit_JoinedStr(self, node):
        self._skip += 1
        self.generic_visit(node)
        self._skip -= 1

    def visit_arg(self, node):
        pass  # its annotation

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_FunctionDef(self, node):
        for d in node.decorator_list:
            self.visit(d)
        self.visit(node.args)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node):
        for d in node.defaults + [d for d in node.kw_defaults if d is not None]:
            self.visit(d)

    def visit_Compare(self, node):
        if len(node.ops) == 1 and type(node.ops[0]) in FLIP:
            new = ast.Compare(node.left, [FLIP[type(node.ops[0])]()], node.comparators)
            self._add(node, new, f"{type(node.ops[0]).__name__} -> "
                                 f"{FLIP[type(node.ops[0])].__name__}")
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, ast.BoolOp(other, node.values),
                  "and -> or" if isinstance(node.op, ast.And) else "or -> and")
        self.generic_visit(node)

    def visit_BinOp(self, node):
        if type(node.op) in ARITH:
            new = ast.BinOp(node.left, ARITH[type(node.op)](), node.right)
            self._add(node, new, f"{type(node.op).__name__} -> {ARITH[type(node.op)].__name__}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self._add(node, node.operand, "not x -> x")
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int):
            return
        self._add(node, repr(v + 1), f"{v} -> {v + 1}")
        self._add(node, repr(v - 1), f"{v} -> {v - 1}")

    def visit_Call(self, node):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
            else None
        if name in CALLS and not self._skip and (not self.lines or node.lineno in self.lines):
            if isinstance(f, ast.Attribute):
                a, b = self._span(f)
                text = self.source[a:b]
                new = text[: text.rfind(name)] + CALLS[name]
            else:
                a, b = self._span(f)
                new = CALLS[name]
            self.found.append(Mutant(node.lineno, a, b, new, f"{name} -> {CALLS[name]}"))
        self.generic_visit(node)

    def _test(self, node):
        self._add(node.test, ast.UnaryOp(ast.Not(), node.test), "condition negated")

    def visit_If(self, node):
        self._test(node)
        self.generic_visit(node)

    def visit_While(self, node):
        if not (isinstance(node.test, ast.Constant) and node.test.value is True):
            self._test(node)
        self.generic_visit(node)

    def visit_IfExp(self, node):
        self._test(node)
        self.generic_visit(node)

    def visit_Raise(self, node):
        self._add(node, "pass", "raise deleted", paren=False)
        self.generic_visit(node)

    def visit_Return(self, node):
        v = node.value
        if isinstance(v, ast.Constant) and isinstance(v.value, bool):
            self._add(node, f"return {not v.value}", f"return {v.value} -> {not v.value}",
                      paren=False)
            return
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring
        self.generic_visit(node)

    def visit_Assign(self, node):
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_Continue(self, node):
        self._add(node, "break", "continue -> break", paren=False)

    def visit_Break(self, node):
        self._add(node, "continue", "break -> continue", paren=False)


def find(source: str, lines: range | None = None) -> list[Mutant]:
    finder = _Finder(source, lines)
    finder.visit(ast.parse(source))
    out = []
    for m in finder.found:
        try:
            compile(m.apply(source), "<mutant>", "exec")
        except SyntaxError:
            continue
        out.append(m)
    return out


def _function_lines(source: str, names: list[str]) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def _drop_bytecode(module: Path) -> None:
    for pyc in (module.parent / "__pycache__").glob(f"{module.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def _run(tests: list[str], timeout: float, extra: list[str]) -> tuple[str, float]:
    # This checkout's bundler, whichever one .venv installed: a copy of the repository can be
    # mutated while the work tree is being edited.
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra, *tests],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timeout", time.monotonic() - started
    except BaseException:  # interrupted: the tests of the mutant go too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    elapsed = time.monotonic() - started
    if code == 0:
        return "survived", elapsed
    return ("killed" if code == 1 else f"error {code}"), elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("module", help=f"bundler/x.py, or one of: {', '.join(MODULES)}")
    p.add_argument("tests", nargs="*", help="the module's test files (named: its own)")
    p.add_argument("--functions", nargs="*", default=[],
                   help="mutate only inside these functions or classes")
    p.add_argument("--lines", help="mutate only lines A-B")
    p.add_argument("--timeout", type=float, default=0,
                   help="seconds per mutant (default: 3 x the clean run + 10)")
    p.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    p.add_argument("--only", help="run only the mutants with these indexes (1,5,7)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--pytest", default="", help="extra pytest arguments, space-separated")
    args = p.parse_args()
    if args.module in MODULES:
        args.functions = args.functions or FUNCTIONS.get(args.module, [])
        args.module, own = MODULES[args.module]
        args.tests = args.tests or own
    if not args.tests:
        p.error("name the module's test files")

    module = (ROOT / args.module).resolve()
    original = module.read_text()
    lines = None
    if args.lines:
        a, b = map(int, args.lines.split("-"))
        lines = set(range(a, b + 1))
    if args.functions:
        lines = (lines or set()) | _function_lines(original, args.functions)
    mutants = find(original, lines)
    if args.only:
        wanted = {int(i) for i in args.only.split(",")}
    else:
        wanted = set(range(1, len(mutants) + 1))
    if args.list:
        for i, m in enumerate(mutants, 1):
            print(f"{i:4} {args.module}:{m.line}: {m.what}: {m.text}")
        return 0
    extra = shlex.split(args.pytest)

    _drop_bytecode(module)
    state, clean = _run(args.tests, 3600, extra)
    if state != "survived":
        print(f"the tests fail without a mutant ({state}); fix that first", file=sys.stderr)
        return 2
    timeout = args.timeout or 3 * clean + 10
    print(f"{args.module}: {len(mutants)} mutants ({len(wanted)} to run); clean run "
          f"{clean:.1f} s, limit {timeout:.0f} s each", flush=True)

    results = []
    restore = module.stat()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # restore the file on kill too
    try:
        for i, m in enumerate(mutants, 1):
            if i not in wanted:
                continue
            module.write_text(m.apply(original))
            _drop_bytecode(module)
            state, took = _run(args.tests, timeout, extra)
            module.write_text(original)
            results.append({"index": i, "line": m.line, "what": m.what, "text": m.text,
                            "state": state, "seconds": round(took, 1)})
            if state == "survived":
                print(f"  SURVIVED {i:4} {args.module}:{m.line}: {m.what}: "
                      f"{original.splitlines()[m.line - 1].strip()[:90]}", flush=True)
    finally:
        module.write_text(original)
        os.utime(module, ns=(restore.st_atime_ns, restore.st_mtime_ns))
        _drop_bytecode(module)
    survived = [r for r in results if r["state"] == "survived"]
    killed = len(results) - len(survived)
    rate = 100 * killed / len(results) if results else 100.0
    print(f"{args.module}: {len(results)} mutants, {killed} killed, {len(survived)} survived "
          f"({rate:.1f}% killed)")
    if args.json:
        Path(args.json).write_text(json.dumps({"module": args.module, "tests": args.tests,
                                               "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
