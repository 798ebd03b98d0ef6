"""The per-execution process cap: a pids cgroup where one can be made (stdlib only).

``RLIMIT_NPROC`` counts processes per user and does not bind uid 0; a cgroup's
``pids.max`` caps an execution's processes whoever the user is. Named after the execution
(never a PID that could be reused) and removed at its end, also when the stop path kills.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


class ProcessCap:
    """A pids cgroup for one execution, where one can be created; else nothing (the
    sandbox's RLIMIT_NPROC still binds every user but root)."""

    def __init__(self, name: str, max_processes: int) -> None:
        self.path: Path | None = None
        for parent in _pids_cgroups():
            try:
                path = parent / name
                path.mkdir()
                (path / "pids.max").write_text(str(max_processes))
            except OSError:
                continue
            self.path = path
            break

    def join(self, pid: int = 0) -> None:
        """Move process ``pid`` (0: the caller), and so all it starts, into the cgroup."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Remove the cgroup; a killed tree may take a moment to leave it (EBUSY)."""
        for _ in range(50):
            if self.path is None:
                return
            try:
                self.path.rmdir()
                self.path = None
            except FileNotFoundError:
                self.path = None
            except OSError:
                time.sleep(0.01)


def _pids_cgroups() -> list[Path]:
    """Writable places for a pids cgroup: v1's pids hierarchy, or v2 with pids enabled."""
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            found.append(Path("/sys/fs/cgroup/pids") / path.lstrip("/"))
        elif controllers == "":
            base = Path("/sys/fs/cgroup") / path.lstrip("/")
            try:
                if "pids" in (base / "cgroup.subtree_control").read_text().split():
                    found.append(base)
            except OSError:
                pass
    return [p for p in found if os.access(p, os.W_OK)]
