"""What a run on a simulator did to its world: the robot's collisions and the objects it
moved (ExecuteCode.Result ``collisions`` and ``moved_objects``, DESIGN §12.2).

The simulator's world snapshot (its camera server's ``get_world``, the same one a dry run
is seeded from) carries the objects' poses and a log of the robot's contacts with static
bodies, each stamped with the simulator's monotonic clock (the node's, on one machine).
A watch takes the objects at the start, looks at the log every ``PERIOD_S`` while the code
runs — the first collision stops the code through ``on_collision`` — and compares the
objects at the end. On hardware there is no world to ask (``world`` answers None) and
both lists stay empty.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable

import numpy as np

World = Callable[[float], "dict[str, Any] | None"]     # (timeout s) -> snapshot or None

PERIOD_S = 0.2             # how often the log is read while the code runs
ASK_TIMEOUT_S = 1.0        # one get_world's longest wait
MOVED_M = 0.01             # an object moved by more than this ...
TURNED_RAD = 0.1           # ... or turned by more than this is reported


def collision_line(entry: dict[str, Any], started: float) -> str:
    """One collision as ExecuteCode.Result says it."""
    return (f"{entry['link']} hit {entry['body']} at t={float(entry['at']) - started:.2f} s, "
            f"{float(entry['depth']):.3f} m deep")


def _poses(snapshot: dict[str, Any]) -> dict[str, np.ndarray]:
    return {str(o["name"]): np.asarray(o["pose"], dtype=float).reshape(4, 4)
            for o in snapshot.get("objects", [])}


def moved_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The objects of ``before`` that moved or turned beyond the thresholds by ``after``."""
    start, end = _poses(before), _poses(after)
    lines = []
    for name, a in start.items():
        b = end.get(name)
        if b is None:
            continue
        moved = float(np.linalg.norm(b[:3, 3] - a[:3, 3]))
        cos = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
        turned = math.acos(max(-1.0, min(1.0, float(cos))))
        if moved > MOVED_M or turned > TURNED_RAD:
            to = ", ".join(f"{v:.3f}" for v in b[:3, 3])
            lines.append(f"{name} moved {moved:.3f} m, turned {turned:.2f} rad, to [{to}]")
    return lines


class WorldWatch:
    """Watches one execution's world from ``started`` (monotonic) until ``finish``."""

    def __init__(self, world: World, started: float, on_collision: Callable[[str], None],
                 at_start: dict[str, Any] | None = None) -> None:
        """``at_start``: the world as the code found it when known (a dry run's seed), else
        the first look is taken for it."""
        self._world, self._started, self._on_collision = world, started, on_collision
        self._first: dict[str, Any] | None = at_start
        self._last: dict[str, Any] | None = None
        self._told = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="world-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            snapshot = self._world(ASK_TIMEOUT_S)
            if snapshot is not None:
                self._take(snapshot, tell=True)
            self._stop.wait(PERIOD_S)

    def _take(self, snapshot: dict[str, Any], tell: bool) -> None:
        """Keep ``snapshot`` as the newest; ``tell``: a look of the running code's, which
        comes too late once ``finish`` began (its own world is newer)."""
        with self._lock:
            if tell and self._stop.is_set():
                return
            if self._first is None:
                self._first = snapshot
            self._last = snapshot
            hits = self._collisions(snapshot)
            tell = tell and bool(hits) and not self._told
            self._told = self._told or tell
        if tell:
            self._on_collision(hits[0])

    def _collisions(self, snapshot: dict[str, Any]) -> list[str]:
        return [collision_line(c, self._started) for c in snapshot.get("collisions", [])
                if float(c.get("at", -math.inf)) >= self._started]

    def finish(self, at_end: dict[str, Any] | None = None) -> tuple[list[str], list[str]]:
        """(collisions, moved objects) once the code has ended: from ``at_end`` (the world a
        dry run's simulator left as it was ended; a look in flight is not waited for), else
        from one last look (after the one in flight, if any)."""
        self._stop.set()
        if at_end is None:
            self._thread.join(ASK_TIMEOUT_S + 0.5)
            at_end = None if self._thread.is_alive() else self._world(ASK_TIMEOUT_S)
        if at_end is not None:
            self._take(at_end, tell=False)
        with self._lock:
            first, last = self._first, self._last
        if first is None or last is None:
            return [], []
        return self._collisions(last), moved_lines(first, last)
