"""The skill store: named, versioned Python modules that submitted code imports by name
(no rclpy).

A skill is a module defining a top-level function named like the skill; its
``if __name__ == "__main__":`` block shows it working (what a save's dry runs run). The
store keeps every version of every name in ``skills.sqlite3`` beside the history (one per
robot, like the history): versions are numbered 1, 2, ... per name and never change — the
store has no UPDATE and no DELETE. Each row has a global sequence number, so "the latest
version as of a goal's start" is the newest row at or below the sequence the goal saw.

Statistics are *living*: every recorded execution that imported a version adds a use
(``record_uses``), and the listing counts them. They are kept in the store, not derived
from the history rows, so they outlive the history's retention.
"""
from __future__ import annotations

import ast
import hashlib
import keyword
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tidybot_exec.execution.validation import validate

MAX_NAME = 64
MAX_DESCRIPTION = 4096
MAX_DRY_RUNS = 20
MISSING_NAMES = 50              # names a "no such skill" error lists at most
RESERVED = frozenset({"load", "module", "SkillNotFound"})   # tidybot_skills.__all__

_SCHEMA = """
CREATE TABLE IF NOT EXISTS skills (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    signature TEXT NOT NULL,
    docstring TEXT NOT NULL,
    code TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    from_execution_id TEXT NOT NULL,
    dry_runs_passed INTEGER NOT NULL,
    saved REAL NOT NULL,
    saved_by TEXT NOT NULL,
    origin TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS skill_uses (
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    PRIMARY KEY (execution_id, name, version)
);
CREATE INDEX IF NOT EXISTS skill_uses_version ON skill_uses (name, version);
"""
_FIELDS = ("seq", "name", "version", "description", "signature", "docstring", "code",
           "code_sha256", "from_execution_id", "dry_runs_passed", "saved", "saved_by", "origin")


@dataclass(frozen=True)
class Skill:
    """One version of a skill, with its statistics when read from the store."""

    seq: int
    name: str
    version: int
    description: str
    signature: str
    docstring: str
    code: str
    code_sha256: str
    from_execution_id: str
    dry_runs_passed: int
    saved: float                  # wall clock
    saved_by: str
    origin: str                   # free text: where an imported skill came from
    runs: int = 0
    successes: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class Saved:
    """skills/save's answer."""

    success: bool
    message: str
    version: int = 0
    dry_runs_passed: int = 0


@dataclass(frozen=True)
class Parsed:
    """What a save learns from a skill's code."""

    signature: str
    docstring: str
    demonstrated: bool          # it has the `if __name__ == "__main__":` block dry runs run


def check(name: str, code: str, description: str, max_bytes: int) -> Parsed | str:
    """The skill's signature and docstring, or why it cannot be saved."""
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        return (f"skill name {name!r} must be a Python identifier that is not a keyword and "
                f"does not start with '_' (it is the function's and the import's name)")
    if len(name) > MAX_NAME:
        return f"skill name is {len(name)} characters, above the limit of {MAX_NAME}"
    if name in RESERVED:
        return f"skill name {name!r} is taken by tidybot_skills itself ({', '.join(sorted(RESERVED))})"
    if len(description) > MAX_DESCRIPTION:
        return f"description is {len(description)} characters, above the limit of {MAX_DESCRIPTION}"
    verdict = validate(code, max_bytes)
    if verdict.error:
        return verdict.error
    tree = ast.parse(code)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name == name]
    if not functions:
        return (f"the code defines no top-level function {name}(): a skill is a module whose "
                f"function has the skill's name")
    fn = functions[-1]                # the definition that wins when the module runs
    try:
        signature = f"{name}({ast.unparse(fn.args)})" + (f" -> {ast.unparse(fn.returns)}"
                                                          if fn.returns else "")
    except RecursionError:
        return f"the signature of {name}() is nested too deeply to show; simplify its defaults"
    return Parsed(signature, ast.get_docstring(fn) or "", any(map(_is_main_block, tree.body)))


def _is_main_block(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` at the top of the module."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def summary(docstring: str) -> str:
    """A docstring's first paragraph, on one line: the default description."""
    return " ".join(docstring.strip().split("\n\n")[0].split())


class SkillStore:
    """Every version of every skill of one robot, in ``directory/skills.sqlite3``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "skills.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def save(self, name: str, code: str, parsed: Parsed, description: str = "",
             from_execution_id: str = "", dry_runs_passed: int = 0, saved_by: str = "",
             origin: str = "") -> Skill:
        """Add the next version of ``name`` (checked with ``check`` first) and return it."""
        row = dict(name=name, description=description or summary(parsed.docstring),
                   signature=parsed.signature, docstring=parsed.docstring, code=code,
                   code_sha256=hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest(),
                   from_execution_id=from_execution_id, dry_runs_passed=dry_runs_passed,
                   saved=time.time(), saved_by=saved_by, origin=origin)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row["version"] = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM skills WHERE name = ?",
                (name,)).fetchone()[0]
            columns = [f for f in _FIELDS if f != "seq"]
            seq = self._db.execute(
                f"INSERT INTO skills ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns]).lastrowid
        return Skill(seq=seq, **row)

    def latest_seq(self) -> int:
        """The newest row's sequence number (0 for an empty store): a goal's view of it."""
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM skills").fetchone()[0]

    def get(self, name: str, version: int = 0, as_of: int | None = None) -> Skill | None:
        """Version ``version`` of ``name`` (0: the latest, at or below ``as_of`` if given)."""
        where, args = ["s.name = ?"], [name]
        if version:
            where, args = [*where, "s.version = ?"], [*args, version]
        elif as_of is not None:
            where, args = [*where, "s.seq <= ?"], [*args, as_of]
        found = self._select(f"WHERE {' AND '.join(where)}", args, "s.version DESC LIMIT 1")
        return found[0] if found else None

    def list(self, query: str = "", all_versions: bool = False) -> list[Skill]:
        """By name; the newest version of each name unless ``all_versions``; ``query`` a
        case-insensitive substring of the name, description or docstring (folded in Python:
        SQLite's lower() folds only ASCII)."""
        found = self._select("" if all_versions else "WHERE s.version = (SELECT MAX(version) "
                             "FROM skills WHERE name = s.name)", (), "s.name, s.version")
        needle = query.casefold()
        return [s for s in found if needle in f"{s.name}\n{s.description}\n{s.docstring}".casefold()]

    def versions(self, name: str) -> list[int]:
        with self._lock:
            return [v for (v,) in self._db.execute(
                "SELECT version FROM skills WHERE name = ? ORDER BY version", (name,))]

    def missing(self, name: str, version: int = 0, as_of: int | None = None) -> str:
        """Why ``name`` (at ``version``; latest at or below ``as_of``) cannot be had,
        naming what exists."""
        versions = self.versions(name)
        if versions and version:
            return (f"skill {name} has no version {version}; it has "
                    f"{', '.join(map(str, versions))}")
        if versions:
            return (f"skill {name} was first saved after this goal started (it sees the store "
                    f"as it was then); pin a version with tidybot_skills.load({name!r}, "
                    f"{versions[-1]}) or run the goal again")
        with self._lock:
            names = [n for (n,) in self._db.execute(
                f"SELECT DISTINCT name FROM skills ORDER BY name LIMIT {MISSING_NAMES + 1}")]
        listed = ", ".join(names[:MISSING_NAMES]) + (", ..." if len(names) > MISSING_NAMES else "")
        return (f"no skill named {name!r}; the store has "
                + (listed if names else "none yet (save one with skills/save)"))

    def record_uses(self, execution_id: str, refs: Iterable[str], succeeded: bool) -> None:
        """An execution that imported ``refs`` (NAME@VERSION) ended."""
        rows = [(execution_id, *split_ref(ref), int(succeeded)) for ref in refs]
        if not rows:
            return
        with self._lock:
            # not synced to disk before the goal is answered (WAL keeps it consistent): a
            # power loss may cost the newest uses, never a skill or the history's record
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR IGNORE INTO skill_uses VALUES (?, ?, ?, ?)", rows)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select(self, where: str, args: Sequence, order: str) -> list[Skill]:
        """Skills with their statistics (uses counted per version)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(f's.{f}' for f in _FIELDS)}, "
                f"COUNT(u.execution_id), COALESCE(SUM(u.succeeded), 0) FROM skills s "
                f"LEFT JOIN skill_uses u ON u.name = s.name AND u.version = s.version "
                f"{where} GROUP BY s.seq ORDER BY {order}", args).fetchall()
        return [Skill(*row) for row in rows]


def split_ref(ref: str) -> tuple[str, int]:
    """"NAME@VERSION" -> (NAME, VERSION)."""
    name, _, version = ref.rpartition("@")
    return name, int(version)


def markdown(skills: Sequence[Skill]) -> str:
    """The skills for an agent that writes code: how to import them, and each one's
    signature, docstring and record."""
    if not skills:
        return ("## Skills\n\nNo skills are saved yet. Save working code with skills/save "
                "(`tidybot-run --save-skill NAME FILE`).\n")
    lines = ["## Skills", "", "Import one with `from tidybot_skills import NAME` (the latest "
             "version as of the goal's start) or pin one with `tidybot_skills.load(NAME, "
             "VERSION)`; call it instead of rewriting it.", ""]
    for s in skills:
        lines += [f"### {s.signature}", "",
                  f"Version {s.version}; " + (f"{s.successes} of {s.runs} executions that "
                                              f"imported it succeeded" if s.runs else "not run yet")
                  + (f"; saved from execution {s.from_execution_id}"
                                     if s.from_execution_id else "")
                  + (f"; proven on {s.dry_runs_passed} dry run(s)" if s.dry_runs_passed else "")
                  + ".", ""]
        if s.description:
            lines += [s.description, ""]
        if s.docstring and s.docstring.strip() != s.description:
            lines += ["```text", s.docstring.strip(), "```", ""]
    return "\n".join(lines)
