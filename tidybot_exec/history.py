"""Finished executions on disk: an append-only JSON-lines file that survives restarts.

Each record is one line, flushed and fsynced as it is written, so a crash loses at most
the line being written (a torn last line is skipped on load). The file is bounded: once it
holds twice ``max_records`` lines it is compacted to the newest ``max_records`` by writing a
new file and renaming it over the old one (atomic on POSIX). Records never hold a lease token.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from .executor import Result


@dataclass
class Record:
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
    dry_run: bool = False          # absent from records written before dry runs existed

    @classmethod
    def from_result(cls, r: Result) -> "Record":
        return cls(execution_id=r.execution_id, holder=r.holder, label=r.label,
                   status=int(r.status), exit_code=r.exit_code, error=r.error,
                   started=r.started, finished=r.finished, duration_s=r.duration_s,
                   code_sha256=hashlib.sha256(r.code.encode("utf-8", "surrogatepass")).hexdigest(),
                   code=r.code, stdout_tail=r.stdout_tail, stderr_tail=r.stderr_tail,
                   truncated=r.truncated, dry_run=r.dry_run)


class History:
    """The newest ``max_records`` records, in memory and in ``directory/history.jsonl``."""

    def __init__(self, directory: str | os.PathLike, max_records: int) -> None:
        self.path = Path(directory).expanduser() / "history.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_records = max_records
        self._lock = threading.Lock()
        self._records: deque[Record] = deque(maxlen=max_records)
        self._lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                self._lines += 1
                try:
                    self._records.append(Record(**json.loads(line)))
                except (ValueError, TypeError):
                    continue      # a torn last line after a crash, or a foreign line

    def append(self, record: Record) -> None:
        line = json.dumps(asdict(record), ensure_ascii=False) + "\n"
        with self._lock:
            self._records.append(record)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._lines += 1
            if self._lines >= 2 * self.max_records:
                self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in self._records:
                f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self._records)

    def newest(self, count: int = 0) -> list[Record]:
        """Newest first; ``count`` 0 means all that are kept."""
        with self._lock:
            records = list(self._records)[::-1]
        return records[:count] if count > 0 else records
