"""The tidybot_exec node: the thin ROS shell around the pure core.

Everything with behaviour lives in rclpy-free modules (executor, history, robot_stop,
params, the SDK); this module declares parameters and wires the core to the execute_code
action, the execution/* and estop services and the execution/status topic.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future
from std_srvs.srv import Trigger
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionRecord, ExecutionStatus, LeaseStatus
from tidybot_interfaces.srv import (AcquireLease, GetHistory, ReleaseLease, RenewLease,
                                    StopExecution)

from tidybot_exec.dry_run import Seed
from tidybot_exec.executor import Execution, Executor, ExecutorSettings, Request, Result
from tidybot_exec.history import History, Record
from tidybot_exec.leases import Grant, LeaseManager
from tidybot_exec.params import PARAMS, validate
from tidybot_exec.qos import LATCHED, SERVICES
from tidybot_exec.backend_monitor import Level
from tidybot_exec.robot_stop import RobotStopper
from tidybot_exec.state_topics import StateTopics, status
from tidybot_exec.status import Status
from tidybot_sdk import protocol as proto
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.limits import SafetyLimits

NODE_NAME = "tidybot_exec"

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
          list: ParameterType.PARAMETER_DOUBLE_ARRAY}


class InvalidParameters(Exception):
    """The parameters given to the node make no sense; the node refuses to start."""


def sdk_config(p: dict[str, Any]) -> SdkConfig:
    """What the code process needs: backend endpoints and safety limits, from parameters."""
    q = SafetyLimits()
    limits = SafetyLimits(
        joint_min=q.joint_min, joint_max=q.joint_max, joint_speed=p["joint_speed_cap"],
        cartesian_speed=p["cartesian_speed_cap"],
        cartesian_angular_speed=p["cartesian_angular_speed_cap"],
        ee_box=tuple(zip(p["ee_box_min"], p["ee_box_max"])), base_speed=p["base_speed_cap"],
        base_angular_speed=p["base_angular_speed_cap"],
        base_box=tuple(zip(p["base_box_min"], p["base_box_max"])),
        gripper_max_force=p["gripper_max_force"])
    endpoints = {backend: {role: f"tcp://{p[backend + '_host']}:{p[f'{backend}_{role}_port']}"
                           for role in roles} for backend, roles in proto.SOCKETS.items()}
    return SdkConfig(limits=limits, request_timeout_s=p["request_timeout_s"]).with_endpoints(endpoints)


def executor_settings(p: dict[str, Any], config: SdkConfig) -> ExecutorSettings:
    mib = 1024 ** 2
    return ExecutorSettings(
        default_timeout_s=p["default_timeout_s"], max_timeout_s=p["max_timeout_s"],
        max_code_bytes=p["max_code_bytes"], max_output_bytes=p["max_output_bytes"],
        feedback_rate_hz=p["feedback_rate_hz"], feedback_max_bytes=p["feedback_max_bytes"],
        stop_grace_s=p["stop_grace_s"], address_space_bytes=p["child_address_space_mb"] * mib,
        open_files=p["child_open_files"], file_size_bytes=p["child_file_size_mb"] * mib,
        sdk_config_json=config.to_json())


def _fill(response: AcquireLease.Response, grant: Grant) -> AcquireLease.Response:
    response.success, response.lease_id = grant.success, grant.lease_id
    response.message, response.ttl_s = grant.message, grant.ttl_s
    return response


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int((seconds % 1.0) * 1e9))


class TidybotExecNode(Node):
    """Serves execute_code and its companions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.settings = p = self._declare_parameters()
        config = sdk_config(p)
        self.stopper = RobotStopper(config, self.get_logger().warning, timeout_s=1.0)
        self.executor_core = Executor(executor_settings(p, config), self.stopper)
        self.history = History(p["history_dir"], p["history_max_records"])
        self._goals: dict[bytes, Execution] = {}        # goal uuid -> its running execution
        self._tokens: dict[str, str] = {}               # execution id -> its lease token
        self._last: Result | None = None
        self._status_lock = threading.Lock()
        self.leases = LeaseManager(
            default_ttl_s=p["lease_default_ttl_s"], max_lease_s=p["max_lease_s"],
            max_wait_s=p["lease_max_wait_s"], on_end=self._lease_ended,
            on_change=lambda: self._publish_lease_status())

        actions = ReentrantCallbackGroup()
        services = ReentrantCallbackGroup()
        self._status_pub = self.create_publisher(ExecutionStatus, "execution/status", LATCHED)
        self._lease_pub = self.create_publisher(LeaseStatus, "lease/status", LATCHED)
        self._action = ActionServer(
            self, ExecuteCode, "execute_code", execute_callback=self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT, cancel_callback=self._cancel,
            callback_group=actions, result_timeout=int(p["max_timeout_s"]) + 600,
            goal_service_qos_profile=SERVICES, result_service_qos_profile=SERVICES,
            cancel_service_qos_profile=SERVICES)
        self.create_service(StopExecution, "execution/stop", self._stop_service,
                            qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(Trigger, "estop", self._estop, qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(GetHistory, "execution/history", self._history_service,
                            qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(AcquireLease, "lease/acquire", self._acquire, qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(RenewLease, "lease/renew", self._renew, qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(ReleaseLease, "lease/release", self._release, qos_profile=SERVICES,
                            callback_group=services)
        self.create_service(AcquireLease, "lease/take", self._take, qos_profile=SERVICES,
                            callback_group=services)
        self.state_topics = StateTopics(self, config, p, self._diagnostics)
        self.create_timer(1.0, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_status()
        self._publish_lease_status()
        self.get_logger().info(
            f"ready: arm {p['arm_host']}:{p['arm_cmd_port']}, gripper {p['gripper_host']}:"
            f"{p['gripper_cmd_port']}, base {p['base_host']}:{p['base_cmd_port']}; history in "
            f"{self.history.path}")

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
    def authorize(self, lease_id: str) -> tuple[str, str]:
        """(holder, refusal reason) for a request carrying ``lease_id``."""
        holder = self.leases.holder_of(lease_id) if lease_id else None
        if holder is not None or not self.settings["require_lease"]:
            return holder or "", ""
        if not lease_id:
            return "", "no lease: call lease/acquire and pass its lease_id"
        return "", "invalid lease: expired, released or not the current one; acquire again"

    def _lease_ended(self, token: str, reason: str) -> None:
        """A lease lapsed, was released or revoked: stop code running under it."""
        if token in self._tokens.values():
            self.executor_core.stop_current(Status.CANCELED, reason)
        self.get_logger().info(f"lease ended: {reason}")

    async def _acquire(self, request: AcquireLease.Request,
                       response: AcquireLease.Response) -> AcquireLease.Response:
        # Waiting in line holds no executor thread: the callback awaits a future that the
        # lease manager completes from its own thread.
        future = Future(executor=self.executor)
        future.add_done_callback(lambda _: None)   # makes completion wake the executor
        self.leases.acquire(request.holder, request.ttl_s, request.wait_s, future.set_result)
        grant: Grant = await future
        _fill(response, grant)
        if grant.success:
            self.get_logger().info(f"lease granted to {request.holder!r} ({grant.ttl_s:g}s ttl)")
        return response

    def _take(self, request: AcquireLease.Request,
              response: AcquireLease.Response) -> AcquireLease.Response:
        """Operator override: holders listed in override_holders take the lease at once."""
        allowed = {h.strip() for h in self.settings["override_holders"].split(",") if h.strip()}
        if request.holder.strip() not in allowed:
            response.message = (f"{request.holder!r} may not take the lease over "
                                f"(parameter override_holders)")
            return response
        _fill(response, self.leases.take(request.holder, request.ttl_s))
        self.get_logger().warning(f"lease taken over by {request.holder!r}")
        return response

    def _renew(self, request: RenewLease.Request, response: RenewLease.Response) -> RenewLease.Response:
        response.success, response.message, response.remaining_s = self.leases.renew(request.lease_id)
        return response

    def _release(self, request: ReleaseLease.Request,
                 response: ReleaseLease.Response) -> ReleaseLease.Response:
        response.success, response.message = self.leases.release(request.lease_id)
        return response

    def _publish_lease_status(self) -> None:
        with self._status_lock:         # snapshot and publish together: the newest goes last
            s = self.leases.status()
            self._lease_pub.publish(LeaseStatus(
                stamp=self.get_clock().now().to_msg(), held=s.held, holder=s.holder,
                seconds_to_lapse=s.seconds_to_lapse, waiting_holders=s.waiting_holders))

    def _tick(self) -> None:
        self._publish_status()
        if self.leases.status().held:
            self._publish_lease_status()
        self.state_topics.publish_diagnostics()

    def _diagnostics(self) -> list:
        """Executor and lease entries of /diagnostics."""
        current, last = self.executor_core.current, self._last
        executor = (status("executor", Level.OK, f"running {current.id}", label=current.request.label,
                           elapsed_s=f"{current.elapsed:.1f}")
                    if current else status("executor", Level.OK, "idle",
                                           last_result=last.status.name if last else "none"))
        lease = self.leases.status()
        return [executor, status("lease", Level.OK, f"held by {lease.holder}" if lease.held else "free",
                                 seconds_to_lapse=f"{lease.seconds_to_lapse:.1f}",
                                 waiting=len(lease.waiting_holders))]

    # ------------------------------------------------------------------ action
    def _cancel(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        execution = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if execution is not None:
            execution.stop(Status.CANCELED, "canceled by the client")
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle: ServerGoalHandle) -> ExecuteCode.Result:
        """Runs one goal to its end; never raises (every path ends with a filled result)."""
        try:
            result = self._run_goal(goal_handle)
        except Exception as exc:  # a bug here must still answer the client
            self.get_logger().error(f"execute_code failed internally: {exc!r}")
            result = Result(execution_id="", status=Status.ERROR, error=f"internal error: {exc}")
        if result.status == Status.SUCCEEDED:
            goal_handle.succeed()
        elif result.status == Status.CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return ExecuteCode.Result(
            execution_id=result.execution_id, status=int(result.status),
            exit_code=int(result.exit_code), stdout=result.stdout, stderr=result.stderr,
            truncated=result.truncated, error=result.error, duration_s=result.duration_s)

    def _run_goal(self, goal_handle: ServerGoalHandle) -> Result:
        goal = goal_handle.request
        holder, refusal = self.authorize(goal.lease_id)
        request = Request(code=goal.code, timeout_s=goal.timeout_s, label=goal.label, holder=holder,
                          dry_run=Seed.from_states(self.state_topics.fresh_states())
                          if goal.dry_run else None)
        if refusal:
            return Executor.rejected(request, refusal)
        seq = iter(range(2 ** 32))
        started = self.executor_core.submit(
            request, lambda execution_id, stream, text, elapsed: goal_handle.publish_feedback(
                ExecuteCode.Feedback(execution_id=execution_id, stream=stream, text=text,
                                     seq=next(seq), elapsed_s=elapsed)))
        if isinstance(started, Result):
            return started
        key = bytes(goal_handle.goal_id.uuid)
        self._goals[key] = started
        if goal.lease_id and self.leases.begin_execution(goal.lease_id):
            self._tokens[started.id] = goal.lease_id
        elif self.settings["require_lease"]:     # the lease ended between check and start
            started.stop(Status.CANCELED, "the lease ended before the code started")
        if goal_handle.is_cancel_requested:     # canceled while it was being started
            started.stop(Status.CANCELED, "canceled by the client")
        self._publish_status()
        try:
            result = self.executor_core.finish(started)
        finally:
            self._goals.pop(key, None)
            if self._tokens.pop(started.id, None):
                self.leases.end_execution(goal.lease_id)
        self._last = result
        self.history.append(Record.from_result(result))
        self._publish_status()
        self.get_logger().info(
            f"execution {result.execution_id} ({result.label or 'no label'}): "
            f"{result.status.name} in {result.duration_s:.2f}s" +
            (f": {result.error}" if result.error else ""))
        return result

    # ------------------------------------------------------------------ status
    def _publish_status(self) -> None:
        with self._status_lock:         # snapshot and publish together: the newest goes last
            current = self.executor_core.current
            msg = ExecutionStatus(stamp=self.get_clock().now().to_msg())
            if current is not None:
                msg.state = (ExecutionStatus.STATE_STOPPING if current.stopping
                             else ExecutionStatus.STATE_RUNNING)
                msg.execution_id, msg.holder = current.id, current.request.holder
                msg.label, msg.elapsed_s = current.request.label, current.elapsed
                msg.dry_run = current.request.dry_run is not None
            else:
                msg.state = ExecutionStatus.STATE_IDLE
            if self._last is not None:
                msg.last_execution_id, msg.last_status = self._last.execution_id, int(self._last.status)
                if current is None:
                    msg.execution_id, msg.holder, msg.label, msg.dry_run = (
                        self._last.execution_id, self._last.holder, self._last.label,
                        self._last.dry_run)
            self._status_pub.publish(msg)

    # ---------------------------------------------------------------- services
    def _stop_service(self, request: StopExecution.Request,
                      response: StopExecution.Response) -> StopExecution.Response:
        _, refusal = self.authorize(request.lease_id)
        if refusal:
            response.message = refusal
            return response
        stopped = self.executor_core.stop_current(Status.CANCELED, "stopped via execution/stop")
        response.success = stopped is not None
        response.execution_id = stopped or ""
        response.message = f"stopping {stopped}" if stopped else "nothing is running"
        self._publish_status()
        return response

    def _estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        stopped = self.executor_core.stop_current(Status.CANCELED, "emergency stop")
        problems = self.stopper()
        response.success = not problems
        response.message = "; ".join(
            ([f"stopping execution {stopped}"] if stopped else [])
            + (problems or ["arm, base and gripper commanded to stop and hold"]))
        self.get_logger().warning(f"estop: {response.message}")
        return response

    def _history_service(self, request: GetHistory.Request,
                         response: GetHistory.Response) -> GetHistory.Response:
        response.records = [ExecutionRecord(
            execution_id=r.execution_id, holder=r.holder, label=r.label, status=r.status,
            exit_code=r.exit_code, error=r.error, started=stamp(r.started),
            finished=stamp(r.finished), duration_s=r.duration_s, code_sha256=r.code_sha256,
            stdout_tail=r.stdout_tail, stderr_tail=r.stderr_tail, truncated=r.truncated,
            code=r.code, dry_run=r.dry_run) for r in self.history.newest(request.max_count)]
        return response

    # ---------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop running code through the stop path and wait for it (node shutdown)."""
        current = self.executor_core.current
        if current is not None:
            current.stop(Status.CANCELED, "node shutting down")
            current.proc.wait()
            self.stopper()
        self.leases.close()
        self.state_topics.close()
        self.stopper.close()


def main(args: list[str] | None = None) -> int:
    """Console entry point ``tidybot-exec``: exits 0 on SIGINT/SIGTERM, 2 on bad parameters."""
    rclpy.init(args=args)
    node = None
    try:
        node = TidybotExecNode()
        executor = MultiThreadedExecutor(num_threads=6)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameters as exc:
        print(f"tidybot_exec: invalid parameters: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
