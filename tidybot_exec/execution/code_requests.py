"""The code → node channel: one handler table, every kind bounded (no rclpy).

Submitted code asks the node for what only the trusted side has — a rewind, the recorded
trajectory, camera frames, a skill's source — over a socket of its guard
(``tidybot_sdk.protocol.NodeMsg``). The code is untrusted and the node is not, so this is a
way for the code to make the trusted process work (DESIGN §12.0; docs/security.md):

- only the kinds in the table are answered, each by its handler;
- each kind is bounded in **rate per execution** (a token bucket: ``per_s`` sustained,
  ``burst`` at once); a request over it is refused at once with a message that says so,
  before the handler runs — a loop of ``get_image`` cannot make the node decode JPEGs
  without end;
- each kind is bounded in **time** by what it does (``TIME_BOUNDS``, also in the docs);
  the ones that wait end when the execution is stopped (``stopping``: a rewind is
  cancelled by it), and nothing is answered once it is set.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from tidybot_sdk.protocol import NodeMsg

Handler = Callable[[dict[str, Any]], dict[str, Any]]
STOPPING_REFUSAL = "the execution is being stopped: the node answers no more of its requests"


@dataclass(frozen=True)
class Bound:
    per_s: float        # sustained requests per second, per execution
    burst: int          # how many may come at once
    time: str           # what bounds one request's time (for the docs)


BOUNDS: dict[NodeMsg, Bound] = {
    NodeMsg.REWIND: Bound(2.0, 4, "the path back (at most the recorded trajectory at 0.45 "
                                  "of the caps); cancelled by the execution's stop"),
    NodeMsg.REWIND_STATUS: Bound(50.0, 50, "one count over at most 20 000 waypoints"),
    NodeMsg.TRAJECTORY_INFO: Bound(5.0, 5, "one copy of at most 20 000 waypoints"),
    NodeMsg.CLEAR_TRAJECTORY: Bound(5.0, 5, "one pass over at most 20 000 waypoints"),
    NodeMsg.CAMERAS: Bound(10.0, 10, "camera_wait_s (2 s) for the camera list"),
    NodeMsg.CAMERA_FRAME: Bound(60.0, 30, "camera_wait_s (2 s) for a fresh frame, one "
                                          "decode, within camera_budget_mb"),
    NodeMsg.SKILL: Bound(20.0, 50, "one read of the skill store"),
}


class _Bucket:
    """Token bucket: ``burst`` tokens, refilled at ``per_s``."""

    def __init__(self, bound: Bound, clock: Callable[[], float]) -> None:
        self._bound, self._clock = bound, clock
        self._tokens, self._at = float(bound.burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self._bound.burst),
                           self._tokens + (now - self._at) * self._bound.per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class CodeRequests:
    """One execution's requests to the node, answered by ``handlers`` (a kind of BOUNDS
    each) within the bounds; called in its guard's node thread, one request at a time."""

    def __init__(self, handlers: Mapping[NodeMsg, Handler], stopping: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        missing = set(handlers) - set(BOUNDS)
        assert not missing, f"no bound for {missing}"
        self._handlers, self._stopping = handlers, stopping
        self._buckets = {kind: _Bucket(BOUNDS[kind], clock) for kind in handlers}

    def __call__(self, msg: dict[str, Any]) -> dict[str, Any]:
        kind = msg.get("msg_type")
        handler = self._handlers.get(kind) if isinstance(kind, int) else None
        if handler is None:
            return {"error": f"unknown request {kind!r} (tidybot_sdk.protocol.NodeMsg)"}
        if self._stopping.is_set():
            return {"error": STOPPING_REFUSAL}
        if not self._buckets[kind].take():
            bound = BOUNDS[NodeMsg(kind)]
            return {"error": f"too many {NodeMsg(kind).name} requests: at most "
                             f"{bound.per_s:g} per second ({bound.burst} at once) per "
                             f"execution; this one was refused", "rate_limited": True}
        return handler(msg)
