"""The execution service: leases, executions and history with one owner (no rclpy).

Every goal comes here and every execution ends here, exactly once, in ``finish``:

    child tree dead  →  robot commanded to hold  →  record written  →  lease unbound  →  result

(the hold only after an abnormal end, and only for code that drove the real robot). Nothing
that can fail on the way — feedback publishing, the history write, a backend that does not
acknowledge the hold — skips a later step; each failure is logged and named in the
result's ``error``.

The lease and the execution are bound atomically at admission, under one lock with the
lease's end: a lease that ends before admission refuses the goal; one that ends after it
stops the code, and the next holder is granted only once ``finish`` has given the binding
back, i.e. after the code is dead and the hold was commanded (leases.py: draining).

An estop kills the code without grace, commands every backend to hold and *latches*: goals
are refused until ``reset_estop``.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tidybot_exec.cameras.for_code import CAMERA_MSGS, CameraSettings, CodeCameras, Source
from tidybot_exec.cameras.source import ArmTrack, CameraServerSource
from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution.history import History, Page, Record
from tidybot_exec.execution.launchers import Launched, launch_cold
from tidybot_exec.execution.leases import Binding, LeaseManager
from tidybot_exec.execution.records import ON_FAILURE, Request, Result, Status, unstarted
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.execution.skills import MAX_DRY_RUNS, MAX_NAME, Saved, SkillStore, check
from tidybot_exec.execution.supervision import Execution, Feedback
from tidybot_exec.execution.validation import duration_error, validate
from tidybot_exec.execution.warm import WarmPool
from tidybot_exec.guard import rewind
from tidybot_exec.guard.hold import RobotHold
from tidybot_exec.guard.recorder import Recorder, RecorderFeed
from tidybot_exec.sim import CAMERA_SOCKET
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.protocol import NodeMsg

Hold = Callable[[], list]          # commands stop-and-hold; returns the problems
Log = Callable[[str], None]
SHUTDOWN_REASON = "node shutting down"
ESTOP_REASON = "emergency stop"
ESTOPPED_REFUSAL = "estopped: call estop/reset"
STOPPING_REWIND = "the execution is being stopped: no rewind"


@dataclass(frozen=True)
class Snapshot:
    """What execution/status and /diagnostics show, taken under the service's lock."""

    current: Execution | None
    stopping: bool
    last: Result | None
    estopped: bool
    hold_problem: str          # the last stop-and-hold that failed ("" once one succeeds)
    rewinding: bool = False
    resetting: bool = False


@dataclass
class _Running:
    execution: Execution
    binding: Binding | None
    lease_token: str
    recorder: Recorder           # the node's, or a dry run's own (its private robot's motion)
    feed: RecorderFeed | None    # a dry run's recorder's
    cameras: CodeCameras         # the code's camera requests (a dry run: its private ones)
    lease: int | None = None     # the binding's serial: what the trajectory is tagged with
    imported: list[str] = field(default_factory=list)   # NAME@VERSION, in import order


@dataclass
class _Rewinding:
    cancelled: threading.Event
    lease_token: str
    execution_id: str = ""      # an on_failure rewind: its execution's cancel and stop end it


class ExecutionService:
    def __init__(self, settings: ExecutorSettings, history: History, hold: Hold,
                 policy: LeasePolicy = LeasePolicy(), log: Log = lambda line: None,
                 on_change: Callable[[], None] = lambda: None,
                 on_lease_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, cameras: Source | None = None,
                 camera_settings: CameraSettings = CameraSettings(),
                 skills: SkillStore | None = None) -> None:
        self.settings, self.history, self.policy = settings, history, policy
        self.skills = skills if skills is not None else SkillStore(history.path.parent)
        self._hold, self._log, self._on_change = hold, log, on_change
        self._on_lease_change = on_lease_change
        self._cond = threading.Condition()
        self._running: _Running | None = None
        self._last: Result | None = None
        self._estopped = False
        self._closing = False
        self._hold_problem = ""
        self._rewinding: _Rewinding | None = None
        self._resetting = False         # reset_on_release: a reset is pending or running
        self.robot = SdkConfig.from_dict(json.loads(settings.sdk_config_json))
        self.cameras, self.camera_settings = cameras, camera_settings
        self.recorder = Recorder()
        self._feed = RecorderFeed(self.robot, self.recorder)
        self.pool = WarmPool(settings, log) if settings.bwrap and settings.warm_worker else None
        self.leases = LeaseManager(
            default_ttl_s=policy.default_ttl_s, max_lease_s=policy.max_lease_s,
            max_wait_s=policy.max_wait_s, on_end=self._lease_ended,
            on_change=on_lease_change, on_grant=self.recorder.begin_lease,
            keep_after_end=policy.reset_on_release, clock=clock)

    # ------------------------------------------------------------- admission
    def authorize(self, lease_id: str) -> tuple[str, str]:
        """(holder, refusal reason) for a request carrying ``lease_id``."""
        holder = self.leases.holder_of(lease_id) if lease_id else None
        if holder is not None or not self.policy.require_lease:
            return holder or "", ""
        if not lease_id:
            return "", "no lease: call lease/acquire and pass its lease_id"
        return "", "invalid lease: expired, released or not the current one; acquire again"

    def start(self, request: Request, lease_id: str, feedback: Feedback) -> Execution | Result:
        """Start ``request`` under ``lease_id`` or return the REJECTED/ERROR result saying
        why not. The estop latch, the lease binding and the one-at-a-time check are one step."""
        refusal = self._replayed(request)
        verdict = validate(request.code, self.settings.max_code_bytes)
        refusal = (refusal or verdict.error or duration_error("timeout_s", request.timeout_s)
                   or ("" if request.on_failure in ON_FAILURE else
                       f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got "
                       f"{request.on_failure!r}"))
        if refusal:
            return unstarted(request, Status.REJECTED, refusal)
        # Taken before the lock (it may wait for the spare being prepared), given back if
        # the goal is refused.
        spare = (self.pool.take() if self.pool is not None and request.dry_run is None
                 and self._running is None else None)
        with self._cond:
            binding, refusal = self._admit(lease_id)
            request.holder = binding.holder if binding is not None else ""
            if refusal:               # a goal that never ran is answered, not kept in history
                if spare is not None:
                    self.pool.give_back(spare)
                return unstarted(request, Status.REJECTED, refusal)
            try:
                if request.skills_as_of is None:    # before the code can ask for a skill
                    request.skills_as_of = self.skills.latest_seq()
                execution = self._execution(request, feedback, verdict.warnings, spare)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the lease is given back
                self._unbind(binding)
                self._log(f"could not start an execution: {exc!r}")
                return unstarted(request, Status.ERROR, f"could not start the execution: {exc!r}")
            self._running = self._bound(execution, binding, lease_id)
        self._on_change()
        return execution

    def _replayed(self, request: Request) -> str:
        """A replay takes the code and the skill versions of the execution it replays;
        why it cannot ("" when it can, or is no replay)."""
        if not request.replay_of:
            return ""
        if request.code:
            return "replay_of runs that execution's code again: leave code empty"
        record = self.history.get(request.replay_of)
        if record is None:
            return (f"replay_of: no finished execution {request.replay_of!r} in the history "
                    f"(it keeps the newest {self.history.max_records})")
        request.code, request.skills_as_of = record.code, record.skills_as_of
        return ""

    def _bound(self, execution: Execution, binding: Binding | None, lease_id: str) -> _Running:
        """The running execution, its trajectory marked and its requests to the node served."""
        lease = binding.serial if binding else None
        recorder, feed = self.recorder, None
        cameras = CodeCameras(lambda: self.cameras, self.camera_settings, owned=False)
        if execution.request.dry_run is not None:
            recorder = Recorder()
            feed = RecorderFeed(execution.guard.upstream, recorder)
            recorder.begin_lease(lease)
            if self.cameras is not None:    # a robot without cameras has none in a dry run
                cameras = CodeCameras(lambda: self._private_cameras(execution),
                                      self.camera_settings, owned=True)
        recorder.begin_execution(execution.id, lease)
        running = _Running(execution, binding, lease_id if binding else "", recorder, feed,
                           cameras, lease)
        execution.guard.serve_node(lambda msg: self._from_code(running, msg))
        return running

    def _private_cameras(self, execution: Execution) -> Source:
        """A dry run's cameras: its private simulator's camera server, its arm for the mounts."""
        return CameraServerSource(f"ws+unix://{execution.workdir / CAMERA_SOCKET}",
                                  self.camera_settings.rate_hz,
                                  ArmTrack(execution.guard.upstream.arm["state"]),
                                  log=lambda line: self._log(f"dry run {execution.id}: {line}"),
                                  owns_arm=True)

    def _admit(self, lease_id: str) -> tuple[Binding | None, str]:
        """Under the lock: a new writer of the robot (code or a rewind) bound to the lease
        ``lease_id`` names, or why not (the binding is then given back already)."""
        binding = self.leases.begin_execution(lease_id) if lease_id else None
        refusal = self._halted() or (self.authorize(lease_id)[1] if binding is None
                                     and self.policy.require_lease else self._busy())
        if refusal:
            self._unbind(binding)
        return binding, refusal

    def _halted(self) -> str:
        """Why nothing may drive the robot now: shutting down or estopped ("" when neither)."""
        return SHUTDOWN_REASON if self._closing else ESTOPPED_REFUSAL if self._estopped else ""

    def _busy(self) -> str:
        """Why the robot has a writer already ("" when it has none); under the lock."""
        if self._running is not None:
            return (f"busy: execution {self._running.execution.id} is running; wait for it "
                    f"or stop it first")
        if self._rewinding is not None:
            return "busy: a rewind is running; wait for it or cancel it first"
        if self._resetting:
            return "busy: the robot is being reset to where the last lease began (reset_on_release)"
        return ""

    def _execution(self, request: Request, feedback: Feedback, warnings: list[str],
                   spare: Launched | None) -> Execution:
        """Start warm from ``spare``; if the spare turns out dead, start cold."""
        if spare is not None:
            try:
                return Execution(self.settings, request, spare, feedback, warnings, self._log)
            except Exception as exc:  # noqa: BLE001 - the spare is discarded; cold still works
                self._log(f"warm worker {spare.id} was unusable ({exc!r}); starting cold")
        return Execution(self.settings, request, launch_cold(self.settings, request, self._log),
                         feedback, warnings, self._log)

    # -------------------------------------------------------------- the end
    def finish(self, execution: Execution) -> Result:
        """Wait for ``execution`` and end it: the one path every execution ends through.
        Every step runs whatever the steps before it did; a step that fails is named in the
        result's ``error`` (and the record's)."""
        with self._cond:
            running = self._running
            assert running is not None and running.execution is execution, "not the current execution"
        problems: list[str] = []
        try:
            result = execution.wait()           # exception-safe itself: this is a last resort
        except Exception as exc:  # noqa: BLE001 - a bug must not skip the kill, hold or unbinding
            problems += execution.abort(f"internal error: {exc!r}")
            result = execution.fallback_result(f"internal error: {exc!r}")
        try:
            if result.status != Status.SUCCEEDED and execution.drives_robot:
                problems += self.hold()
            if result.status in (Status.FAILED, Status.TIMEOUT) and (
                    execution.request.on_failure == "rewind"):
                problems.append(self._undo(running))
            if problems:
                result.error = "; ".join(filter(None, [result.error, *problems]))
            result.replay_of = execution.request.replay_of
            result.skills = list(running.imported)
            result.skills_as_of = execution.request.skills_as_of or 0
            written = self._record(result)
            if written:
                result.error = "; ".join(filter(None, [result.error, *written]))
        finally:
            running.recorder.end_execution(execution.id)
            running.cameras.close()
            if running.feed is not None:
                running.feed.close()
            with self._cond:
                self._running, self._last = None, result
                self._cond.notify_all()
            self._unbind(running.binding)
            self._on_change()
        self._log(f"execution {result.execution_id} ({result.label or 'no label'}): "
                  f"{result.status.name} in {result.duration_s:.2f}s"
                  + (f": {result.error}" if result.error else ""))
        return result

    def run(self, request: Request, lease_id: str = "", feedback: Feedback = lambda *a: None) -> Result:
        """start + finish, for callers that do not need the Execution in between."""
        started = self.start(request, lease_id, feedback)
        return started if isinstance(started, Result) else self.finish(started)

    def hold(self) -> list[str]:
        """Command stop-and-hold to every backend; returns (and remembers) the problems."""
        try:
            problems = [f"hold failed: {p}" for p in self._hold()]
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the end path
            problems = [f"hold failed: {exc!r}"]
        self._hold_problem = "; ".join(problems)     # one assignment: no lock to wait for
        for problem in problems:
            self._log(problem)
        return problems

    def _record(self, result: Result) -> list[str]:
        problems: list[str] = []
        for what, write in (
                ("history", lambda: self.history.append(Record.from_result(result))),
                ("skill statistics", lambda: self.skills.record_uses(
                    result.execution_id, result.skills, result.status == Status.SUCCEEDED))):
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - the result is still returned
                problems.append(f"{what} not written: {exc}")
                self._log(problems[-1])
        return problems

    def _unbind(self, binding: Binding | None) -> None:
        if binding is not None:
            self.leases.end_execution(binding)

    # --------------------------------------------------------------- skills
    def save_skill(self, lease_id: str, name: str, code: str = "", description: str = "",
                   from_execution_id: str = "", dry_runs: int = 0,
                   seed: Callable[[], Seed] = Seed, origin: str = "") -> Saved:
        """skills/save: a new version of ``name``, from ``code`` or the code of the
        SUCCEEDED execution ``from_execution_id``, saved only after ``dry_runs`` dry runs of
        the module as ``__main__`` (each from ``seed()``, the live state) all succeeded —
        a run with a guard refusal does not succeed. Needs the lease: writing the store is
        the holder's, and the dry runs take the robot's one slot like any goal."""
        holder, refusal = self.authorize(lease_id)
        if refusal:
            return Saved(False, refusal)
        if from_execution_id:
            record = self.history.get(from_execution_id)
            if record is None:
                return Saved(False, f"no finished execution {from_execution_id!r} in the history")
            if record.status != Status.SUCCEEDED:
                return Saved(False, f"execution {from_execution_id} ended "
                                    f"{Status(record.status).name}: only code that succeeded is saved")
            if code and code != record.code:
                return Saved(False, "give code or from_execution_id, not both: they differ")
            code = record.code
        parsed = check(name, code, description, self.settings.max_code_bytes)
        if isinstance(parsed, str):
            return Saved(False, parsed)
        if not 0 <= dry_runs <= MAX_DRY_RUNS:
            return Saved(False, f"dry_runs must be 0..{MAX_DRY_RUNS}, got {dry_runs}")
        if dry_runs and not parsed.demonstrated:
            return Saved(False, 'dry runs run the module\'s `if __name__ == "__main__":` block, '
                                "and it has none: add one that shows the skill working")
        proofs = []
        for k in range(1, dry_runs + 1):
            result = self.run(Request(code, label=f"skill {name}: dry run {k}/{dry_runs}",
                                      dry_run=seed()), lease_id)
            if result.status != Status.SUCCEEDED:
                return Saved(False, f"not saved: dry run {k} of {dry_runs} (execution "
                                    f"{result.execution_id}) {result.status.name}: "
                                    f"{result.error or 'no error given'}", dry_runs_passed=k - 1)
            proofs.append(result.execution_id)
        if self.authorize(lease_id)[1]:
            return Saved(False, f"not saved: the lease ended during the dry runs "
                                f"({', '.join(proofs)})", dry_runs_passed=dry_runs)
        skill = self.skills.save(name, code, parsed, description, from_execution_id, dry_runs,
                                 holder, origin)
        self._log(f"skill {skill.ref} saved by {holder or 'anyone'}"
                  + (f" after dry runs {', '.join(proofs)}" if proofs else ""))
        return Saved(True, f"saved {skill.ref}" + (f" after {dry_runs} dry run(s): "
                                                   f"{', '.join(proofs)}" if proofs else ""),
                     skill.version, dry_runs)

    # --------------------------------------------------------------- rewind
    def rewind(self, request: rewind.RewindRequest, lease_id: str,
               progress: Callable[[float], None] = lambda fraction: None,
               cancelled: threading.Event | None = None) -> rewind.Outcome:
        """Rewind the robot along the lease's recorded trajectory (guard/rewind.py). One
        writer at a time: refused while code runs, while estopped and without the lease;
        bound to the lease like an execution (it keeps the lease alive and the next holder
        waits for its end). Cancelled (``cancelled`` set, an estop, the lease's end or
        shutdown) it stops at once and the robot holds; so does a rewind that fails."""
        cancelled = cancelled or threading.Event()
        with self._cond:
            binding, refusal = self._admit(lease_id)
            if refusal:
                return rewind.Outcome(False, refusal)
            self._rewinding = _Rewinding(cancelled, lease_id if binding else "")
        self._on_change()
        lease = binding.serial if binding else None
        try:
            return self._rewind(request, lease, progress, cancelled)
        finally:
            with self._cond:
                self._rewinding = None
                self._cond.notify_all()
            self._unbind(binding)
            self._on_change()

    def _rewind(self, request: rewind.RewindRequest, lease: int | None,
                progress: Callable[[float], None], cancelled: threading.Event) -> rewind.Outcome:
        return self._rewind_on(self.recorder, lease, request, self.robot, cancelled, self.hold,
                               progress)

    def _rewind_on(self, recorder: Recorder, lease: int | None, request: rewind.RewindRequest,
                   upstream: SdkConfig, cancelled: threading.Event, hold: Hold,
                   progress: Callable[[float], None] = lambda fraction: None) -> rewind.Outcome:
        """Plan along ``recorder``'s trajectory of ``lease`` and, unless a dry run, drive it
        on ``upstream`` (the real robot, or a dry run's private one); what was undone is
        dropped from the trajectory. A rewind that moved and did not finish ends with
        ``hold`` (of that robot), its problems named in the message."""
        planned = rewind.plan(recorder.trajectory(lease), recorder.current(), request,
                              upstream.limits)
        if isinstance(planned, str):
            return rewind.Outcome(False, planned)
        if request.dry_run:
            return rewind.Outcome(True, f"dry run: the path back to "
                                        f"{rewind.describe_target(request)} passes "
                                        f"{planned.waypoints} waypoint(s) in about "
                                        f"{planned.duration_s:.1f}s; nothing moved",
                                  planned.waypoints, planned.duration_s)
        started = time.monotonic()
        with recorder.paused():
            try:
                outcome = rewind.drive(upstream, planned, cancelled, progress, self._log)
            except Exception as exc:  # noqa: BLE001 - reported; the caller holds the robot
                outcome = rewind.Outcome(False, f"the rewind failed: {exc!r}",
                                         duration_s=time.monotonic() - started)
        recorder.truncate(lease, outcome.keep or len(recorder.trajectory(lease)))
        if not outcome.success:
            outcome.message = "; ".join([outcome.message, *hold()])
        self._log(f"rewind to {rewind.describe_target(request)}: {outcome.message}")
        return outcome

    def _hold_on(self, upstream: SdkConfig) -> Hold:
        """A hold of the robot at ``upstream`` (a dry run's private one too)."""
        def hold() -> list[str]:
            robot_hold = RobotHold(upstream, self._log)
            try:
                return [f"hold failed: {p}" for p in robot_hold()]
            finally:
                robot_hold.close()
        return hold

    def _from_code(self, running: _Running, msg: dict) -> dict:
        """A request of the running code to the node (proto.NodeMsg), answered in its
        guard's thread: a rewind is driven here, on the code's upstream (the private robot
        of a dry run), while the code's own motion waits (Guard.code_paused)."""
        kind, recorder, lease = msg.get("msg_type"), running.recorder, running.lease
        guard = running.execution.guard
        if kind == NodeMsg.REWIND_STATUS:
            return {"trajectory_length": len(recorder.trajectory(lease)),
                    "is_rewinding": guard.code_is_paused}
        if kind == NodeMsg.TRAJECTORY_INFO:
            return rewind.summary(recorder.trajectory(lease))
        if kind == NodeMsg.CLEAR_TRAJECTORY:
            return {"success": True, "cleared": recorder.clear(lease)}
        if kind in CAMERA_MSGS:
            return running.cameras.answer(msg)
        if kind == NodeMsg.SKILL:
            return self._skill_for(running, msg)
        if kind != NodeMsg.REWIND:
            return {"error": f"unknown request {kind!r} (tidybot_sdk.protocol.NodeMsg)"}
        try:
            request = rewind.RewindRequest.checked(
                str(msg.get("target", "start")), float(msg.get("amount", 0.0)),
                [str(p) for p in msg.get("parts") or []], bool(msg.get("dry_run", False)))
        except (TypeError, ValueError) as exc:
            request = f"invalid rewind request: {exc}"
        if isinstance(request, str):
            return {"error": request}
        if self._halted() or guard.stopping.is_set():
            outcome = rewind.Outcome(False, self._halted() or STOPPING_REWIND)
        else:
            with guard.code_paused():
                outcome = self._rewind_on(recorder, lease, request, guard.upstream, guard.stopping,
                                          self._hold_on(guard.upstream))
        return {"success": outcome.success, "message": outcome.message,
                # steps back: the first waypoint passed is where the robot last was recorded
                "steps_rewound": max(0, outcome.waypoints - 1), "duration_s": outcome.duration_s,
                "components_rewound": list(request.parts)}

    def _skill_for(self, running: _Running, msg: dict) -> dict:
        """A skill the code imports: the version asked for, else the latest in the store as
        the goal saw it (at its start; a replay: as its original saw it); remembered for
        the record."""
        name, version = msg.get("name"), msg.get("version", 0)
        if not (isinstance(name, str) and len(name) <= MAX_NAME and type(version) is int
                and 0 <= version < 2 ** 31):
            return {"error": "a skill is asked for by name and a version (0: the latest)"}
        as_of = running.execution.request.skills_as_of
        skill = self.skills.get(name, version, as_of=as_of)
        if skill is None:
            return {"error": self.skills.missing(name, version, as_of)}
        if skill.ref not in running.imported:
            running.imported.append(skill.ref)
        return {"name": skill.name, "version": skill.version, "code": skill.code}

    def _undo(self, running: _Running) -> str:
        """on_failure "rewind": the failed execution's own motion is rewound to where it
        began, then the robot holds; returns what was done (for the result's error). Like
        any rewind it is the one writer and is cancelled by estop, lease end and shutdown."""
        if not running.execution.drives_robot:
            return "on_failure: a dry run's private robot ended with it: nothing to rewind"
        cancelled = threading.Event()
        execution = running.execution
        with self._cond:
            refusal = self._halted() or ("its lease ended" if running.lease_token and
                                         self.leases.holder_of(running.lease_token) is None else "")
            if not refusal:
                self._rewinding = _Rewinding(cancelled, running.lease_token, execution.id)
        if refusal:
            return f"on_failure: not rewound ({refusal})"
        self._on_change()
        try:
            outcome = self._rewind_on(running.recorder, running.lease,
                                      rewind.RewindRequest("execution", execution_id=execution.id),
                                      self.robot, cancelled, self.hold)
        finally:
            with self._cond:
                self._rewinding = None
        if not outcome.success:
            return f"on_failure: not rewound: {outcome.message}"
        return "; ".join([f"on_failure: {outcome.message}", *self.hold()])

    def _reset(self, binding: Binding) -> None:
        """reset_on_release: once the ended lease's code has stopped, rewind to where the
        lease began, then hand the lease on (the one writer meanwhile; an estop or shutdown
        cancels it, and the robot holds)."""
        cancelled = threading.Event()
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._running is None and self._rewinding is None
                                    or self._closing, self.settings.stop_grace_s + 15.0)
                refusal = self._halted() or (
                    "" if self._running is None and self._rewinding is None
                    else "the ended lease's code did not stop in time")
                if not refusal:      # not bound to the ended lease: its end must not cancel it
                    self._rewinding = _Rewinding(cancelled, "")
            self._on_lease_change()
            if refusal:
                self._log(f"reset on release of {binding.holder!r} skipped: {refusal}")
                return
            self._on_change()
            outcome = self._rewind(rewind.RewindRequest("start"), binding.serial, lambda f: None,
                                   cancelled)
            self._log(f"reset on release of {binding.holder!r}: {outcome.message}")
        except Exception as exc:  # noqa: BLE001 - the lease must still be handed on
            self._log(f"reset on release failed: {exc!r}")
            self.hold()
        finally:
            with self._cond:
                if self._rewinding is not None and self._rewinding.cancelled is cancelled:
                    self._rewinding = None
                self._resetting = False
                self._cond.notify_all()
            self.leases.end_execution(binding)
            self._on_change()
            self._on_lease_change()

    def _cancel_rewind(self, lease_token: str | None = None, execution_id: str | None = None) -> bool:
        """Cancel the running rewind (only if bound to ``lease_token``, or run for
        ``execution_id``, when given). Takes no lock: an estop calls it first."""
        rewinding = self._rewinding          # one read: the rewind's owner replaces it whole
        if rewinding is None or (lease_token is not None and rewinding.lease_token != lease_token) \
                or (execution_id is not None and rewinding.execution_id != execution_id):
            return False
        rewinding.cancelled.set()
        return True

    # ------------------------------------------------------------- stopping
    def _stop_current(self, status: Status, reason: str, hard: bool = False,
                      lease_token: str | None = None) -> str | None:
        """Stop what runs (only if bound to ``lease_token`` when given); its id or None."""
        with self._cond:
            running = self._running
            if running is None or (lease_token is not None and running.lease_token != lease_token):
                return None
            stopped = running.execution.stop(status, reason, hard)
        stopped = self._cancel_rewind(execution_id=running.execution.id) or stopped
        if stopped:
            self._on_change()
        return running.execution.id

    def _lease_ended(self, binding: Binding, reason: str) -> None:
        """A lease lapsed, was released or taken over: stop the code bound to it; the next
        holder's code gets a spare prepared after this. With reset_on_release the lease keeps
        the robot until it was rewound to where the lease began (``_reset``)."""
        token = binding.token
        if self.policy.reset_on_release:      # the lease manager kept the robot for it
            self._resetting = True
            threading.Thread(target=self._reset, args=(binding,), name="reset-on-release",
                             daemon=True).start()
        if self.pool is not None:
            self.pool.discard()
        if self._stop_current(Status.CANCELED, reason, lease_token=token):
            self._log(f"lease ended ({reason}): stopping its code")
        if self._cancel_rewind(token):
            self._log(f"lease ended ({reason}): canceling its rewind")

    def cancel(self, execution: Execution, reason: str = "canceled by the client") -> None:
        """Stop ``execution``, or the on_failure rewind that follows its end."""
        execution.stop(Status.CANCELED, reason)
        self._cancel_rewind(execution_id=execution.id)

    def stop(self, lease_id: str) -> tuple[str | None, str]:
        """execution/stop: (stopped execution id, refusal reason)."""
        refusal = self.authorize(lease_id)[1]
        if refusal:
            return None, refusal
        return self._stop_current(Status.CANCELED, "stopped via execution/stop"), ""

    def estop(self) -> tuple[str | None, list[str]]:
        """Hold every backend first — before any lock, so nothing the service is doing
        (admission starting processes) delays it — then latch and kill the code without
        grace (also during a dry run: an estop is about the real robot); the end path holds
        again once the code is dead. Returns (stopped id, hold problems)."""
        self._estopped = True      # one assignment: admission reads it under its lock
        self._cancel_rewind()      # first: a rewind streams until it sees this
        problems = self.hold()
        stopped = self._stop_current(Status.CANCELED, ESTOP_REASON, hard=True)
        self._on_change()
        return stopped, problems

    def reset_estop(self, lease_id: str) -> tuple[bool, str]:
        refusal = self.authorize(lease_id)[1]
        if refusal:
            return False, refusal
        with self._cond:
            was, self._estopped = self._estopped, False
        self._on_change()
        return True, "estop reset: goals are accepted again" if was else "not estopped"

    # ------------------------------------------------------------- queries
    def snapshot(self) -> Snapshot:
        with self._cond:
            running = self._running
            current = running.execution if running else None
            return Snapshot(current=current, stopping=bool(current and current.stopping),
                            last=self._last, estopped=self._estopped,
                            hold_problem=self._hold_problem,
                            rewinding=self._rewinding is not None, resetting=self._resetting)

    def page(self, offset: int = 0, limit: int = 0, holder: str = "",
             statuses: Sequence[int] = (), include_code: bool = False,
             execution_id: str = "") -> Page:
        return self.history.page(offset, limit, holder, statuses, include_code, execution_id)

    # ------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Refuse new goals, end the running execution through ``finish`` (whose caller
        still answers its goal) and wait for that; then close the leases and the history.
        Safe to call more than once."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()             # a reset waiting to start gives up
        self._stop_current(Status.CANCELED, SHUTDOWN_REASON)
        self._cancel_rewind()
        with self._cond:
            ended = self._cond.wait_for(lambda: self._running is None and self._rewinding is None,
                                        self.settings.stop_grace_s + 15.0)
        if not ended:          # finish's thread is stuck: at least the robot must hold
            self._log("shutdown: the running execution did not end in time; holding the robot")
            self.hold()
        self.leases.close()
        self._feed.close()
        self.skills.close()
        if self.pool is not None:
            self.pool.close()
