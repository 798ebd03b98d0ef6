"""The tidybot_exec node: the thin ROS shell around the pure core.

Everything with behaviour lives in rclpy-free modules (service: leases, executions and
history with one owner of each execution's end; execution/, guard/, sandbox/, params, the SDK);
this module declares parameters and translates ROS <-> service: the execute_code action,
the lease/*, execution/* and estop services and the status topics. Messages are built
from core types in convert.py, in one place.

Shutdown (SIGINT, SIGTERM, a second SIGINT) is handled here, not by rclpy: the signal only
asks ``main`` to stop; the running execution then ends through the service's one end path
while the ROS context is still up, so its goal is answered and its record written.
"""
from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle, InvalidParameterTypeException
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from std_srvs.srv import Trigger
from tidybot_interfaces.action import ExecuteCode, Rewind
from tidybot_interfaces.msg import ExecutionStatus, LeaseStatus
from tidybot_interfaces.srv import (AcquireLease, Describe, GetHistory, GetSkill, ListSkills,
                                    ReleaseLease, RenewLease, ResetEstop, SaveSkill,
                                    StopExecution)

from tidybot_exec.cameras.for_code import CameraSettings
from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution import skills
from tidybot_exec.execution.history import History
from tidybot_exec.execution.live_state import BACKENDS
from tidybot_exec.execution.records import Request, Result, Status
from tidybot_exec.execution.rewind_path import Outcome, RewindRequest
from tidybot_exec.execution.skills import Skill
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution import keep_out
from tidybot_exec.execution.settings import LeasePolicy, executor_settings, sdk_config
from tidybot_exec.execution.supervision import Execution
from tidybot_exec.guard.hold import RobotHold
from tidybot_exec.ros import convert
from tidybot_exec.ros.backend_monitor import Level, drives
from tidybot_exec.ros.camera_topics import CameraTopics
from tidybot_exec.ros.params import PARAMS, robot_history_dir, validate
from tidybot_exec.ros.qos import LATCHED, SERVICES
from tidybot_exec.ros.state_topics import StateTopics, Throttle, status
from tidybot_exec.sandbox import bwrap

NODE_NAME = "tidybot_exec"
WORLD_TIMEOUT_S = 0.5       # a dry run waits at most this for the simulated world's snapshot
KEEP_OUT_WAIT_S = 5.0       # keep_out:=auto waits at most this for the camera source at start
DESCRIBE_SKILLS = 20        # sdk/describe shows at most this many skills, the newest saved,
DESCRIBE_SKILLS_BYTES = 16 * 1024   # in at most this much markdown (UTF-8 bytes)
EXIT_WAIT_S = 5.0           # at exit, for the executor's callbacks and the spin thread to end

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}


class InvalidParameters(Exception):
    """The parameters given to the node make no sense; the node refuses to start."""


class TidybotExecNode(Node):
    """Serves execute_code and its companions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.settings = p = self._declare_parameters()
        log = self.get_logger()
        self.camera_topics = CameraTopics(self, p)
        try:
            boxes, said = keep_out.resolve(p["keep_out"], self._world_at_start)
        except ValueError as exc:
            raise InvalidParameters(str(exc)) from None
        (log.info if boxes or p["keep_out"].strip() != keep_out.AUTO else log.warning)(said)
        config = sdk_config(p, boxes)
        self.isolation = bwrap.detect()
        if not self.isolation.sandboxed:
            if not p["allow_unsandboxed"]:
                raise InvalidParameters(
                    f"no sandbox for submitted code ({self.isolation.detail}); set "
                    f"allow_unsandboxed:=true only if you accept running it unconfined")
            log.warning(f"running submitted code UNSANDBOXED: {self.isolation.detail}")
        self.robot_hold = RobotHold(config, log.warning)
        self._description = convert.description(config.limits)     # parameters are fixed
        self.service = ExecutionService(
            executor_settings(p, config, self.isolation),
            History(robot_history_dir(p["history_dir"], self.get_namespace()), p["history_max_records"]),
            hold=self.robot_hold, log=log.info,
            policy=LeasePolicy(require_lease=p["require_lease"],
                               default_ttl_s=p["lease_default_ttl_s"],
                               max_lease_s=p["max_lease_s"], max_wait_s=p["lease_max_wait_s"],
                               reset_on_release=p["reset_on_release"]),
            on_change=self._publish_status, on_lease_change=self._publish_lease_status,
            cameras=self.camera_topics.source, camera_settings=CameraSettings(
                max_age_s=p["camera_max_age_s"], budget_bytes=p["camera_budget_mb"] * 2 ** 20,
                rate_hz=p["camera_rate_hz"], frame_prefix=self.camera_topics.prefix))
        self.leases = self.service.leases
        self._goals: dict[bytes, Execution] = {}        # goal uuid -> its running execution
        self._answering = 0                 # execute callbacks that have not returned yet
        self._answered = threading.Condition()
        self._status_lock = threading.Lock()
        self._status_pub = self.create_publisher(ExecutionStatus, "execution/status", LATCHED)
        self._lease_pub = self.create_publisher(LeaseStatus, "lease/status", LATCHED)

        actions = ReentrantCallbackGroup()
        services = ReentrantCallbackGroup()
        self._rewinds: dict[bytes, threading.Event] = {}    # goal uuid -> its cancel event
        # every goal is accepted, then answered (a refusal aborts it with the reason)
        self._action, self._rewind_action = (ActionServer(
            self, action_type, name, execute_callback=execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT, cancel_callback=cancel,
            callback_group=actions, result_timeout=p["result_keep_s"],
            goal_service_qos_profile=SERVICES, result_service_qos_profile=SERVICES,
            cancel_service_qos_profile=SERVICES) for action_type, name, execute, cancel in (
                (ExecuteCode, "execute_code", self._execute, self._cancel),
                (Rewind, "rewind", self._rewind, self._cancel_rewind)))
        for srv_type, name, callback in (
                (StopExecution, "execution/stop", self._stop_service),
                (Trigger, "estop", self._estop),
                (ResetEstop, "estop/reset", self._reset_estop),
                (GetHistory, "execution/history", self._history_service),
                (Describe, "sdk/describe", self._describe),
                (SaveSkill, "skills/save", self._save_skill),
                (ListSkills, "skills/list", self._list_skills),
                (GetSkill, "skills/get", self._get_skill),
                (AcquireLease, "lease/acquire", self._acquire),
                (RenewLease, "lease/renew", self._renew),
                (ReleaseLease, "lease/release", self._release),
                (AcquireLease, "lease/take", self._take)):
            self.create_service(srv_type, name, self._never_raising(name, callback),
                                qos_profile=SERVICES, callback_group=services)
        # the cameras' arm track first (where each camera was), then the state topics
        self.service.live.on("arm", self.camera_topics.arm.observe)
        self.state_topics = StateTopics(self, self.service.live, p, self._diagnostics)
        self.create_timer(1.0, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_status()
        self._publish_lease_status()
        # say what the node drives and where (simulator, hardware or the base bridge), in the
        # ready line and in every backend's /diagnostics message
        for name, monitor in self.state_topics.monitors.items():
            monitor.served_by = p[f"{name}_served_by"]
        drive = ", ".join(drives(name, monitor.served_by, getattr(config, name)["cmd"])
                          for name, monitor in self.state_topics.monitors.items())
        log.info(f"ready: {drive}; cameras {p['cameras'] or 'none'}; history in "
                 f"{self.service.history.path}; isolation: {self.isolation.mechanism}")

    def _declare_parameters(self) -> dict[str, Any]:
        """Declare every parameter of params.PARAMS (read-only) and validate the values."""
        values = {}
        for spec in PARAMS:
            descriptor = ParameterDescriptor(
                description=spec.description, read_only=True, type=_TYPES[type(spec.default)])
            try:
                value = self.declare_parameter(spec.name, spec.default, descriptor).value
            except InvalidParameterTypeException as exc:
                raise InvalidParameters(str(exc)) from None
            values[spec.name] = [float(v) for v in value] if isinstance(spec.default, list) else value
        problems = validate(values)
        if problems:
            raise InvalidParameters("; ".join(problems))
        return values

    # ------------------------------------------------------------------ leases
    async def _acquire(self, request: AcquireLease.Request,
                       response: AcquireLease.Response) -> AcquireLease.Response:
        # Waiting in line holds no executor thread: the callback awaits a future that the
        # lease manager completes from its own thread.
        grant = await self._answer_later(
            lambda answer: self.leases.acquire(request.holder, request.ttl_s, request.wait_s, answer,
                                               list(request.resources)))
        if grant.success:
            self.get_logger().info(f"lease granted to {request.holder!r} ({grant.ttl_s:g}s ttl)")
        return convert.fill_grant(response, grant)

    async def _take(self, request: AcquireLease.Request,
                    response: AcquireLease.Response) -> AcquireLease.Response:
        """Operator override: holders listed in override_holders go first in line, and get
        the lease as soon as the current holder's code has stopped."""
        allowed = {h.strip() for h in self.settings["override_holders"].split(",") if h.strip()}
        if request.holder.strip() not in allowed:
            response.message = (f"{request.holder!r} may not take the lease over "
                                f"(parameter override_holders)")
            return response
        self.get_logger().warning(f"lease taken over by {request.holder!r}")
        grant = await self._answer_later(
            lambda answer: self.leases.take(request.holder, request.ttl_s, answer,
                                            list(request.resources)))
        return convert.fill_grant(response, grant)

    def _answer_later(self, ask) -> Future:
        future = Future(executor=self.executor)
        future.add_done_callback(lambda _: None)   # makes completion wake the executor
        ask(future.set_result)
        return future

    def _renew(self, request: RenewLease.Request, response: RenewLease.Response) -> RenewLease.Response:
        response.success, response.message, response.remaining_s = self.leases.renew(request.lease_id)
        return response

    def _release(self, request: ReleaseLease.Request,
                 response: ReleaseLease.Response) -> ReleaseLease.Response:
        response.success, response.message = self.leases.release(request.lease_id)
        return response

    def _publish_lease_status(self) -> None:
        with self._status_lock:         # snapshot and publish together: the newest goes last
            self._lease_pub.publish(convert.lease_status(
                self.leases.status(), self.service.snapshot().resetting,
                self.get_clock().now().to_msg()))

    def _tick(self) -> None:
        if self.service.snapshot().current is not None:
            self._publish_status()
        if self.leases.status().held:
            self._publish_lease_status()
        self.state_topics.publish_diagnostics()

    def _seed(self) -> Seed:
        """Where a dry run's private robot starts: the live state and world."""
        fresh = self.settings["state_stale_after_s"]
        return Seed.from_states({name: self.service.live.latest(name, fresh)
                                 for name in BACKENDS}, self._world())

    def _world_at_start(self) -> dict | None:
        """keep_out:=auto's world: the camera source's once it is connected (the launch
        starts the node after the simulator listens; a real server answers None at once)."""
        source = self.camera_topics.source
        if source is None:
            return None
        source.wait_cameras(KEEP_OUT_WAIT_S)
        return source.world(WORLD_TIMEOUT_S * 4)

    def _world(self) -> dict | None:
        """The simulated world's objects, for a dry run's private simulator (a real camera
        server has none: the dry run then shows the default scene)."""
        source = self.camera_topics.source
        return source.world(WORLD_TIMEOUT_S) if source is not None else None

    def _diagnostics(self) -> list:
        """Executor and lease entries of /diagnostics."""
        snap = self.service.snapshot()
        current, last = snap.current, snap.last
        if snap.hold_problem:
            executor = status("executor", Level.ERROR, snap.hold_problem)
        elif snap.estopped:
            executor = status("executor", Level.WARN, "estopped: call estop/reset")
        elif snap.rewinding:
            executor = status("executor", Level.OK, "rewinding")
        elif current is not None:
            executor = status("executor", Level.OK, f"running {current.id}",
                              label=current.request.label, elapsed_s=f"{current.elapsed:.1f}")
        else:
            executor = status("executor", Level.OK, "idle",
                              last_result=last.status.name if last else "none")
        lease = self.leases.status()
        isolation = status("isolation", Level.OK if self.isolation.sandboxed else Level.WARN,
                           self.isolation.mechanism, detail=self.isolation.detail)
        pool = self.service.pool
        warm = [] if pool is None else [
            status("warm_worker", Level.WARN, pool.problem) if pool.problem else
            status("warm_worker", Level.OK, "spare ready" if pool.ready else "preparing a spare")]
        return [executor, isolation, *warm, *self.camera_topics.diagnostics(), status("lease", Level.OK, f"held by {lease.holder}" if lease.held else "free",
                                 seconds_to_lapse=f"{lease.seconds_to_lapse:.1f}",
                                 waiting=len(lease.waiting_holders))]

    # ------------------------------------------------------------------ action
    def _cancel(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        execution = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if execution is not None:
            self.service.cancel(execution)
        return CancelResponse.ACCEPT

    @contextmanager
    def _counted(self) -> Iterator[None]:
        """An execute callback runs: shutdown waits for it to return (rclpy sends its
        result right after)."""
        with self._answered:
            self._answering += 1
        try:
            yield
        finally:
            with self._answered:
                self._answering -= 1
                self._answered.notify_all()

    def _end_goal(self, goal_handle: ServerGoalHandle, succeeded: bool, canceled: bool,
                  name: str) -> None:
        """The goal's terminal state: succeeded, canceled (only when the client asked for
        it), else aborted; whenever the ROS context still allows."""
        try:
            if succeeded:
                goal_handle.succeed()
            elif canceled and goal_handle.is_cancel_requested:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        except Exception as exc:  # noqa: BLE001 - the context is gone: nobody to answer
            self.get_logger().warning(f"{name} not answered: {exc!r}")

    def _execute(self, goal_handle: ServerGoalHandle) -> ExecuteCode.Result:
        """Runs one goal to its end and answers it."""
        with self._counted():
            try:
                result = self._run_goal(goal_handle)
            except Exception as exc:  # noqa: BLE001 - a bug here must still answer the client
                self.get_logger().error(f"execute_code failed internally: {exc!r}")
                result = Result(execution_id="", status=Status.ERROR, error=f"internal error: {exc}")
            self._end_goal(goal_handle, result.status == Status.SUCCEEDED,
                           result.status == Status.CANCELED, f"goal {result.execution_id}")
            return convert.result(result)

    def _run_goal(self, goal_handle: ServerGoalHandle) -> Result:
        goal = goal_handle.request
        request = Request(code=goal.code, timeout_s=goal.timeout_s, label=goal.label,
                          on_failure=goal.on_failure, replay_of=goal.replay_of,
                          dry_run=self._seed() if goal.dry_run else None)
        seq = iter(range(2 ** 32))
        started = self.service.start(
            request, goal.lease_id, lambda execution_id, stream, text, elapsed:
            goal_handle.publish_feedback(ExecuteCode.Feedback(
                execution_id=execution_id, stream=stream, text=text, seq=next(seq),
                elapsed_s=elapsed)))
        if isinstance(started, Result):
            return started
        # Once started, the execution is ended here whatever happens below: unended, it
        # would keep the service busy and its lease bound for good.
        key = bytes(goal_handle.goal_id.uuid)
        self._goals[key] = started
        try:
            try:
                cancel = goal_handle.is_cancel_requested    # canceled while it was being started
            except Exception as exc:  # noqa: BLE001 - a goal nobody can follow: stop its code
                self.get_logger().error(f"goal of {started.id} cannot be followed: {exc!r}")
                cancel = True
            if cancel:
                self.service.cancel(started)
        finally:
            try:
                result = self.service.finish(started)
            finally:
                self._goals.pop(key, None)
        return result

    def _never_raising(self, name: str, callback: Callable) -> Callable:
        """``callback``, answering even when it raises: rclpy's executor re-raises a
        callback's exception in spin, which would end the node. The reply then says
        ``success`` False and the error where the type has those fields."""
        def failed(response: Any, exc: Exception) -> Any:
            self.get_logger().error(f"{name} failed internally: {exc!r}")
            for field, value in (("success", False), ("message", f"internal error: {exc!r}")):
                if hasattr(response, field):
                    setattr(response, field, value)
            return response

        if inspect.iscoroutinefunction(callback):      # rclpy awaits these: so must we
            async def answer_later(request: Any, response: Any) -> Any:
                try:
                    return await callback(request, response)
                except Exception as exc:  # noqa: BLE001 - one bad request must not end the node
                    return failed(response, exc)
            return answer_later

        def answer(request: Any, response: Any) -> Any:
            try:
                return callback(request, response)
            except Exception as exc:  # noqa: BLE001 - one bad request must not end the node
                return failed(response, exc)
        return answer

    # ------------------------------------------------------------------ rewind
    def _cancel_rewind(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        cancelled = self._rewinds.get(bytes(goal_handle.goal_id.uuid))
        if cancelled is not None:
            cancelled.set()
        return CancelResponse.ACCEPT

    def _rewind(self, goal_handle: ServerGoalHandle) -> Rewind.Result:
        """Runs one rewind goal to its end (service.rewind), answered as execute_code's."""
        key = bytes(goal_handle.goal_id.uuid)
        cancelled = self._rewinds[key] = threading.Event()
        with self._counted():
            try:
                goal = goal_handle.request
                request = RewindRequest.checked(goal.target, goal.amount, list(goal.parts),
                                                goal.dry_run)
                if isinstance(request, str):
                    outcome = Outcome(False, request)
                else:
                    if goal_handle.is_cancel_requested:
                        cancelled.set()
                    throttle = Throttle(10.0)
                    outcome = self.service.rewind(
                        request, goal.lease_id, cancelled=cancelled,
                        progress=lambda f: throttle.ready() and goal_handle.publish_feedback(
                            Rewind.Feedback(fraction=f)))
            except Exception as exc:  # noqa: BLE001 - a bug here must still answer the client
                self.get_logger().error(f"rewind failed internally: {exc!r}")
                outcome = Outcome(False, f"internal error: {exc}")
            finally:
                self._rewinds.pop(key, None)
            self._end_goal(goal_handle, outcome.success, outcome.canceled, "rewind goal")
            return Rewind.Result(success=outcome.success, message=outcome.message,
                                 waypoints=outcome.waypoints, duration_s=outcome.duration_s)

    # ------------------------------------------------------------------ status
    def _publish_status(self) -> None:
        with self._status_lock:         # snapshot and publish together: the newest goes last
            self._status_pub.publish(convert.execution_status(
                self.service.snapshot(), self.isolation.mechanism, self.get_clock().now().to_msg()))

    # ---------------------------------------------------------------- services
    def _stop_service(self, request: StopExecution.Request,
                      response: StopExecution.Response) -> StopExecution.Response:
        stopped, refusal = self.service.stop(request.lease_id)
        response.success = bool(stopped)
        response.execution_id = ", ".join(stopped)
        response.message = refusal or (f"stopping {', '.join(stopped)}" if stopped
                                       else "nothing is running")
        return response

    def _describe(self, request: Describe.Request, response: Describe.Response) -> Describe.Response:
        d = self._description
        return Describe.Response(markdown=d.markdown, sdk_version=d.sdk_version,
                                 limits_yaml=d.limits_yaml,
                                 skills_markdown=skills_markdown(self.service.skills.list()))

    def _save_skill(self, request: SaveSkill.Request,
                    response: SaveSkill.Response) -> SaveSkill.Response:
        saved = self.service.save_skill(
            request.lease_id, request.name, request.code, request.description,
            request.from_execution_id, request.dry_runs, self._seed, request.origin)
        response.success, response.message = saved.success, saved.message
        response.version, response.dry_runs_passed = saved.version, saved.dry_runs_passed
        return response

    def _list_skills(self, request: ListSkills.Request,
                     response: ListSkills.Response) -> ListSkills.Response:
        response.skills = [convert.skill_info(s) for s in
                           self.service.skills.list(request.query, request.all_versions)]
        return response

    def _get_skill(self, request: GetSkill.Request, response: GetSkill.Response) -> GetSkill.Response:
        skill = self.service.skills.get(request.name, request.version)
        response.success = skill is not None
        if skill is None:
            response.message = self.service.skills.missing(request.name, request.version)
        else:
            response.skill, response.code = convert.skill_info(skill), skill.code
            response.message = skill.ref
        return response

    def _estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        stopped, problems = self.service.estop()
        response.success = not problems
        response.message = "; ".join(
            ([f"killed execution {', '.join(stopped)}"] if stopped else [])
            + (problems or ["arm, base and gripper commanded to stop and hold"])
            + ["estopped: goals are refused until estop/reset"])
        self.get_logger().warning(f"estop: {response.message}")
        return response

    def _reset_estop(self, request: ResetEstop.Request,
                     response: ResetEstop.Response) -> ResetEstop.Response:
        response.success, response.message = self.service.reset_estop(request.lease_id)
        if response.success:
            self.get_logger().info(response.message)
        return response

    def _history_service(self, request: GetHistory.Request,
                         response: GetHistory.Response) -> GetHistory.Response:
        page = self.service.page(offset=request.offset, limit=request.max_count,
                                 holder=request.holder, statuses=list(request.statuses),
                                 include_code=request.include_code,
                                 execution_id=request.execution_id)
        response.records = [convert.record(r) for r in page.records]
        response.total = page.total
        return response

    # ---------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """End running code through the service's end path and let its goal be answered
        while the executor still spins; then the cameras and the stop sockets (the state
        threads end with the service)."""
        self.service.shutdown()
        with self._answered:       # rclpy sends the result right after the callback returns
            self._answered.wait_for(lambda: self._answering == 0, timeout=10.0)
        self.camera_topics.close()
        self.robot_hold.close()
        self.service.history.close()


def skills_markdown(listed: Sequence[Skill], most: int = DESCRIBE_SKILLS,
                    max_bytes: int = DESCRIBE_SKILLS_BYTES) -> str:
    """sdk/describe's skills: the newest ``most`` of ``listed`` (by when they were saved) whose
    markdown fits in ``max_bytes``, then how many were left out and where to find them. The
    answer is read by every agent that starts, so it must not grow with the store."""
    newest = sorted(listed, key=lambda s: s.seq, reverse=True)[:most]
    while True:
        shown = sorted(newest, key=lambda s: s.name)       # the store's order
        text = skills.markdown(shown) if shown else "## Skills\n\n"
        left_out = len(listed) - len(shown)
        if left_out:
            what = (f"{left_out} more skill(s), saved earlier, are" if shown else
                    f"{left_out} skill(s) are saved but")
            text += (f"\n{what} not shown here: list them with skills/list (`tidybot-run "
                     f"--skills [QUERY]`; MCP `list_skills`) and read one with skills/get.\n")
        if not newest or len(text.encode()) <= max_bytes:
            return text
        newest.pop()


def stop_spinning(executor: MultiThreadedExecutor, spinner: threading.Thread,
                  timeout_s: float) -> list[str]:
    """Stop ``executor`` and wait up to ``timeout_s`` for its callbacks and for ``spinner``
    (the thread that spins it) to end; returns what did not, each with where it is.

    rclpy's own wait is unbounded or absent (Kilted joins its thread pool for as long as a
    callback runs; Jazzy does not wait, and Python then joins the pool at exit), so the
    pool's threads are asked to end and joined here, each against one deadline."""
    deadline = time.monotonic() + timeout_s
    if "wait_for_threads" in inspect.signature(executor.shutdown).parameters:
        executor.shutdown(timeout_sec=timeout_s, wait_for_threads=False)
    else:
        executor.shutdown(timeout_sec=timeout_s)
    # the spin thread first: a spin under way may still hand the pool one more callback
    spinner.join(max(0.0, deadline - time.monotonic()))
    pool = getattr(executor, "_executor", None)      # rclpy's ThreadPoolExecutor (private)
    threads = [spinner]
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
        threads += list(getattr(pool, "_threads", ()))
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    frames = sys._current_frames()
    return [f"thread {t.name} in {_where(frames.get(t.ident))}" for t in threads if t.is_alive()]


def _where(frame: Any) -> str:
    """The innermost line of this package in ``frame``'s stack, else its innermost line."""
    stack = traceback.extract_stack(frame) if frame is not None else []
    ours = [f for f in stack if f"{os.sep}tidybot_exec{os.sep}" in f.filename]
    if not (ours or stack):
        return "an unknown place"
    f = (ours or stack)[-1]
    return f"{f.name} ({Path(f.filename).name}:{f.lineno})"


def main(args: list[str] | None = None) -> int:
    """Console entry point ``tidybot-exec``: exits 0 on SIGINT/SIGTERM (once or more), 1 if
    callbacks were still running EXIT_WAIT_S after that, 2 on bad parameters.
    ``tidybot-exec --check-isolation`` checks the sandbox and exits."""
    if "--check-isolation" in (sys.argv if args is None else args):
        return bwrap.check_isolation()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # A signal only wakes this thread (through the wakeup pipe); a second one changes
    # nothing. Nothing that takes a lock runs inside a signal handler.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        node = TidybotExecNode()
    except InvalidParameters as exc:
        print(f"tidybot_exec: invalid parameters: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    # each running goal and rewind keeps a thread (several agents: some at once)
    executor = MultiThreadedExecutor(num_threads=10)
    executor.add_node(node)

    def spin() -> None:
        try:
            while True:
                try:
                    executor.spin()
                    return
                except InvalidHandle as exc:
                    # rclpy#1284: an entity destroyed while the executor was collecting it;
                    # the next collection no longer has it. Never a reason to end the node.
                    node.get_logger().warning(f"the executor met a destroyed entity ({exc}); "
                                              "spinning on")
        finally:
            os.write(wake_w, b"x")   # the context was shut down from elsewhere

    spinner = threading.Thread(target=spin, name="spin")
    spinner.start()
    os.read(wake_r, 1)               # a signal, or the end of spinning
    # From here on, further signals change nothing — also once main returns, when Python
    # would put back the default handlers (it leaves SIG_IGN alone) and a late second
    # Ctrl-C would kill the process after the record was written.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    log = node.get_logger()
    log.info("shutting down")
    node.shutdown()                  # the executor still spins: the running goal is answered
    unfinished = stop_spinning(executor, spinner, EXIT_WAIT_S)
    if unfinished:
        # Python would wait for these threads at exit, for ever: exit without them.
        log.error(f"exiting with what did not end within {EXIT_WAIT_S:g}s: "
                  + "; ".join(unfinished))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
