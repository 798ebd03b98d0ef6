"""The trajectory recorder: where the robot has been, for rewind (trusted side, no rclpy).

The node feeds it the backends' *measured* state (``follow``: the live-state feed); code cannot
write to it. A waypoint (arm joints, base pose, gripper position) is kept at most every
``PERIOD_S`` and only once some part moved past its threshold since the last one, as the
predecessor did, tagged with the lease and the execution it happened under. Leases are per
part (DESIGN §12.3): each part is recorded with the lease that holds it (and the execution
that runs under it), so two agents driving the arm and the base at once each get their own
trajectory; a waypoint carries every part's pose, and a rewind moves only its lease's
parts. Two waypoints are always kept whatever moved: one at the lease's grant and one at
each execution's start, so a rewind to "start" or "execution" reaches those poses however
small the motion. The count is bounded: past ``max_waypoints`` the oldest unmarked waypoint
is dropped.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Collection, Hashable, Iterator, Protocol

from tidybot_sdk import kinematics as kin
from tidybot_sdk.protocol import RESOURCES

PERIOD_S = 0.1              # at most one waypoint per this
JOINT_STEP_RAD = 0.01       # a waypoint once any joint moved this far from the last one
BASE_STEP_M = 0.01
BASE_TURN_RAD = 0.02
GRIPPER_STEP = 5            # of 0..255
KEYS = {"arm": "q", "base": "base", "gripper": "gripper"}     # a part's field in a Waypoint
MAX_WAYPOINTS = 20_000      # 2000 s of continuous motion at PERIOD_S; ~4 MB


@dataclass(frozen=True)
class Waypoint:
    """One measured pose of the robot; a part is None when its state was never seen."""

    t: float                                   # monotonic time it was taken
    q: tuple[float, ...] | None                # arm joints, rad
    base: tuple[float, float, float] | None    # base x, y (m), theta (rad), odometry frame
    gripper: int | None                        # 0 open .. 255 closed
    lease: Hashable                            # the lease it was taken under (None: none)
    execution: str                             # the execution that was running ("" none)
    mark: str = ""                             # "lease": at the grant, "execution": at its start


class Feed(Protocol):
    """A live-state feed (execution/live_state.py LiveState)."""

    def on(self, name: str, handler: Callable[[dict[str, Any]], None]) -> None: ...


class Recorder:
    """Waypoints of the robot's measured motion; thread-safe (fed from the state threads,
    read by the rewind)."""

    def __init__(self, max_waypoints: int = MAX_WAYPOINTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_waypoints, self._clock = max_waypoints, clock
        self._lock = threading.Lock()
        self._waypoints: list[Waypoint] = []
        self._latest: dict[str, Any] = {"q": None, "base": None, "gripper": None}
        # who records each part: the lease that holds it and the execution running under it
        self._owner: dict[str, tuple[Hashable, str]] = {part: (None, "") for part in RESOURCES}
        self._last: dict[Hashable, Waypoint] = {}     # each lease's newest waypoint
        self._paused = {part: 0 for part in RESOURCES}   # parts a rewind is moving now

    # ------------------------------------------------------------- feeding
    def follow(self, live: "Feed") -> None:
        """Record from ``live`` (execution/live_state.py: the node's feed, or a dry run's)."""
        for backend in ("arm", "base", "gripper"):
            live.on(backend, lambda state, backend=backend: self.observe(backend, state))

    def observe(self, backend: str, state: dict[str, Any]) -> None:
        """A state message of ``backend`` ("arm", "base" or "gripper")."""
        try:
            if backend == "arm":
                value: Any = tuple(float(v) for v in state["q"])
            elif backend == "base":
                value = tuple(float(v) for v in state["base_pose"])
            else:
                value = int(state["position"])
        except (KeyError, TypeError, ValueError):
            return                                   # not a state message: nothing to keep
        key = KEYS[backend]
        with self._lock:
            if self._latest[key] is None:      # first seen: it was there all along
                self._waypoints = [w if getattr(w, key) is not None else replace(w, **{key: value})
                                   for w in self._waypoints]
                self._index()
            self._latest[key] = value
            lease, execution = self._owner[backend]
            last = self._last.get(lease)
            if self._paused[backend] or (last is not None and (
                    self._clock() - last.t < PERIOD_S or not self._moved(last, key))):
                return
            self._append("", lease, execution)

    def begin_lease(self, lease: Hashable, others: Collection[Hashable] = (),
                    parts: Collection[str] = RESOURCES) -> None:
        """A lease of ``parts`` was granted: the trajectories of earlier leases are forgotten
        but those of ``others`` (leases on other parts still held, or draining), and a
        waypoint is kept where this one begins. A part an execution is moving meanwhile (one
        under no lease, or draining) stays recorded under that execution's lease."""
        with self._lock:
            for part in parts:
                if not self._owner[part][1]:
                    self._owner[part] = (lease, "")
            self._waypoints = [w for w in self._waypoints if w.lease == lease or w.lease in others]
            self._index()
            self._append("lease", lease, "")

    def begin_execution(self, execution_id: str, lease: Hashable,
                        parts: Collection[str] = RESOURCES) -> None:
        """``execution_id`` runs under ``lease`` on ``parts``: what they do is its."""
        with self._lock:
            for part in parts:
                self._owner[part] = (lease, execution_id)
            self._append("execution", lease, execution_id)

    def end_execution(self, execution_id: str) -> None:
        with self._lock:
            for part, (lease, execution) in self._owner.items():
                if execution == execution_id:
                    self._owner[part] = (lease, "")

    @contextmanager
    def paused(self, parts: Collection[str] = RESOURCES) -> Iterator[None]:
        """Record nothing of ``parts`` meanwhile (a rewind's own motion is not a step to
        undo); the other parts — another agent's — are recorded as ever."""
        with self._lock:
            for part in parts:
                self._paused[part] += 1
        try:
            yield
        finally:
            with self._lock:
                for part in parts:
                    self._paused[part] -= 1

    # ------------------------------------------------------------- reading
    def trajectory(self, lease: Hashable) -> list[Waypoint]:
        """The waypoints of ``lease``, oldest first."""
        with self._lock:
            return [w for w in self._waypoints if w.lease == lease]

    def length(self, lease: Hashable) -> int:
        """How many waypoints ``lease`` has (no copy of them)."""
        with self._lock:
            return sum(1 for w in self._waypoints if w.lease == lease)

    def current(self) -> Waypoint:
        """Where the robot is now, as far as the recorder has seen (not kept)."""
        with self._lock:
            return self._waypoint("", None, "")

    def clear(self, lease: Hashable) -> int:
        """Forget ``lease``'s trajectory but where the robot is now, which becomes its
        start; returns how many waypoints were dropped (the SDK's clear_trajectory)."""
        with self._lock:
            before = len(self._waypoints)
            self._waypoints = [w for w in self._waypoints if w.lease != lease]
            dropped = before - len(self._waypoints)
            self._index()
            owner = next((o for o in self._owner.values() if o[0] == lease), None)
            if owner is not None:
                self._append("lease", *owner)
            return dropped

    def truncate(self, lease: Hashable, keep: int) -> None:
        """Keep only the first ``keep`` waypoints of ``lease`` (a rewind undid the rest)."""
        with self._lock:
            mine = [w for w in self._waypoints if w.lease == lease]
            dropped = {id(w) for w in mine[max(1, keep):]}
            self._waypoints = [w for w in self._waypoints if id(w) not in dropped]
            self._index()

    # ----------------------------------------------------------- internals
    def _waypoint(self, mark: str, lease: Hashable, execution: str) -> Waypoint:
        """Where the robot is, under ``lease`` and ``execution``."""
        latest = self._latest
        return Waypoint(self._clock(), latest["q"], latest["base"], latest["gripper"],
                        lease, execution, mark)

    def _append(self, mark: str, lease: Hashable, execution: str) -> None:
        self._waypoints.append(waypoint := self._waypoint(mark, lease, execution))
        self._last[lease] = waypoint
        if len(self._waypoints) > self.max_waypoints:
            oldest = next((i for i, w in enumerate(self._waypoints) if not w.mark), 0)
            del self._waypoints[oldest]

    def _index(self) -> None:
        """Each lease's newest waypoint, again (after waypoints were dropped or replaced)."""
        self._last = {w.lease: w for w in self._waypoints}

    def _moved(self, last: Waypoint, key: str) -> bool:
        """Whether the part ``key`` (a Waypoint field) moved past its threshold since ``last``."""
        now, then = self._latest[key], getattr(last, key)
        if now is None:
            return False
        if then is None:
            return True
        if key == "q":
            return max(abs(a - b) for a, b in zip(now, then)) > JOINT_STEP_RAD
        if key == "base":
            return (math.hypot(now[0] - then[0], now[1] - then[1]) > BASE_STEP_M
                    or abs(kin.wrap_angle(now[2] - then[2])) > BASE_TURN_RAD)
        return abs(now - then) > GRIPPER_STEP
