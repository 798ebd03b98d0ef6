"""The execution service: leases, executions and history with one owner (no rclpy).

Every goal comes here and every execution ends here, exactly once, in ``finish``:

    child tree dead  →  robot commanded to hold  →  record written  →  lease unbound  →  result

(the hold only after an abnormal end, and only for code that drove the real robot). Nothing
that can fail on the way — feedback publishing, the history write, a backend that does not
acknowledge the hold — skips a later step; each failure is logged and named in the
result's ``error``.

Executions on leases of disjoint parts run side by side (DESIGN §12.3), each in its own
sandbox behind its own guard (which refuses commands to parts its lease does not hold); a
goal that needs a part another writer drives is refused ``busy``. A stop, a cancel and an
abnormal end hold only the execution's parts; the estop and shutdown stop every one.

The lease and the execution are bound atomically at admission, under one lock with the
lease's end: a lease that ends before admission refuses the goal; one that ends after it
stops the code, and the next holder is granted only once ``finish`` has given the binding
back, i.e. after the code is dead and the hold was commanded (leases.py: draining).

Every writer of the robot — the execution, and a rewind from any entry point — is in one
registry (writers.py). An estop, in this order and without taking the service's lock:
latches, stops every execution without grace and refuses motion on every live guard, cancels
every rewind, then commands every backend to hold (the code is killed meanwhile, in its
execution's own thread). Goals are refused until ``reset_estop``.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tidybot_exec.cameras.for_code import CameraSettings, CodeCameras, Source
from tidybot_exec.cameras.source import ArmTrack, CameraServerSource
from tidybot_exec.execution.code_requests import CodeRequests
from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution.history import History, Page, Record
from tidybot_exec.execution.live_state import LiveState
from tidybot_exec.execution.launchers import Launched, launch_cold
from tidybot_exec.execution.leases import RESOURCES, Binding, LeaseManager
from tidybot_exec.execution.records import ON_FAILURE, Request, Result, Status, unstarted
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.execution.skill_saver import SkillSaver
from tidybot_exec.execution.skills import MAX_NAME, Saved, SkillStore
from tidybot_exec.execution.steps import attempt
from tidybot_exec.execution.supervision import Execution, Feedback
from tidybot_exec.execution.validation import duration_error, validate
from tidybot_exec.execution.rewind_path import Outcome, RewindRequest, summary
from tidybot_exec.execution.rewinds import Rewinds
from tidybot_exec.execution.warm import WarmPool
from tidybot_exec.execution.world_watch import WorldWatch
from tidybot_exec.execution.writers import (EXECUTION, FROM_CODE, FROM_RESET, REWIND, Writer,
                                            Writers)
from tidybot_exec.guard.hold import HOLD_TIMEOUT_S
from tidybot_exec.guard.recorder import Recorder
from tidybot_exec.guard.relay import Guard
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.protocol import CAMERA_SOCKET, NodeMsg

Hold = Callable[[Sequence[str]], list]   # commands stop-and-hold to those parts; the problems
Log = Callable[[str], None]
SHUTDOWN_REASON = "node shutting down"
ESTOP_REASON = "emergency stop"
ESTOPPED_REFUSAL = "estopped: call estop/reset"


@dataclass(frozen=True)
class Snapshot:
    """What execution/status and /diagnostics show, taken under the service's lock."""

    current: Execution | None  # the most recently started of those running
    stopping: bool
    last: Result | None
    estopped: bool
    hold_problem: str          # each part's last stop-and-hold that failed ("" once one of it succeeds)
    rewinding: bool = False
    resetting: bool = False
    writers: tuple[str, ...] = ()   # every writer of the robot, one line each (writers.py)
    running_ids: tuple[str, ...] = ()   # every execution running, in the order they started


@dataclass
class _Running:
    execution: Execution
    writer: Writer
    binding: Binding | None
    lease_token: str
    recorder: Recorder           # the node's, or a dry run's own (its private robot's motion)
    feed: LiveState | None       # a dry run's private robot's (its recorder's)
    cameras: CodeCameras         # the code's camera requests (a dry run: its private ones)
    lease: int | None = None     # the binding's serial: what the trajectory is tagged with
    imported: list[str] = field(default_factory=list)   # NAME@VERSION, in import order
    world: WorldWatch | None = None         # on a simulator: collisions and moved objects
    world_source: CameraServerSource | None = None    # a dry run's own, closed at the end

    # what a rewind needs of it (rewinds.Running)
    @property
    def execution_id(self) -> str:
        return self.execution.id

    @property
    def holder(self) -> str:
        return self.execution.request.holder

    @property
    def resources(self) -> tuple[str, ...]:
        return self.binding.resources if self.binding is not None else RESOURCES

    @property
    def guard(self) -> Guard:
        return self.execution.guard


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
        self._running: dict[str, _Running] = {}     # by execution id, in the order started
        self._last: Result | None = None
        self.writers = Writers()        # halted: the estop's latch
        self._closing = False
        # the last hold's problems, per part ("" once a hold of that part succeeds)
        self._hold_problems = dict.fromkeys(RESOURCES, "")
        # reset_on_release: the parts of each ended lease whose reset is pending or running
        self._resetting: list[tuple[str, ...]] = []
        self.robot = SdkConfig.from_dict(json.loads(settings.sdk_config_json))
        self.cameras, self.camera_settings = cameras, camera_settings
        self.recorder = Recorder()
        self.live = LiveState(self.robot, log)      # the robot's state, decoded once
        self.recorder.follow(self.live)
        self.pool = WarmPool(settings, log) if settings.bwrap and settings.warm_worker else None
        self.rewinds = Rewinds(self, log, self._on_change)
        self._saver = SkillSaver(self.skills, self.history, self.authorize, self.run,
                                 settings.max_code_bytes, log)
        self.leases = LeaseManager(
            default_ttl_s=policy.default_ttl_s, max_lease_s=policy.max_lease_s,
            max_wait_s=policy.max_wait_s, on_end=self._lease_ended,
            on_change=self._leases_changed, on_grant=self.recorder.begin_lease,
            keep_after_end=policy.reset_on_release, clock=clock)

    def _leases_changed(self) -> None:
        """A spare for each lease held (each agent's next goal starts warm), then tell."""
        if self.pool is not None:
            self.pool.want(self.leases.count())
        self._on_lease_change()

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
        why not. The estop latch, the lease binding and the check that no other writer drives
        its parts are one step."""
        refusal = self._replayed(request)
        verdict = validate(request.code, self.settings.max_code_bytes)
        refusal = (refusal or verdict.error or duration_error("timeout_s", request.timeout_s)
                   or ("" if request.on_failure in ON_FAILURE else
                       f"on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got "
                       f"{request.on_failure!r}"))
        if refusal:
            return unstarted(request, Status.REJECTED, refusal)
        # Taken before the lock (it may wait for the spare being prepared) unless the goal
        # would be refused now; given back if it is refused all the same.
        spare = (self.pool.take() if self.pool is not None and request.dry_run is None
                 and not self._refusal(lease_id) else None)
        failed: Exception | None = None
        with self._cond:
            binding, refusal = self._admit(lease_id)
            request.holder = binding.holder if binding is not None else ""
            if not refusal:
                resources = binding.resources if binding else RESOURCES
                writer = self.writers.add(EXECUTION, "dry run" if request.dry_run else "goal",
                                          holder=request.holder, resources=resources,
                                          lease_token=lease_id if binding else "")
                try:
                    if request.skills_as_of is None:    # before the code can ask for a skill
                        request.skills_as_of = self.skills.latest_seq()
                    execution = self._execution(request, feedback, verdict.warnings, spare,
                                                writer, resources)
                except Exception as exc:  # noqa: BLE001 - whatever failed, the lease is given back
                    failed = exc
                    self.writers.remove(writer)
                    self._cond.notify_all()
                else:
                    writer.execution_id = execution.id
                    writer.on_halt = lambda: execution.stop(Status.CANCELED, ESTOP_REASON,
                                                            hard=True)
                    if self.writers.halted:        # an estop came while it started (writers.py)
                        writer.on_halt()
                    self._running[execution.id] = self._bound(execution, writer, binding,
                                                              lease_id)
        # Outside the lock: giving a binding back may grant the lease to the next holder,
        # and lease/status's publisher takes its own lock before the service's.
        if refusal or failed is not None:
            self._unbind(binding)
            if refusal:           # a goal that never ran is answered, not kept in history
                if spare is not None:
                    self.pool.give_back(spare)
                return unstarted(request, Status.REJECTED, refusal)
            self._on_change()
            self._log(f"could not start an execution: {failed!r}")
            return unstarted(request, Status.ERROR, f"could not start the execution: {failed!r}")
        if binding is not None:
            self.leases.name_execution(binding, execution.id)
        self._on_change()
        return execution

    def _refusal(self, lease_id: str) -> str:
        """Why a goal under ``lease_id`` would be refused now, as far as can be told without
        binding the lease (a warm spare is not taken for it)."""
        refusal = self.halted() or self.authorize(lease_id)[1]
        if refusal:
            return refusal
        with self._cond:
            return self._busy(self.leases.resources_of(lease_id) or RESOURCES)

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

    def _bound(self, execution: Execution, writer: Writer, binding: Binding | None,
               lease_id: str) -> _Running:
        """The running execution, its trajectory marked and its requests to the node served."""
        lease = binding.serial if binding else None
        recorder, feed = self.recorder, None
        cameras = CodeCameras(lambda: self.cameras, self.camera_settings, owned=False)
        if execution.request.dry_run is not None:
            recorder = Recorder()
            feed = private = LiveState(execution.guard.upstream, self._log)
            recorder.follow(private)
            recorder.begin_lease(lease)
            if self.cameras is not None:    # a robot without cameras has none in a dry run
                cameras = CodeCameras(lambda: self._private_cameras(execution, private),
                                      self.camera_settings, owned=True)
        running = _Running(execution, writer, binding, lease_id if binding else "", recorder,
                           feed, cameras, lease)
        recorder.begin_execution(execution.id, lease, running.resources)
        try:
            self._watch_world(running)
        except Exception as exc:  # noqa: BLE001 - the code runs: it must not lose its owner
            self._log(f"execution {execution.id}: its world is not watched: {exc!r}")
        execution.guard.serve_node(self._code_requests(running))
        return running

    def _watch_world(self, running: _Running) -> None:
        """On a simulator — a dry run's private one, or the node's when its camera source is
        the simulator's — watch the world: a collision stops the code (FAILED, named)."""
        execution = running.execution
        seed = execution.request.dry_run
        if seed is not None:
            running.world_source = source = CameraServerSource(
                f"ws+unix://{execution.workdir / CAMERA_SOCKET}", self.camera_settings.rate_hz,
                log=lambda line: None)       # the code's own camera client says what fails
            world = source.world
        else:
            world = getattr(self.cameras, "world", None)
            if world is None:
                return
        running.world = WorldWatch(world, execution.started, lambda line: execution.stop(
            Status.FAILED, f"collision: {line}"), seed.world if seed is not None else None)

    def _private_cameras(self, execution: Execution, feed: LiveState) -> Source:
        """A dry run's cameras: its private simulator's camera server, its arm (from the
        private robot's feed) for the mounts."""
        track = ArmTrack()
        feed.on("arm", track.observe)
        return CameraServerSource(f"ws+unix://{execution.workdir / CAMERA_SOCKET}",
                                  self.camera_settings.rate_hz, track,
                                  log=lambda line: self._log(f"dry run {execution.id}: {line}"))

    def _admit(self, lease_id: str) -> tuple[Binding | None, str]:
        """Under the lock: a new writer of the robot (code or a rewind) bound to the lease
        ``lease_id`` names, or why not (the caller gives the binding back, outside the
        lock)."""
        binding = self.leases.begin_execution(lease_id) if lease_id else None
        refusal = self.halted() or (
            self.authorize(lease_id)[1] if binding is None and self.policy.require_lease
            else self._busy(binding.resources if binding is not None else RESOURCES))
        return binding, refusal

    def halted(self) -> str:
        """Why nothing may drive the robot now: shutting down or estopped ("" when neither)."""
        return SHUTDOWN_REASON if self._closing else ESTOPPED_REFUSAL if self.writers.halted else ""

    def _busy(self, resources: Sequence[str]) -> str:
        """Why one of ``resources`` has a writer already ("" when none has); under the lock.
        Writers of disjoint parts (leases of their own) run side by side."""
        writer = self.writers.driving(resources)
        if writer is not None:
            parts = " and the ".join(p for p in writer.resources if p in resources)
            if writer.kind == EXECUTION:
                return (f"busy: execution {writer.execution_id} is running on the {parts}; "
                        f"wait for it or stop it first")
            return f"busy: a rewind is driving the {parts}; wait for it or cancel it first"
        if any(set(parts) & set(resources) for parts in self._resetting):
            return "busy: the robot is being reset to where the last lease began (reset_on_release)"
        return ""

    def _execution(self, request: Request, feedback: Feedback, warnings: list[str],
                   spare: Launched | None, writer: Writer, resources: Sequence[str]) -> Execution:
        """Start warm from ``spare``; if the spare turns out dead, start cold. The writer
        knows the guard, and the guard the parts the lease holds (``resources``: it refuses
        commands to the others), before the code is handed over (an estop refuses it from
        then on)."""
        if spare is not None:
            try:
                spare.guard.lease(resources, self._holder_of)
                writer.guard(spare.guard)
                return Execution(self.settings, request, spare, feedback, warnings, self._log)
            except Exception as exc:  # noqa: BLE001 - the spare is discarded; cold still works
                self._log(f"warm worker {spare.id} was unusable ({exc!r}); starting cold")
        launched = launch_cold(self.settings, request, self._log,
                               lambda guard: guard.lease(resources, self._holder_of))
        writer.guard(launched.guard)
        return Execution(self.settings, request, launched, feedback, warnings, self._log)

    def _holder_of(self, resource: str) -> str:
        """Who holds ``resource``'s lease now ("" when nobody does): a refusal names them."""
        return next((h.holder for h in self.leases.status().holds if h.resource == resource), "")

    # -------------------------------------------------------------- the end
    def finish(self, execution: Execution) -> Result:
        """Wait for ``execution`` and end it: the one path every execution ends through.
        Every step runs whatever the steps before it did; a step that fails is named in the
        result's ``error`` (and the record's)."""
        with self._cond:
            running = self._running.get(execution.id)
            assert running is not None and running.execution is execution, "not a running execution"
        problems: list[str] = []
        try:
            result = execution.wait()           # exception-safe itself: this is a last resort
        except Exception as exc:  # noqa: BLE001 - a bug must not skip the kill, hold or unbinding
            problems += execution.abort(f"internal error: {exc!r}")
            result = execution.fallback_result(f"internal error: {exc!r}")
        try:
            attempt(problems, "reading the simulated world",
                    lambda: self._world_outcome(running, result))
            problems += self.rewinds.join(execution.id)
            if result.status != Status.SUCCEEDED and execution.drives_robot:
                problems += self.hold(running.resources)
            if result.status in (Status.FAILED, Status.TIMEOUT) and (
                    execution.request.on_failure == "rewind"):
                problems.append(self.rewinds.undo(running, execution.drives_robot))
            if problems:
                result.error = "; ".join(filter(None, [result.error, *problems]))
            result.replay_of = execution.request.replay_of
            result.skills = list(running.imported)
            result.skills_as_of = execution.request.skills_as_of or 0
            result.resources = list(running.resources)
            written = self._record(result)
            if written:
                result.error = "; ".join(filter(None, [result.error, *written]))
        finally:
            running.recorder.end_execution(execution.id)
            running.cameras.close()
            if running.world_source is not None:
                # closed aside: its thread may be reconnecting to the ended simulator
                threading.Thread(target=running.world_source.close, daemon=True,
                                 name="world-source-close").start()
            if running.feed is not None:
                running.feed.close()
            running.writer.end()
            with self._cond:
                del self._running[execution.id]
                self._last = result
                self.writers.remove(running.writer)
                self._cond.notify_all()
            self._unbind(running.binding)
            self._on_change()
        self._log(f"execution {result.execution_id} ({result.label or 'no label'}): "
                  f"{result.status.name} in {result.duration_s:.2f}s"
                  + (f": {result.error}" if result.error else ""))
        return result

    @staticmethod
    def _world_outcome(running: _Running, result: Result) -> None:
        """The world's part of the result; a collision fails a run that would otherwise
        have succeeded or failed for another reason (the code may have ended on the arm's
        reflex before the watch saw the log)."""
        if running.world is None:
            return
        result.collisions, result.moved_objects = running.world.finish(
            running.execution.tree.report().get("world"))
        if result.collisions and result.status in (Status.SUCCEEDED, Status.FAILED):
            result.status = Status.FAILED
            if not result.error.startswith("collision: "):
                result.error = "; ".join(filter(None, [f"collision: {result.collisions[0]}",
                                                       result.error]))

    def admit(self, kind: str, origin: str, lease_id: str, **fields: object
              ) -> tuple[Writer, Binding | None] | str:
        """A new writer of the robot bound to the lease ``lease_id`` names (a rewind), or
        why not; give it back with ``retire``."""
        with self._cond:
            binding, refusal = self._admit(lease_id)
            if not refusal:
                writer = self.writers.add(
                    kind, origin, holder=binding.holder if binding else "",
                    lease_token=lease_id if binding else "",
                    resources=binding.resources if binding else RESOURCES, **fields)
        if refusal:
            self._unbind(binding)
            return refusal
        self._on_change()
        return writer, binding

    def enlist(self, origin: str, lease_token: str, **fields: object) -> Writer | str:
        """A rewind for an execution that is ending (it holds the lease still), or why not:
        estopped, shutting down or its lease ended — checked with the lease's end excluded."""
        with self._cond:
            refusal = self.halted() or ("its lease ended" if lease_token and
                                        self.leases.holder_of(lease_token) is None else "")
            writer = refusal or self.writers.add(REWIND, origin, lease_token=lease_token,
                                                 **fields)
        self._on_change()
        return writer

    def retire(self, writer: Writer, binding: Binding | None = None) -> None:
        """``writer`` no longer drives the robot (whoever waits for the robot is woken);
        its lease binding is given back."""
        with self._cond:
            self.writers.remove(writer)
            self._cond.notify_all()
        self._unbind(binding)
        self._on_change()

    def run(self, request: Request, lease_id: str = "", feedback: Feedback = lambda *a: None) -> Result:
        """start + finish, for callers that do not need the Execution in between."""
        started = self.start(request, lease_id, feedback)
        return started if isinstance(started, Result) else self.finish(started)

    def hold(self, parts: Sequence[str] = RESOURCES) -> list[str]:
        """Command stop-and-hold to the backends of ``parts`` (default: every one); returns
        (and remembers) the problems."""
        try:
            problems = [f"hold failed: {p}" for p in self._hold(parts)]
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the end path
            problems = [f"hold failed: {exc!r}"]
        for part in parts:      # one assignment each: no lock to wait for
            # a problem names its backend ("arm: no answer ..."); one that names none, all
            self._hold_problems[part] = "; ".join(
                p for p in problems if p.startswith(f"hold failed: {part}:")
                or not any(p.startswith(f"hold failed: {other}:") for other in RESOURCES))
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
        """skills/save (skill_saver.SkillSaver.save): proven by dry runs, then stored."""
        return self._saver.save(lease_id, name, code, description, from_execution_id,
                                dry_runs, seed, origin)

    # --------------------------------------------------------------- rewind
    def rewind(self, request: RewindRequest, lease_id: str,
               progress: Callable[[float], None] = lambda fraction: None,
               cancelled: threading.Event | None = None) -> Outcome:
        """The rewind action (rewinds.Rewinds.run): the lease's recorded trajectory back."""
        return self.rewinds.run(request, lease_id, progress, cancelled)

    def _code_requests(self, running: _Running) -> CodeRequests:
        """The running code's requests to the node (code_requests.py: the table, bounded),
        answered in its guard's thread."""
        recorder, lease, guard = running.recorder, running.lease, running.execution.guard
        return CodeRequests({
            NodeMsg.REWIND: lambda msg: self.rewinds.for_code(running, msg),
            NodeMsg.REWIND_STATUS: lambda msg: {"trajectory_length": recorder.length(lease),
                                                "is_rewinding": guard.code_is_paused},
            NodeMsg.TRAJECTORY_INFO: lambda msg: summary(recorder.trajectory(lease)),
            NodeMsg.CLEAR_TRAJECTORY: lambda msg: {"success": True,
                                                   "cleared": recorder.clear(lease)},
            NodeMsg.CAMERAS: running.cameras.answer,
            NodeMsg.CAMERA_FRAME: running.cameras.answer,
            NodeMsg.SKILL: lambda msg: self._skill_for(running, msg),
        }, guard.stopping)

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

    def _reset(self, binding: Binding) -> None:
        """reset_on_release: once the ended lease's code has stopped, rewind its parts to
        where the lease began, then hand the lease on (the one writer of those parts
        meanwhile; an estop or shutdown cancels it, and they hold)."""
        writer: Writer | None = None
        parts = binding.resources
        try:
            with self._cond:
                self._cond.wait_for(lambda: self.writers.driving(parts) is None or self._closing,
                                    self.settings.stop_grace_s + 15.0)
                refusal = self.halted() or (
                    "" if self.writers.driving(parts) is None
                    else "the ended lease's code did not stop in time")
                if not refusal:      # not bound to the ended lease: its end must not cancel it
                    writer = self.writers.add(REWIND, FROM_RESET, holder=binding.holder,
                                              resources=parts)
            self._on_lease_change()
            if writer is None:
                self._log(f"reset on release of {binding.holder!r} skipped: {refusal}")
                return
            self._on_change()
            outcome = self.rewinds.to_lease_start(writer, binding.serial, parts)
            self._log(f"reset on release of {binding.holder!r}: {outcome.message}")
        except Exception as exc:  # noqa: BLE001 - the lease must still be handed on
            self._log(f"reset on release failed: {exc!r}")
            self.hold(parts)
        finally:
            with self._cond:
                if writer is not None:
                    self.writers.remove(writer)
                self._resetting.remove(parts)
                self._cond.notify_all()
            self.leases.end_execution(binding)
            self._on_change()
            self._on_lease_change()

    # ------------------------------------------------------------- stopping
    def _stop_running(self, status: Status, reason: str,
                      lease_token: str | None = None) -> list[str]:
        """Stop every execution that runs (only those bound to ``lease_token`` when given)
        and the rewinds run for them; their ids."""
        with self._cond:
            stopping = [r.execution for r in self._running.values()
                        if lease_token is None or r.lease_token == lease_token]
            changed = [execution.stop(status, reason) for execution in stopping]
        changed += [self.rewinds.cancel(execution_id=execution.id) for execution in stopping]
        if any(changed):
            self._on_change()
        return [execution.id for execution in stopping]

    def _lease_ended(self, binding: Binding, reason: str) -> None:
        """A lease lapsed, was released or taken over: stop the code bound to it; the next
        holder's code gets a spare prepared after this. With reset_on_release the lease keeps
        the robot until it was rewound to where the lease began (``_reset``)."""
        token = binding.token
        if self.policy.reset_on_release:      # the lease manager kept the robot for it
            with self._cond:
                self._resetting.append(binding.resources)
            threading.Thread(target=self._reset, args=(binding,), name="reset-on-release",
                             daemon=True).start()
        if self.pool is not None:
            self.pool.discard()
        if self._stop_running(Status.CANCELED, reason, lease_token=token):
            self._log(f"lease ended ({reason}): stopping its code")
        if self.rewinds.cancel(token):
            self._log(f"lease ended ({reason}): canceling its rewind")

    def cancel(self, execution: Execution, reason: str = "canceled by the client") -> None:
        """Stop ``execution``, or the on_failure rewind that follows its end."""
        execution.stop(Status.CANCELED, reason)
        self.rewinds.cancel(execution_id=execution.id)

    def stop(self, lease_id: str) -> tuple[list[str], str]:
        """execution/stop: (the executions stopped, refusal reason). With a lease, those of
        that lease (another agent's go on; a token that is no lease's stops none); without
        one (require_lease off), every one."""
        refusal = self.authorize(lease_id)[1]
        if refusal:
            return [], refusal
        return self._stop_running(Status.CANCELED, "stopped via execution/stop",
                                  lease_token=lease_id or None), ""

    def estop(self) -> tuple[str | None, list[str]]:
        """Latch, stop the code without grace and refuse motion on every live guard, let the
        commands in flight be answered, cancel every rewind — without the service's lock,
        so nothing it is doing (admission starting processes) delays them — then hold every
        backend (also during a dry run: an estop is about the real robot); the end path
        holds again once the code is dead. Once this returns no motion command reaches a
        backend until ``reset_estop``. Returns (the executions stopped, hold problems)."""
        stopped: list[str] = []
        try:
            stopped = self.writers.halt(self._log, HOLD_TIMEOUT_S)
        finally:
            problems = self.hold()
            self._on_change()
        return stopped, problems

    def reset_estop(self, lease_id: str) -> tuple[bool, str]:
        refusal = self.authorize(lease_id)[1]
        if refusal:
            return False, refusal
        with self._cond:
            was = self.writers.halted
            self.writers.resume()
        self._on_change()
        return True, "estop reset: goals are accepted again" if was else "not estopped"

    # ------------------------------------------------------------- queries
    def snapshot(self) -> Snapshot:
        with self._cond:
            running = tuple(self._running)
            current = self._running[running[-1]].execution if running else None
            return Snapshot(current=current, stopping=bool(current and current.stopping),
                            last=self._last, estopped=self.writers.halted,
                            hold_problem="; ".join(dict.fromkeys(
                                filter(None, self._hold_problems.values()))),
                            # the code's own rewinds are its execution's: state "running";
                            # another agent's rewind does not hide the execution shown
                            rewinding=any(w.origin != FROM_CODE and (
                                current is None or w.execution_id == current.id)
                                for w in self.writers.rewinds()),
                            resetting=bool(self._resetting),
                            writers=tuple(self.writers.describe()), running_ids=running)

    def page(self, offset: int = 0, limit: int = 0, holder: str = "",
             statuses: Sequence[int] = (), include_code: bool = False,
             execution_id: str = "") -> Page:
        return self.history.page(offset, limit, holder, statuses, include_code, execution_id)

    # ------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Refuse new goals, end every running execution through ``finish`` (whose caller
        still answers its goal) and wait for that; then close the leases and the history.
        Safe to call more than once."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()             # a reset waiting to start gives up
        self._stop_running(Status.CANCELED, SHUTDOWN_REASON)
        self.rewinds.cancel()
        with self._cond:
            ended = self._cond.wait_for(lambda: not any(self.writers),
                                        self.settings.stop_grace_s + 15.0)
        if not ended:          # finish's thread is stuck: at least the robot must hold
            self._log("shutdown: an execution did not end in time; holding the robot")
            self.hold()
        self.leases.close()
        self.live.close()
        self.skills.close()
        if self.pool is not None:
            self.pool.close()
