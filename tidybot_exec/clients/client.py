"""A Python client for agents and other nodes, in the style of nav2_simple_commander.

    client = TidybotClient(node)              # any rclpy node
    client.wait_for_server()
    client.acquire("my-agent")                # keeps the lease alive while the node spins
    run = client.execute("from tidybot_sdk import arm\\narm.go_home()")
    while not run.is_done():
        for fb in run.feedback():
            print(fb.text, end="")
    print(run.result().status)
    client.release()

The client works whether or not someone else spins the node: if the node already belongs
to an executor when the client is made, the client only waits on futures (that executor
must keep spinning); otherwise it spins the node itself while it waits.

Replies get lost on a loaded machine: a server that has not yet discovered a new client's
reader drops what it sends there (ros2/rmw_fastrtps#390 waits only 100 ms for the match).
``wait_for_server`` therefore returns only once the server has answered this client (see
``_handshake``), after which its replies and the first lines of its goals' feedback
arrive. The client does not hang on a reply lost anyway: service requests that may be
repeated are sent again every RETRY_S; it names each goal itself and watches the action's
status topic, so a goal whose acceptance reply was lost is recognised as accepted, a
result request is sent again once the goal is known to be done, and a cancel is sent
again until the server shows the goal canceling or done.
"""
from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

import rclpy
from action_msgs.msg import GoalStatus, GoalStatusArray
from rclpy.action import ActionClient
from rclpy.action.client import ClientGoalHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_action_status_default
from rclpy.subscription import Subscription
from unique_identifier_msgs.msg import UUID
from std_srvs.srv import Trigger
from tidybot_interfaces.action import ExecuteCode, Rewind
from tidybot_interfaces.msg import ExecutionRecord, ExecutionStatus, LeaseStatus
from tidybot_interfaces.msg import SkillInfo
from tidybot_interfaces.srv import (AcquireLease, Describe, GetHistory, GetSkill, ListSkills,
                                    ReleaseLease, RenewLease, SaveSkill, StopExecution)

from tidybot_exec.ros.qos import LATCHED, SERVICES
from tidybot_sdk.protocol import resource_set


def resources_arg(text: str) -> tuple[str, ...]:
    """``--resources LIST`` of tidybot-run and tidybot-mcp: parts of the robot, checked here
    (a typo must not become a lease on the whole robot)."""
    import argparse  # noqa: PLC0415 - only the command lines need it

    try:
        return resource_set(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class TidybotClientError(RuntimeError):
    """The server could not be reached, or refused a lease request."""


ACTIVE = (GoalStatus.STATUS_ACCEPTED, GoalStatus.STATUS_EXECUTING, GoalStatus.STATUS_CANCELING)
DONE = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED)
RETRY_S = 2.0      # a reply not here this long after the server showed the goal's state: ask again
BETWEEN_WAITS_S = 1.0   # for a spinning executor to start a task (see _between_waits)
T = TypeVar("T")


class _Action:
    """One action of the node as this client sees it: its ActionClient and the goal states
    its status topic last showed (how a goal whose replies were lost is still followed)."""

    def __init__(self, client: "TidybotClient", action_type: type, name: str) -> None:
        self.type, self.states = action_type, {}
        self.client = client._between_waits(lambda: ActionClient(
            client.node, action_type, name, goal_service_qos_profile=SERVICES,
            result_service_qos_profile=SERVICES, cancel_service_qos_profile=SERVICES))
        client._own(self.client)
        client._own(client.node.create_subscription(
            GoalStatusArray, f"{name}/_action/status", self._on_status,
            qos_profile_action_status_default))
        self._notify = client._notify

    def _on_status(self, msg: GoalStatusArray) -> None:
        self.states = {bytes(s.goal_info.goal_id.uuid): s.status for s in msg.status_list}
        self._notify()

    def status(self, goal_id: UUID) -> int:
        return self.states.get(bytes(goal_id.uuid), GoalStatus.STATUS_UNKNOWN)

    def adopt(self, goal_id: UUID) -> ClientGoalHandle:
        """A handle for a goal the server accepted although its reply never came."""
        response = self.type.Impl.SendGoalService.Response(accepted=True)
        return ClientGoalHandle(self.client, goal_id, response)

    def send(self, client: "TidybotClient", goal: Any, on_feedback: Callable | None
             ) -> "ExecutionHandle":
        handle = ExecutionHandle(client, self, UUID(uuid=list(os.urandom(16))), on_feedback)
        handle._send_future = self.client.send_goal_async(
            goal, feedback_callback=handle._on_feedback, goal_uuid=handle.goal_id)
        handle._send_future.add_done_callback(handle._on_goal_response)
        return handle


class ExecutionHandle:
    """One goal (execute_code, or rewind): poll it, read its feedback, cancel it, get its
    result."""

    def __init__(self, client: "TidybotClient", action: _Action, goal_id: UUID,
                 on_feedback: Callable[[Any], None] | None = None) -> None:
        self._client, self._action = client, action
        self.goal_id = goal_id
        self._on_feedback_callback = on_feedback
        self._send_future = None        # set by _Action.send
        self._goal_handle: ClientGoalHandle | None = None
        self._result_future = None
        self._result_asked = 0.0
        self._feedback: list[ExecuteCode.Feedback] = []
        self._lock = threading.Lock()
        self._accept_lock = threading.RLock()   # the spinning thread and the caller's
        self.lost_feedback = 0          # gaps seen in seq (feedback lost on the way)
        self.recovered: list[str] = []  # replies that were lost and recovered
        self._next_seq = 0

    def _on_feedback(self, msg) -> None:
        fb = msg.feedback
        with self._lock:
            if hasattr(fb, "seq"):
                self.lost_feedback += max(0, fb.seq - self._next_seq)
                self._next_seq = fb.seq + 1
            if self._on_feedback_callback is None:  # else the callback owns them: a long run
                self._feedback.append(fb)           # must not pile up what nobody drains
        self._client._notify()
        if self._on_feedback_callback is not None:
            self._on_feedback_callback(fb)

    @property
    def _server_status(self) -> int:
        """The goal's state as the action's status topic last showed it."""
        return self._action.status(self.goal_id)

    def accepted(self, timeout_s: float = 30.0) -> ClientGoalHandle:
        """Wait until the server accepted the goal (learned from the reply or, if that was
        lost, from the status topic); the result is asked for from then on."""
        self._until(self._check_accepted, timeout_s, "goal acceptance")
        return self._goal_handle

    def is_accepted(self) -> bool:
        """Whether the server is known to have accepted the goal (no wait, no spin)."""
        return self._goal_handle is not None

    def _check_accepted(self) -> bool:
        """Learn acceptance from the reply or, if it was lost, from the status topic."""
        with self._accept_lock:
            if self._goal_handle is not None:
                return True
            if self._send_future.done():
                handle = self._send_future.result()
                if not handle.accepted:
                    raise TidybotClientError("the server rejected the goal")
            elif self._server_status in ACTIVE + DONE:
                handle = self._action.adopt(self.goal_id)
                self.recovered.append("goal acceptance")
            else:
                return False
            self._goal_handle = handle
            self._ask_result()
            return True

    def _on_goal_response(self, future) -> None:
        """In the spinning thread: ask for the result at once (not at the caller's next poll)."""
        try:
            if future.result().accepted:
                self._check_accepted()
        finally:
            self._client._notify()

    def _ask_result(self) -> None:
        self._result_future = self._goal_handle.get_result_async()
        self._result_future.add_done_callback(lambda _: self._client._notify())
        self._result_asked = time.monotonic()

    def _check_done(self) -> bool:
        """True once the result is here; asks again when the server shows the goal done
        but the answer has not come for RETRY_S."""
        if not self._check_accepted():
            return False
        if self._result_future.done():
            return True
        if self._server_status in DONE and time.monotonic() - self._result_asked > RETRY_S:
            self.recovered.append("result")
            self._ask_result()
        return False

    def _until(self, check: Callable[[], bool], timeout_s: float | None, what: str) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not check():
            if deadline is not None and time.monotonic() > deadline:
                raise TidybotClientError(f"timed out after {timeout_s:g}s waiting for {what}")
            self._client._pause()

    def feedback(self) -> list[ExecuteCode.Feedback]:
        """Feedback messages that arrived since the last call (stream, text, seq...); none
        when the goal was sent with a feedback callback, which gets each one instead. The
        last ones may arrive after the result (another channel); the result's stdout and
        stderr are complete."""
        self._client._spin_briefly()
        with self._lock:
            new, self._feedback = self._feedback, []
        return new

    def is_done(self) -> bool:
        self._client._spin_briefly()
        return self._check_done()

    def cancel(self, timeout_s: float = 10.0) -> None:
        """Ask the server to cancel, again until it shows the goal canceling or done; the
        result then comes with STATUS_CANCELED (unless it had ended already)."""
        self.accepted(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._goal_handle.cancel_goal_async()
            sent = time.monotonic()
            while time.monotonic() - sent < RETRY_S:
                if reply.done() or self._server_status in (GoalStatus.STATUS_CANCELING, *DONE):
                    return
                self._client._pause()
            if time.monotonic() > deadline:
                raise TidybotClientError(f"timed out after {timeout_s:g}s waiting for the "
                                         f"cancel response")
            self.recovered.append("cancel response")

    def result(self, timeout_s: float | None = None) -> Any:
        """Wait for and return the result (ExecuteCode.Result: see its status field;
        Rewind.Result: success and message)."""
        self._until(self._check_done, timeout_s, "the result")
        return self._result_future.result().result

    @property
    def action_status(self) -> int:
        """action_msgs/GoalStatus of the goal (SUCCEEDED, CANCELED, ABORTED...)."""
        if self._result_future is None or not self._result_future.done():
            return GoalStatus.STATUS_UNKNOWN
        return self._result_future.result().status


class TidybotClient:
    """execute_code, the lease services and the status topics of one tidybot_exec node."""

    def __init__(self, node: Node, namespace: str = "") -> None:
        self.node = node
        self._spun_elsewhere = node.executor is not None
        self._activity = threading.Event()      # a reply, feedback or status arrived
        prefix = namespace.rstrip("/")
        name = lambda n: f"{prefix}/{n}" if prefix else n  # noqa: E731
        self._entities: list[Any] = []          # destroyed with the client
        self._action = _Action(self, ExecuteCode, name("execute_code"))
        self._rewind = _Action(self, Rewind, name("rewind"))
        service = lambda srv_type, n: self._own(node.create_client(  # noqa: E731
            srv_type, name(n), qos_profile=SERVICES))
        self._acquire = service(AcquireLease, "lease/acquire")
        self._release = service(ReleaseLease, "lease/release")
        self._stop = service(StopExecution, "execution/stop")
        self._estop = service(Trigger, "estop")
        self._history = service(GetHistory, "execution/history")
        self._describe = service(Describe, "sdk/describe")
        self._save_skill = service(SaveSkill, "skills/save")
        self._list_skills = service(ListSkills, "skills/list")
        self._get_skill = service(GetSkill, "skills/get")
        self._renew = service(RenewLease, "lease/renew")     # last: the handshake's (see there)
        self._met = False               # the server has answered this client
        self._latest: dict[str, Any] = {}
        self._own(node.create_subscription(ExecutionStatus, name("execution/status"),
                                           lambda m: self._latest.__setitem__("execution", m),
                                           LATCHED))
        self._own(node.create_subscription(LeaseStatus, name("lease/status"),
                                           lambda m: self._latest.__setitem__("lease", m), LATCHED))
        self.lease_id = ""
        self._renew_timer = None

    def _own(self, entity: Any) -> Any:
        self._entities.append(entity)
        return entity

    def _between_waits(self, fn: Callable[[], T]) -> T:
        """``fn()`` at a moment no executor gathers this node's wait set. rclpy's ActionClient
        is added to the node before it is complete (Kilted: before its ``_lock`` exists) and
        can be destroyed while an executor holds it (ros2/rclpy#1385); either kills an
        executor spinning in another thread. With such an executor ``fn`` runs as its task,
        between two waits; if it has not started within BETWEEN_WAITS_S (that executor does
        not spin, or this is its thread) it runs here."""
        if not self._spun_elsewhere:
            return fn()
        claimed = threading.Lock()
        task = self.node.executor.create_task(
            lambda: fn() if claimed.acquire(blocking=False) else None)
        if self._wait(task, BETWEEN_WAITS_S) or not claimed.acquire(blocking=False):
            self._wait(task, math.inf)          # done, or running fn now
            return task.result()
        return fn()

    # -------------------------------------------------------------- waiting
    def _spin_briefly(self) -> None:
        if not self._spun_elsewhere:
            rclpy.spin_once(self.node, timeout_sec=0.01)

    def _notify(self) -> None:
        self._activity.set()

    def _pause(self) -> None:
        """Let callbacks run: spin the node ourselves, or wait for the executor spinning it
        to deliver something (at most 10 ms, then the caller checks again anyway)."""
        if self._spun_elsewhere:
            self._activity.wait(0.01)
            self._activity.clear()
        else:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def _wait(self, future, timeout_s: float) -> bool:
        """True once ``future`` is done, False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        future.add_done_callback(lambda _: self._notify())
        while not future.done():
            if time.monotonic() > deadline:
                return False
            self._pause()
        return True

    def _call(self, client, request, timeout_s: float, what: str, resend: bool = True):
        """The reply to ``request``. With ``resend`` (requests that may be repeated: all but
        acquire) it is sent again every RETRY_S until one is answered."""
        deadline = time.monotonic() + timeout_s
        if not client.wait_for_service(timeout_sec=min(timeout_s, 10.0)):
            raise TidybotClientError(f"service {client.srv_name} is not available")
        while True:
            left = deadline - time.monotonic()
            future = client.call_async(request)
            if self._wait(future, min(left, RETRY_S) if resend else left):
                return future.result()
            client.remove_pending_request(future)
            if time.monotonic() >= deadline:
                raise TidybotClientError(f"timed out after {timeout_s:g}s waiting for {what}")

    def _handshake(self, timeout_s: float) -> None:
        """Get one reply from the server on the service client made last. A DDS participant
        announces its readers in the order they were made and the server matches them in
        that order, so this reply proves the server has matched every reader this client
        made before: the action's feedback and all service replies. Until then a reply or
        a goal's first feedback can be sent to a reader the server does not know (lost)."""
        self._call(self._renew, RenewLease.Request(), timeout_s, "the server's first reply")
        self._met = True

    def wait_for_server(self, timeout_s: float = 30.0) -> bool:
        """True once the execute_code action server is up and has discovered this client
        (nothing it sends this client is lost to discovery from then on). Call it again
        after the server restarted: the new one must discover this client anew."""
        deadline = time.monotonic() + timeout_s
        if not self._action.client.wait_for_server(timeout_sec=timeout_s):
            return False
        try:
            self._handshake(max(deadline - time.monotonic(), RETRY_S))
        except TidybotClientError:
            return False
        return True

    # ---------------------------------------------------------------- lease
    def acquire(self, holder: str, ttl_s: float = 0.0, wait_s: float = 0.0,
                keep_alive: bool = True, resources: Sequence[str] = ()) -> str:
        """Acquire the lease of ``resources`` (any of arm, gripper, base; none: the whole
        robot), waiting up to ``wait_s`` in line; returns the token and keeps it for later
        calls. With ``keep_alive`` it is renewed every ttl/3 while the node spins. Raises
        TidybotClientError when it is not granted."""
        # Not sent twice (a second one would find the lease held by the first): the handshake
        # makes sure the reply can reach us.
        if not self._met:
            self._handshake(15.0)
        # float(): unless ROS_PYTHON_CHECK_FIELDS=1, an int in a float64 field is sent as garbage
        reply = self._call(self._acquire, AcquireLease.Request(holder=holder, ttl_s=float(ttl_s),
                                                               wait_s=float(wait_s),
                                                               resources=list(resources)),
                           wait_s + 15.0, "the lease", resend=False)
        if not reply.success:
            raise TidybotClientError(f"lease not granted: {reply.message}")
        self.lease_id = reply.lease_id
        if self._renew_timer is not None:       # a lease acquired before: its renewals end
            self.node.destroy_timer(self._renew_timer)
            self._renew_timer = None
        if keep_alive:
            self._renew_timer = self.node.create_timer(max(0.2, reply.ttl_s / 3.0), self._keep_alive)
        return self.lease_id

    def _keep_alive(self) -> None:
        if self.lease_id:
            self._renew.call_async(RenewLease.Request(lease_id=self.lease_id))

    def renew(self) -> float:
        """Renew now; returns the seconds left."""
        reply = self._call(self._renew, RenewLease.Request(lease_id=self.lease_id), 10.0, "renew")
        if not reply.success:
            raise TidybotClientError(f"renew refused: {reply.message}")
        return reply.remaining_s

    def release(self, timeout_s: float = 15.0) -> None:
        """Give the lease back (stops any code still running under it), asking again when a
        reply is lost; raises TidybotClientError when none was answered."""
        if self._renew_timer is not None:
            self.node.destroy_timer(self._renew_timer)
            self._renew_timer = None
        if not self.lease_id:
            return
        token, self.lease_id = self.lease_id, ""
        try:        # answered "released" or "not the current lease": either way not ours now
            self._call(self._release, ReleaseLease.Request(lease_id=token), timeout_s, "release")
        except TidybotClientError as exc:
            raise TidybotClientError(f"could not release the lease ({exc}); it lapses after "
                                     f"its ttl") from None

    # ------------------------------------------------------------ executing
    def execute(self, code: str, timeout_s: float = 0.0, label: str = "",
                dry_run: bool = False, lease_id: str | None = None, on_failure: str = "",
                feedback_callback: Callable[[ExecuteCode.Feedback], None] | None = None,
                replay_of: str = "") -> ExecutionHandle:
        """Send code to run; returns at once with a handle (see ExecutionHandle).
        ``feedback_callback`` gets each feedback message as it arrives (in the thread that
        spins the node) instead of ``feedback()``. ``on_failure="rewind"``: a failed or
        timed-out run's own motion is rewound to where it began. ``replay_of``: run that
        finished execution's code again, with the skill versions it imported (``code``
        empty)."""
        goal = ExecuteCode.Goal(code=code, timeout_s=float(timeout_s), label=label,
                                dry_run=dry_run, on_failure=on_failure, replay_of=replay_of,
                                lease_id=self.lease_id if lease_id is None else lease_id)
        return self._action.send(self, goal, feedback_callback)

    def rewind(self, target: str = "start", amount: float = 0.0, parts: Sequence[str] = (),
               dry_run: bool = False, lease_id: str | None = None,
               feedback_callback: Callable[[Rewind.Feedback], None] | None = None
               ) -> ExecutionHandle:
        """Drive the robot back along its recorded trajectory (action rewind; see
        docs/rewind.md for the targets): returns at once with a handle whose result is a
        Rewind.Result (success, message, waypoints, duration_s)."""
        goal = Rewind.Goal(target=target, amount=float(amount), parts=list(parts),
                           dry_run=dry_run,
                           lease_id=self.lease_id if lease_id is None else lease_id)
        return self._rewind.send(self, goal, feedback_callback)

    def stop(self) -> StopExecution.Response:
        """Stop whatever runs (execution/stop) with this client's lease."""
        return self._call(self._stop, StopExecution.Request(lease_id=self.lease_id), 10.0, "stop")

    def estop(self) -> Trigger.Response:
        """Emergency stop (no lease): kills any running code and holds every backend; it
        latches until estop/reset. Asked again until answered (a repeat does nothing more)."""
        return self._call(self._estop, Trigger.Request(), 15.0, "the estop")

    def describe(self) -> Describe.Response:
        """The SDK manual, the server's version and the limits it enforces (sdk/describe)."""
        return self._call(self._describe, Describe.Request(), 10.0, "the SDK description")

    def save_skill(self, name: str, code: str = "", description: str = "",
                   from_execution_id: str = "", dry_runs: int = 0, origin: str = "",
                   timeout_s: float | None = None) -> SaveSkill.Response:
        """Save a new version of skill ``name`` (skills/save): ``code``, or the code of the
        SUCCEEDED execution ``from_execution_id``; ``dry_runs`` N proves it first on N dry
        runs; ``origin`` says where imported code came from. Not sent again on a lost reply
        (a save is not idempotent); the default wait allows 10 minutes per dry run."""
        if timeout_s is None:
            timeout_s = 60.0 + 600.0 * dry_runs
        request = SaveSkill.Request(lease_id=self.lease_id, name=name, description=description,
                                    code=code, from_execution_id=from_execution_id,
                                    dry_runs=int(dry_runs), origin=origin)
        return self._call(self._save_skill, request, timeout_s, "the skill save", resend=False)

    def list_skills(self, query: str = "", all_versions: bool = False) -> list[SkillInfo]:
        """The skills in the store (newest version of each name unless ``all_versions``)
        whose name, description or docstring contains ``query``."""
        request = ListSkills.Request(query=query, all_versions=all_versions)
        return list(self._call(self._list_skills, request, 10.0, "the skill list").skills)

    def get_skill(self, name: str, version: int = 0) -> GetSkill.Response:
        """One version of a skill (0: the latest) with its code."""
        return self._call(self._get_skill, GetSkill.Request(name=name, version=int(version)),
                          10.0, "the skill")

    def history(self, count: int = 10) -> list[ExecutionRecord]:
        """The newest finished executions, newest first."""
        return list(self._call(self._history, GetHistory.Request(max_count=count), 10.0,
                               "history").records)

    def record(self, execution_id: str) -> ExecutionRecord | None:
        """The history record of ``execution_id``, with its code (None when not kept)."""
        records = self._call(self._history, GetHistory.Request(
            max_count=1, execution_id=execution_id, include_code=True), 10.0, "history").records
        return records[0] if records else None

    def status(self, timeout_s: float = 5.0) -> tuple[ExecutionStatus | None, LeaseStatus | None]:
        """The latest execution/status and lease/status (both latched)."""
        deadline = time.monotonic() + timeout_s
        while len(self._latest) < 2 and time.monotonic() < deadline:
            if self._spun_elsewhere:
                time.sleep(0.01)
            else:
                self._spin_briefly()
        return self._latest.get("execution"), self._latest.get("lease")

    def destroy(self) -> None:
        """Release the lease, and remove this client's entities from the node."""
        self.release()
        self._between_waits(self._destroy_entities)

    def _destroy_entities(self) -> None:
        entities, self._entities = self._entities, []   # a second destroy finds none
        for entity in entities:
            if isinstance(entity, ActionClient):
                entity.destroy()
            elif isinstance(entity, Subscription):
                self.node.destroy_subscription(entity)
            else:
                self.node.destroy_client(entity)


@contextmanager
def spun_client(node_name: str, namespace: str = "", **init_kwargs: Any) -> Iterator[TidybotClient]:
    """rclpy initialised (``init_kwargs`` go to rclpy.init), a node spun by a thread of its
    own and a TidybotClient on it — what a command-line tool needs — torn down on exit, the
    spinner joined before rclpy shuts down (a thread left inside rclpy aborts the process)."""
    rclpy.init(**init_kwargs)
    node = rclpy.create_node(node_name, start_parameter_services=False)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield TidybotClient(node, namespace)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.try_shutdown()
