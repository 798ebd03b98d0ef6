"""Rewind from inside code: the robot goes back the way it came.

The node records the robot's measured motion (arm joints, base pose, gripper) and performs
the rewind itself, on the trusted side, while the code's own motion commands wait; the
code only asks. A rewind starts from where the robot is, runs the recorded path backwards
at no more than half of each speed cap through the same safety checks as any command, and
keeps the gripper as it is unless ``components`` names it (reopening drops what is held).
``components`` is a subset of "arm", "base", "gripper" (default: arm and base). Each move
returns a ``RewindResult``: ``success``, ``steps_rewound``, ``components_rewound``,
``error`` (why not, when ``success`` is False), ``message``, ``duration_s``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import RewindError
from .node_channel import NodeChannel
from .protocol import NodeMsg

REWIND_TIMEOUT_S = 600.0        # a rewind takes as long as the path back
QUERY_TIMEOUT_S = 5.0


@dataclass
class RewindResult:
    """What a rewind did. A rewind that was refused or stopped on the way comes back with
    ``success`` False and the reason in ``error`` (as the predecessor's did: no raise)."""

    success: bool
    steps_rewound: int = 0                  # waypoints back from the last one recorded
    components_rewound: list[str] = field(default_factory=list)
    error: str = ""
    message: str = ""                       # what was done, or why not
    duration_s: float = 0.0


class RewindAPI:
    def __init__(self, node: NodeChannel) -> None:
        self._node = node

    # ---------------------------------------------------------------- moves
    def reset_to_home(self, components: Sequence[str] | None = None,
                      dry_run: bool = False) -> RewindResult:
        """Back to where the lease began (target "start")."""
        return self._rewind("start", 0.0, components, dry_run)

    def rewind_to_execution_start(self, components: Sequence[str] | None = None,
                                  dry_run: bool = False) -> RewindResult:
        """Back to where this execution began."""
        return self._rewind("execution", 0.0, components, dry_run)

    def rewind_steps(self, steps: int, components: Sequence[str] | None = None,
                     dry_run: bool = False) -> RewindResult:
        """Back ``steps`` recorded waypoints (a waypoint is kept at most every 0.1 s, after
        the robot moved: about 0.01 rad of a joint or 1 cm of the base)."""
        return self._rewind("steps", float(steps), components, dry_run)

    def rewind_percentage(self, percentage: float, components: Sequence[str] | None = None,
                          dry_run: bool = False) -> RewindResult:
        """Back ``percentage`` (0..100] of the lease's recorded trajectory."""
        return self._rewind("fraction", float(percentage) / 100.0, components, dry_run)

    def rewind_to_safe(self, components: Sequence[str] | None = None,
                       dry_run: bool = False) -> RewindResult:
        """Back to the last waypoint inside the current safety limits."""
        return self._rewind("safe", 0.0, components, dry_run)

    # -------------------------------------------------------------- queries
    def get_status(self) -> dict[str, Any]:
        """``trajectory_length`` (waypoints recorded under this lease) and ``is_rewinding``."""
        return self._ask({"msg_type": int(NodeMsg.REWIND_STATUS)}, QUERY_TIMEOUT_S)

    def get_trajectory_info(self) -> dict[str, Any]:
        """``length``, ``duration_s`` (first to last waypoint), ``executions`` (how many
        started under this lease) and ``parts`` (which were recorded)."""
        return self._ask({"msg_type": int(NodeMsg.TRAJECTORY_INFO)}, QUERY_TIMEOUT_S)

    def clear_trajectory(self) -> bool:
        """Forget the recorded trajectory: where the robot is now becomes the start."""
        return bool(self._ask({"msg_type": int(NodeMsg.CLEAR_TRAJECTORY)},
                              QUERY_TIMEOUT_S).get("success"))

    # ------------------------------------------------------------ internals
    def _rewind(self, target: str, amount: float, components: Sequence[str] | None,
                dry_run: bool) -> RewindResult:
        reply = self._ask({"msg_type": int(NodeMsg.REWIND), "target": target, "amount": amount,
                           "parts": list(components or []), "dry_run": bool(dry_run)},
                          REWIND_TIMEOUT_S, refused_ok=True)
        if "success" not in reply:                      # invalid arguments: not a rewind
            raise RewindError(reply.get("error", f"invalid reply {reply!r}"))
        success = bool(reply["success"])
        return RewindResult(success, int(reply.get("steps_rewound", 0)),
                            list(reply.get("components_rewound", [])),
                            "" if success else str(reply.get("message", "")),
                            str(reply.get("message", "")), float(reply.get("duration_s", 0.0)))

    def _ask(self, msg: dict[str, Any], timeout_s: float, refused_ok: bool = False) -> dict[str, Any]:
        reply = self._node.request(msg, timeout_s, RewindError, "rewind")
        if "error" in reply and not (refused_ok and "success" in reply):
            raise RewindError(reply["error"])
        return reply
