"""The one shape of an execution (no rclpy): what a goal asks (``Request``) and how it
ended (``Status``, ``Result``). The ROS messages (ros/convert.py) and the history rows
(history.py) are each made from a Result in one place."""
from __future__ import annotations

import signal
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidybot_exec.execution.dry_run import Seed


class Status(IntEnum):
    SUCCEEDED = 0   # exited 0
    FAILED = 1      # raised or exited non-zero
    TIMEOUT = 2
    CANCELED = 3    # cancel, execution/stop, estop, lease loss, shutdown
    REJECTED = 4    # never ran
    ERROR = 5       # the server could not run it


ON_FAILURE = ("", "hold", "rewind")


@dataclass
class Request:
    code: str
    timeout_s: float = 0.0
    label: str = ""
    holder: str = ""
    dry_run: Seed | None = None     # set: run against a private simulator seeded with this
    on_failure: str = ""            # "rewind": a failed or timed-out run's motion is undone
    replay_of: str = ""             # the finished execution whose code this runs again
    skills_as_of: int | None = None  # the skill store as the goal saw it (None: at its start)


@dataclass
class Result:
    execution_id: str
    status: Status
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    error: str = ""
    duration_s: float = 0.0
    started: float = 0.0          # wall clock (time.time())
    finished: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    label: str = ""
    holder: str = ""
    code: str = ""
    dry_run: bool = False
    replay_of: str = ""
    skills: list[str] = field(default_factory=list)     # NAME@VERSION imported, in order
    skills_as_of: int = 0           # the store's newest row when it started: what a replay sees
    collisions: list[str] = field(default_factory=list)      # on a simulator (world_watch.py)
    moved_objects: list[str] = field(default_factory=list)   # on a simulator (world_watch.py)
    resources: list[str] = field(default_factory=list)       # the parts its lease held


def new_execution_id() -> str:
    return uuid.uuid4().hex[:12]


def unstarted(request: Request, status: Status, reason: str) -> Result:
    """The result of a request that never ran (REJECTED or ERROR)."""
    now = time.time()
    return Result(execution_id=new_execution_id(), status=status, error=reason,
                  started=now, finished=now, label=request.label, holder=request.holder,
                  code=request.code, dry_run=request.dry_run is not None,
                  replay_of=request.replay_of)


def exit_description(code: int) -> str:
    """How a process ended, for ``error`` ("" for exit 0); any signal number works, named
    or not (real-time signals have no name in ``signal.Signals``)."""
    if code >= 0:
        return f"exited with code {code}" if code else ""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = (f"SIGRTMIN+{-code - signal.SIGRTMIN}"
                if signal.SIGRTMIN <= -code <= signal.SIGRTMAX else "unnamed")
    return f"killed by signal {-code} ({name})"
