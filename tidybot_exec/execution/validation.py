"""Checks on requests before anything runs: the code's size, syntax and advice; durations.

The lint warnings are advice for the agent that wrote the code (why a call is a bad idea
on a robot), not a security boundary: the child process is what contains the code.
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

FILENAME = "<submitted>"
MIN_DURATION_S = 0.1


def duration_error(name: str, value: float, minimum: float = MIN_DURATION_S) -> str:
    """Why ``value`` is no sensible duration for ``name`` ("" when it is; <= 0 means the
    default). A tiny positive value is almost always an int put in a float64 field, which
    rosidl_python sends as garbage (600 arrives as 5e-324) unless ROS_PYTHON_CHECK_FIELDS=1."""
    if math.isnan(value) or 0 < value < minimum:
        return f"{name} must be 0 (the default) or at least {minimum:g}s, got {value:g}"
    return ""

# module.attribute or module -> why it is a bad idea in robot code
_RISKY_CALLS = {
    "os.system": "runs a shell", "os.popen": "runs a shell", "os.fork": "forks the process",
    "os.kill": "signals other processes", "os.killpg": "signals other processes",
    "os.setsid": "leaves the process group (it is still stopped with the execution)",
    "subprocess": "starts other programs", "multiprocessing": "starts other processes",
    "socket": "opens network connections", "ctypes": "calls native code directly",
}
_RISKY_BUILTINS = {"eval": "evaluates strings as code", "exec": "evaluates strings as code",
                   "input": "waits for keyboard input that never comes",
                   "breakpoint": "waits for a debugger that never comes"}


@dataclass
class Verdict:
    """Outcome of validation: ``error`` set means reject; warnings never block."""

    error: str = ""
    warnings: list[str] = field(default_factory=list)


def validate(source: str, max_bytes: int) -> Verdict:
    size = len(source.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        return Verdict(error=f"code is {size} bytes, above the limit of {max_bytes} bytes")
    if not source.strip():
        return Verdict(error="code is empty")
    try:
        tree = compile(source, FILENAME, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
        compile(tree, FILENAME, "exec", dont_inherit=True)   # errors only the compiler finds
    except SyntaxError as exc:
        if exc.lineno is None:
            return Verdict(error=f"SyntaxError: {exc.msg}")
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return Verdict(error=f"SyntaxError at {where}: {exc.msg}")
    except ValueError as exc:          # e.g. NUL bytes in the source
        return Verdict(error=f"invalid source: {exc}")
    except (RecursionError, MemoryError):
        return Verdict(error="code is nested too deeply to compile (an expression or block "
                             "hundreds of levels deep); split it up")
    return Verdict(warnings=lint(tree))


def lint(tree: ast.AST) -> list[str]:
    """Warnings for calls that are almost always a mistake in robot code."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                why = _RISKY_CALLS.get(name.split(".")[0])
                if why:
                    found.append(f"line {node.lineno}: importing {name} {why}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _RISKY_BUILTINS:
                found.append(f"line {node.lineno}: {func.id}() {_RISKY_BUILTINS[func.id]}")
            elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                  and f"{func.value.id}.{func.attr}" in _RISKY_CALLS):
                found.append(f"line {node.lineno}: {func.value.id}.{func.attr}() "
                             f"{_RISKY_CALLS[f'{func.value.id}.{func.attr}']}")
    return found
