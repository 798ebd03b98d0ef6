"""Rewinds: every way the robot is driven back along its recorded trajectory (no rclpy).

Four entry points, one way through (``_drive``): the rewind action (``run``), an
execution's ``on_failure: rewind`` (``undo``), ``reset_on_release`` (``to_lease_start``,
called by the service once the ended lease's code has stopped) and the code's own
``rewind.*`` calls (``for_code``). Each is a writer of the robot (writers.py) admitted by
the service like an execution, so an estop refuses its guard and cancels it before the hold,
and each ends with a hold when it moved and did not finish. The path itself — its plan and
its driver through a guard of its own — is rewind_path.py.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol, Sequence

from tidybot_sdk.config import SdkConfig

from tidybot_exec.execution import rewind_path as path
from tidybot_exec.execution.leases import RESOURCES, Binding
from tidybot_exec.execution.writers import (FROM_ACTION, FROM_CODE, FROM_FAILURE, REWIND,
                                            Writer, Writers)
from tidybot_exec.guard.hold import RobotHold
from tidybot_exec.guard.recorder import Recorder
from tidybot_exec.guard.relay import Guard

Hold = Callable[[], list]         # a hold of the parts a rewind may move
Progress = Callable[[float], None]
STOPPING_REWIND = "the execution is being stopped: no rewind"
# the execution's end waits this long for a rewind the code asked for to end after its
# cancel: a tick of its path, its hold (0.5 s at most a backend), its guard's close (2 s)
CODE_REWIND_JOIN_S = 5.0


class Host(Protocol):
    """What rewinds need of the execution service: its admission, registry and hold."""

    writers: Writers
    recorder: Recorder
    robot: SdkConfig

    def admit(self, kind: str, origin: str, lease_id: str, **fields: object
              ) -> tuple[Writer, Binding | None] | str: ...
    def enlist(self, origin: str, lease_token: str, **fields: object) -> Writer | str: ...
    def retire(self, writer: Writer, binding: Binding | None = None) -> None: ...
    def halted(self) -> str: ...
    def hold(self, parts: Sequence[str] = RESOURCES) -> list[str]: ...


class Running(Protocol):
    """What a rewind needs of the running execution it rewinds or serves."""

    recorder: Recorder
    lease: int | None
    lease_token: str

    @property
    def resources(self) -> tuple[str, ...]: ...   # the parts its lease holds
    @property
    def execution_id(self) -> str: ...
    @property
    def holder(self) -> str: ...
    @property
    def guard(self) -> Guard: ...


def held(parts: Sequence[str], resources: Sequence[str]) -> tuple[str, ...]:
    """The ``parts`` a lease on ``resources`` may rewind."""
    return tuple(p for p in parts if p in resources)


class Rewinds:
    def __init__(self, host: Host, log: Callable[[str], None],
                 changed: Callable[[], None]) -> None:
        self._host, self._log, self._changed = host, log, changed

    # ------------------------------------------------------------ entry points
    def run(self, request: path.RewindRequest, lease_id: str, progress: Progress,
            cancelled: threading.Event | None = None) -> path.Outcome:
        """The rewind action: along the lease's recorded trajectory. Refused while another
        writer drives one of its parts (code, or another rewind), while estopped and without
        the lease; bound to the lease
        like an execution (it keeps the lease alive and the next holder waits for its end).
        Cancelled (``cancelled`` set, an estop, the lease's end or shutdown) it stops at
        once and the robot holds; so does a rewind that fails."""
        admitted = self._host.admit(REWIND, FROM_ACTION, lease_id,
                                    **({"cancelled": cancelled} if cancelled else {}))
        if isinstance(admitted, str):
            return path.Outcome(False, admitted)
        writer, binding = admitted
        try:
            return self._drive(writer, self._host.recorder, binding.serial if binding else None,
                               request, writer.resources, self._host.robot,
                               lambda: self._host.hold(writer.resources), progress)
        finally:
            self._host.retire(writer, binding)

    def undo(self, running: Running, drives_robot: bool) -> str:
        """on_failure "rewind": the failed execution's own motion is rewound to where it
        began, then the robot holds; returns what was done (for the result's error)."""
        if not drives_robot:
            return "on_failure: a dry run's private robot ended with it: nothing to rewind"
        host = self._host
        parts = running.resources
        writer = host.enlist(FROM_FAILURE, running.lease_token, holder=running.holder,
                             execution_id=running.execution_id, resources=parts)
        if isinstance(writer, str):
            return f"on_failure: not rewound ({writer})"
        try:
            outcome = self._drive(writer, running.recorder, running.lease, path.RewindRequest(
                "execution", parts=held(path.DEFAULT_PARTS, parts),
                execution_id=running.execution_id), parts, host.robot, lambda: host.hold(parts))
        finally:
            host.retire(writer)
        if not outcome.success:
            return f"on_failure: not rewound: {outcome.message}"
        return "; ".join([f"on_failure: {outcome.message}", *host.hold(parts)])

    def to_lease_start(self, writer: Writer, lease: int, resources: tuple[str, ...]
                       ) -> path.Outcome:
        """reset_on_release's rewind of the ended lease's parts (``resources``), as
        ``writer`` (admitted by the service)."""
        return self._drive(writer, self._host.recorder, lease, path.RewindRequest(
            "start", parts=held(path.DEFAULT_PARTS, resources)), resources,
            self._host.robot, lambda: self._host.hold(resources))

    def for_code(self, running: Running, msg: dict) -> dict:
        """A rewind the code asked for (NodeMsg.REWIND), driven on the code's upstream (the
        private robot of a dry run) while the code's own motion waits (Guard.code_paused).
        Its cancel is the execution's stop; the execution's end joins it (``join``)."""
        try:
            request = path.RewindRequest.checked(
                str(msg.get("target", "start")), float(msg.get("amount", 0.0)),
                [str(p) for p in msg.get("parts") or []], bool(msg.get("dry_run", False)))
        except (TypeError, ValueError) as exc:
            request = f"invalid rewind request: {exc}"
        if isinstance(request, str):
            return {"error": request}
        host, guard = self._host, running.guard
        # registered before the checks, so a stop or an estop that comes after them reaches it
        writer = host.writers.add(REWIND, FROM_CODE, holder=running.holder,
                                  lease_token=running.lease_token, resources=running.resources,
                                  execution_id=running.execution_id, cancelled=guard.stopping)
        try:
            if host.halted() or guard.stopping.is_set():
                outcome = path.Outcome(False, host.halted() or STOPPING_REWIND)
            else:
                self._changed()
                with guard.code_paused():
                    outcome = self._drive(writer, running.recorder, running.lease, request,
                                          running.resources, guard.upstream,
                                          self._hold_on(guard.upstream, running.resources),
                                          for_guard=guard)
        finally:
            host.retire(writer)
        return {"success": outcome.success, "message": outcome.message,
                # steps back: the first waypoint passed is where the robot last was recorded
                "steps_rewound": max(0, outcome.waypoints - 1), "duration_s": outcome.duration_s,
                "components_rewound": list(request.parts)}

    # ------------------------------------------------------------ stopping
    def cancel(self, lease_token: str | None = None, execution_id: str | None = None) -> bool:
        """Cancel the running rewinds (only those bound to ``lease_token``, or run for
        ``execution_id``, when given); whether there was one. Takes no lock."""
        rewinds = self._host.writers.rewinds(lease_token, execution_id)
        for writer in rewinds:
            writer.cancel()
        return bool(rewinds)

    def join(self, execution_id: str) -> list[str]:
        """Before the hold that ends execution ``execution_id`` and its lease's release: the
        rewind its code asked for is cancelled and has ended, or is ended here after
        CODE_REWIND_JOIN_S — from then on it can neither move nor hold the robot, so nothing
        of it lands on the next holder. Returns the problems."""
        problems = []
        for writer in self._host.writers.rewinds(execution_id=execution_id, origin=FROM_CODE):
            writer.cancel()
            if not writer.done.wait(CODE_REWIND_JOIN_S):
                problems.append(f"the rewind the code asked for did not end within "
                                f"{CODE_REWIND_JOIN_S:g}s of its cancel: its motion is refused")
                self._log(problems[-1])
            writer.end()
        return problems

    # ------------------------------------------------------------ the one way through
    def _drive(self, writer: Writer, recorder: Recorder, lease: int | None,
               request: path.RewindRequest, resources: Sequence[str], upstream: SdkConfig,
               hold: Hold, progress: Progress = lambda fraction: None,
               for_guard: Guard | None = None) -> path.Outcome:
        """Refuse a rewind of a part the lease does not hold (``resources``: another holder
        may be driving it). Plan along ``recorder``'s trajectory of ``lease`` and, unless a dry run, drive it
        as ``writer`` (its guard registered, cancelled by ``writer.cancelled``) on
        ``upstream`` (the real robot, or a dry run's private one); what was undone is dropped
        from the trajectory. A rewind that moved and did not finish ends with ``hold`` (of
        that robot; not once its writer was ended by its owner), its problems named in the
        message. ``for_guard``: the code's guard it drives for, whose refusal (any stop of
        the execution, a timeout too) refuses the rewind's guard at once."""
        others = [p for p in request.parts if p not in resources]
        if others:
            return path.Outcome(False, f"refused: the rewind would move the {' and the '.join(others)}, "
                                       f"which this lease does not hold (it holds "
                                       f"{', '.join(resources)}); ask for parts "
                                       f"{list(held(request.parts, resources))}")
        if not request.parts:
            return path.Outcome(True, "nothing to rewind: this lease holds none of the parts "
                                      "a rewind moves")
        planned = path.plan(recorder.trajectory(lease), recorder.current(), request,
                            upstream.limits)
        if isinstance(planned, str):
            return path.Outcome(False, planned)
        if request.dry_run:
            return path.Outcome(True, f"dry run: the path back to "
                                      f"{path.describe_target(request)} passes "
                                      f"{planned.waypoints} waypoint(s) in about "
                                      f"{planned.duration_s:.1f}s; nothing moved",
                                planned.waypoints, planned.duration_s)
        started = time.monotonic()
        with recorder.paused(request.parts):
            try:
                outcome = path.drive(upstream, planned, writer.cancelled, progress, self._log,
                                     lambda guard: self._registered(writer, guard, for_guard))
            except Exception as exc:  # noqa: BLE001 - reported; the robot is held below
                outcome = path.Outcome(False, f"the rewind failed: {exc!r}",
                                       duration_s=time.monotonic() - started)
        recorder.truncate(lease, outcome.keep or len(recorder.trajectory(lease)))
        if not outcome.success:
            outcome.message = "; ".join([outcome.message, *writer.unless_ended(hold)])
        self._log(f"rewind to {path.describe_target(request)}: {outcome.message}")
        return outcome

    @staticmethod
    def _registered(writer: Writer, guard: Guard, for_guard: Guard | None) -> None:
        writer.guard(guard)
        if for_guard is not None:
            for_guard.refuse_with(guard)

    def _hold_on(self, upstream: SdkConfig, parts: Sequence[str]) -> Hold:
        """A hold of ``parts`` of the robot at ``upstream`` (a dry run's private one too)."""
        def hold() -> list[str]:
            robot_hold = RobotHold(upstream, self._log)
            try:
                return [f"hold failed: {p}" for p in robot_hold(parts)]
            finally:
                robot_hold.close()
        return hold
