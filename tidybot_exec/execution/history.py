"""Finished executions on disk, in SQLite (stdlib ``sqlite3``, WAL journal), across restarts.

A database gives what the history needs without hand-rolled file handling: each record is
one committed transaction (synchronous=FULL: a crash or power loss keeps every record whose
append returned), paging and filters are queries, and retention is one DELETE. The newest
``max_records`` are kept. A ``history.jsonl`` left by an older version is imported once and
renamed ``history.jsonl.migrated``. Records never hold a lease token.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

from tidybot_exec.execution.records import Result


@dataclass
class Record:
    """One finished execution: what history keeps and execution/history returns."""

    execution_id: str
    holder: str
    label: str
    status: int
    exit_code: int
    error: str
    started: float
    finished: float
    duration_s: float
    code_sha256: str
    code: str
    stdout_tail: str
    stderr_tail: str
    truncated: bool
    dry_run: bool = False
    replay_of: str = ""
    skills: str = ""             # NAME@VERSION of each skill imported, space-separated
    skills_as_of: int = 0        # the skill store's newest row when it started (for a replay)
    collisions: str = ""         # one line each (Result.collisions), newline-separated
    moved_objects: str = ""      # one line each (Result.moved_objects), newline-separated
    resources: str = ""          # the parts its lease held, space-separated ("": before leases
                                 # per part, the whole robot)

    @classmethod
    def from_result(cls, r: Result) -> "Record":
        return cls(execution_id=r.execution_id, holder=r.holder, label=r.label,
                   status=int(r.status), exit_code=r.exit_code, error=r.error,
                   started=r.started, finished=r.finished, duration_s=r.duration_s,
                   code_sha256=hashlib.sha256(r.code.encode("utf-8", "surrogatepass")).hexdigest(),
                   code=r.code, stdout_tail=r.stdout_tail, stderr_tail=r.stderr_tail,
                   truncated=r.truncated, dry_run=r.dry_run, replay_of=r.replay_of,
                   skills=" ".join(r.skills), skills_as_of=r.skills_as_of,
                   collisions="\n".join(r.collisions),
                   moved_objects="\n".join(r.moved_objects),
                   resources=" ".join(r.resources))


@dataclass(frozen=True)
class Page:
    records: list[Record]     # newest first
    total: int                # records matching the filters, across all pages


_COLUMNS = tuple(f.name for f in fields(Record))
_BOOLS = {f.name for f in fields(Record) if f.type == "bool"}
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL"}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f"{f.name} {_SQL_TYPES[f.type]} NOT NULL" for f in fields(Record))}
);
CREATE INDEX IF NOT EXISTS executions_holder ON executions (holder, seq);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status, seq);
CREATE INDEX IF NOT EXISTS executions_id ON executions (execution_id);
"""
_DEFAULTS = {"str": "''", "int": "0", "bool": "0", "float": "0.0"}


class History:
    """The newest ``max_records`` records in ``directory/history.sqlite3``."""

    def __init__(self, directory: str | os.PathLike, max_records: int) -> None:
        directory = Path(directory).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "history.sqlite3"
        self.max_records = max_records
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._add_new_columns()
        self._db.executescript(_SCHEMA)
        self._migrate(directory / "history.jsonl")

    def _add_new_columns(self) -> None:
        """A database written by an older version lacks the newer fields: add them, with
        their defaults (the old records keep every value they had)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(executions)")}
        if not have:
            return
        for f in fields(Record):
            if f.name not in have:
                self._db.execute(f"ALTER TABLE executions ADD COLUMN {f.name} "
                                 f"{_SQL_TYPES[f.type]} NOT NULL DEFAULT {_DEFAULTS[f.type]}")

    def _migrate(self, old: Path) -> None:
        """Import an old JSON-lines history once (a torn last line is skipped)."""
        if not old.exists():
            return
        records = []
        with open(old, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(Record(**json.loads(line)))
                except (ValueError, TypeError):
                    continue
        self._insert(records)
        old.rename(old.with_name(old.name + ".migrated"))

    def _insert(self, records: Iterable[Record]) -> None:
        rows = [tuple(asdict(r)[name] for name in _COLUMNS) for r in records]
        with self._lock:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    f"INSERT INTO executions ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
                self._db.execute(
                    "DELETE FROM executions WHERE seq <= (SELECT MAX(seq) FROM executions) - ?",
                    (self.max_records,))

    def append(self, record: Record) -> None:
        """Write one record (committed and synced when this returns); raises on failure."""
        self._insert([record])

    def page(self, offset: int = 0, limit: int = 0, holder: str = "",
             statuses: Sequence[int] = (), include_code: bool = False,
             execution_id: str = "") -> Page:
        """Newest first, ``limit`` 0 meaning all; code bodies only with ``include_code``."""
        where, args = [], []
        for column, value in (("holder", holder), ("execution_id", execution_id)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(int(s) for s in statuses)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        columns = [name if include_code or name != "code" else "'' AS code" for name in _COLUMNS]
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM executions{clause}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {', '.join(columns)} FROM executions{clause} ORDER BY seq DESC "
                f"LIMIT ? OFFSET ?", [*args, limit if limit > 0 else -1, max(0, offset)]).fetchall()
        return Page([Record(*_typed(row)) for row in rows], total)

    def get(self, execution_id: str) -> Record | None:
        """The record of ``execution_id``, with its code (None when not kept)."""
        found = self.page(limit=1, include_code=True, execution_id=execution_id).records
        return found[0] if found else None

    def newest(self, count: int = 0, include_code: bool = True) -> list[Record]:
        """Newest first; ``count`` 0 means all that are kept."""
        return self.page(limit=count, include_code=include_code).records

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _typed(row: tuple) -> tuple:
    """SQLite gives booleans back as integers."""
    return tuple(bool(v) if name in _BOOLS else v for name, v in zip(_COLUMNS, row))
