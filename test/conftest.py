"""Fixtures: an isolated ROS domain per session, a real rclpy client node, real processes,
simulator + node stacks shared by the modules that ask for the same parameters, and the
test lanes (markers unit, stack, build)."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import Proc, Stack, answered, isolate_ros, wait_until

DOMAIN_FROM_ENVIRONMENT = bool(os.environ.get("ROS_DOMAIN_ID", "").strip())
DOMAIN_ID = isolate_ros()  # before anything imports rclpy or starts a ROS process
# Live output must not depend on the caller's environment: the node runs without it.
os.environ.pop("PYTHONUNBUFFERED", None)
# Type-check every message field we set, here and in the node under test: unchecked, an
# int in a float64 field is sent as garbage (validation.duration_error).
os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"


pytest_plugins = ["session_guard"]


def pytest_report_header() -> str:
    where = "from the environment" if DOMAIN_FROM_ENVIRONMENT else "reserved for this session"
    return f"ROS_DOMAIN_ID={DOMAIN_ID} ({where}), discovery LOCALHOST"


# ------------------------------------------------------------------ lanes and module order
LANES = ("unit", "stack", "build")
# Asking for one of these starts a robot (simulator + node processes, or a simulator in this
# process), the execution service with its code processes, or joins the session's ROS
# graph: the test is in the stack lane. Any other test is a unit test unless it is marked
# itself (a module's pytestmark or the test's own marker wins: tests that build, or that
# start such processes without these fixtures).
STACK_FIXTURES = frozenset({"stack", "ros", "procs", "fleet", "fresh_stack", "graph",
                            "sim_factory", "harness"})
_stack_keys = pytest.StashKey[dict]()


@pytest.hookimpl(tryfirst=True)        # before -m deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(lane) for lane in LANES):
            uses = set(getattr(item, "fixturenames", ()))
            item.add_marker("stack" if uses & STACK_FIXTURES else "unit")
    keys = {}                           # module -> its stack's key (None: it uses none)
    for item in items:
        module = _module_of(item)
        if "stack" in getattr(item, "fixturenames", ()):
            keys[module] = stack_key(module.obj)
        else:
            keys.setdefault(module, None)
    config.stash[_stack_keys] = {module.nodeid: key for module, key in keys.items()}
    # Modules that share a stack run one after the other, where the first of them was.
    first: dict = {}
    for index, (module, key) in enumerate(keys.items()):
        first.setdefault(key if key is not None else module.nodeid, index)
    place = {module: (first[key if key is not None else module.nodeid], index)
             for index, (module, key) in enumerate(keys.items())}
    items[:] = sorted(items, key=lambda item: place[_module_of(item)])   # stable within one


def _module_of(item: pytest.Item) -> pytest.Collector:
    return item.getparent(pytest.Module) or item.parent


class RosClient:
    """A real rclpy node spun in a background thread, for talking to the processes under test."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._service_clients: dict[tuple[type, str], object] = {}
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def result(self, future, timeout: float = 10.0, what: str = "a reply"):
        """Block until an rclpy future completes (the executor thread completes it)."""
        wait_until(future.done, timeout, what)
        return future.result()

    def call(self, srv_type, name: str, request, timeout: float = 10.0, retry: bool = False):
        """Call a service once it is available; fail the test on timeout.

        One client per service is kept: Fast DDS drops a reply when the server cannot match
        the client's response reader within 100 ms (ros2/rmw_fastrtps#390), which a
        brand-new client (or a client of a just restarted server) on a loaded machine
        sometimes is. With ``retry`` (for calls that may be repeated: reads) a request
        without a reply within 2 s is sent again until ``timeout``.
        """
        key = (srv_type, name)
        if key not in self._service_clients:
            self._service_clients[key] = self.node.create_client(srv_type, name)
        return self.call_on(self._service_clients[key], request, timeout, retry)

    def call_on(self, client, request, timeout: float = 10.0, retry: bool = False):
        """``call`` on a service client made beforehand."""
        name = client.srv_name
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        if not retry:
            return self.result(client.call_async(request), timeout, f"reply from {name}")
        return answered(client, request, tries=max(1, int(timeout / 2.0)), per_try_s=2.0)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


class Recorder:
    """Keeps every message of one topic with its arrival time."""

    def __init__(self, ros, msg_type, topic: str, qos=100) -> None:
        self.ros, self.messages, self.times = ros, [], []
        self._lock = threading.Lock()
        self.sub = ros.node.create_subscription(msg_type, topic, self._got, qos)

    def _got(self, msg) -> None:
        with self._lock:
            self.messages.append(msg)
            self.times.append(time.monotonic())

    def since(self, t: float) -> list:
        with self._lock:
            return [m for m, at in zip(self.messages, self.times) if at >= t]

    def latest(self, timeout: float = 10.0):
        wait_until(lambda: self.messages, timeout, "a message")
        return self.messages[-1]

    def close(self) -> None:
        self.ros.node.destroy_subscription(self.sub)


@pytest.fixture(scope="session")
def ros() -> Iterator[RosClient]:
    """One rclpy node for the session: the nodes under test discover it once, not once per
    module (a new participant costs 0.3-3 s of discovery before its first reply)."""
    client = RosClient("test_session")
    yield client
    client.close()


@pytest.fixture
def record(ros):
    made = []

    def start(msg_type, topic, qos=100):
        made.append(Recorder(ros, msg_type, topic, qos))
        return made[-1]

    yield start
    for r in made:
        r.close()


@pytest.fixture
def procs(tmp_path: Path, request) -> Iterator[list[Proc]]:
    """Collects started processes; anything still alive at the end is stopped and reaped.

    On failure the captured output of every process is attached to the report.
    """
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop(timeout=10)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for proc in started:
            print(proc.describe())


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def sim_factory():
    """Start in-process simulators (free ports); yields (simulator, wire clients) pairs."""
    from support import Wire, sim_config
    from tidybot_exec.sim import Simulator

    started = []

    def start(**overrides):
        config = sim_config(**overrides)
        simulator = Simulator(config)
        simulator.start()
        wire = Wire(config)
        started.append((simulator, wire))
        return simulator, wire

    yield start
    for simulator, wire in started:
        wire.close()
        simulator.stop()


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


@pytest.fixture
def robot(sim_factory):
    """(simulator, wire clients, SDK Robot) for one fresh simulator."""
    from support import sdk_config_for
    from tidybot_sdk import Robot

    simulator, wire = sim_factory()
    sdk = Robot(sdk_config_for(simulator.config))
    yield simulator, wire, sdk
    sdk.close()


@contextlib.contextmanager
def failing_the_test() -> Iterator[None]:
    """A client timeout is a test failure, like wait_until's."""
    from tidybot_exec.clients.client import TidybotClientError

    try:
        yield
    except TidybotClientError as exc:
        raise AssertionError(str(exc)) from None


class GoalRun:
    """One goal sent through TidybotClient (a real rclpy ActionClient that recovers lost
    replies, as agents' clients must on a loaded machine): feedback, status and result."""

    def __init__(self, ros: RosClient, client, code: str, **fields) -> None:
        self.ros, self.feedback = ros, []
        self.feedback_at: list[float] = []
        self._run = client.execute(code, feedback_callback=self._on_feedback,
                                   lease_id=fields.pop("lease_id", ""), **fields)

    def _on_feedback(self, fb) -> None:
        self.feedback_at.append(time.monotonic())
        self.feedback.append(fb)

    def handle(self, timeout: float = 30.0):
        """The accepted goal's handle; from here on its result is being asked for."""
        with failing_the_test():
            return self._run.accepted(timeout)

    def cancel(self, timeout: float = 10.0) -> None:
        with failing_the_test():
            self._run.cancel(timeout)

    def result(self, timeout: float = 60.0):
        """(action status, ExecuteCode.Result). Feedback (a topic) may still be on its way
        when the result (a service reply) is here: give it up to 2 s to catch up, so tests
        that look at both see the whole feedback (the result's output is complete)."""
        with failing_the_test():
            result = self._run.result(timeout)
        deadline = time.monotonic() + 2.0
        while not result.truncated and not self._feedback_complete(result) and (
                time.monotonic() < deadline):
            time.sleep(0.01)
        return self._run.action_status, result

    def _feedback_complete(self, result) -> bool:
        return all("".join(f.text for f in list(self.feedback) if f.stream == stream)
                   == getattr(result, stream) for stream in ("stdout", "stderr"))

    def stdout(self) -> str:
        return "".join(f.text for f in self.feedback if f.stream == "stdout")


def node_services() -> dict:
    """Every service of the node, by name."""
    from std_srvs.srv import Trigger
    from tidybot_interfaces.srv import (AcquireLease, Describe, GetHistory, GetSkill,
                                        ListSkills, ReleaseLease, RenewLease, ResetEstop,
                                        SaveSkill, StopExecution)

    return {"execution/stop": StopExecution, "estop": Trigger, "estop/reset": ResetEstop,
            "execution/history": GetHistory, "sdk/describe": Describe,
            "lease/acquire": AcquireLease, "lease/renew": RenewLease,
            "lease/release": ReleaseLease, "lease/take": AcquireLease,
            "skills/save": SaveSkill, "skills/list": ListSkills, "skills/get": GetSkill}


class ExecClient:
    """Talks to a tidybot_exec node in namespace ``prefix`` from the module's rclpy node.

    A client for each of the node's services is made before the TidybotClient: its handshake
    (wait_ready) then proves the server has matched them all, so no reply is lost to
    discovery (TidybotClient._handshake)."""

    def __init__(self, ros: RosClient, prefix: str = "") -> None:
        from tidybot_exec.clients.client import TidybotClient
        from tidybot_exec.ros.qos import SERVICES

        self.ros, self.prefix = ros, prefix
        self._services = {name: ros.node.create_client(srv_type, f"{prefix}/{name}",
                                                       qos_profile=SERVICES)
                          for name, srv_type in node_services().items()}
        self.client = TidybotClient(ros.node, prefix)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.client.wait_for_server(timeout), "execute_code server not up"

    def send(self, code: str, **fields) -> GoalRun:
        return GoalRun(self.ros, self.client, code, **fields)

    def run(self, code: str, timeout: float = 60.0, **fields):
        return self.send(code, **fields).result(timeout)

    def call(self, name: str, request, timeout: float = 10.0, retry: bool = False):
        """The reply of the node's service ``name`` (see RosClient.call)."""
        return self.ros.call_on(self._services[name], request, timeout, retry)

    def acquire(self, holder: str, ttl_s: float = 0.0, wait_s: float = 0.0, timeout: float = 30,
                resources: tuple[str, ...] = ()):
        """lease/acquire's reply (success or not)."""
        from tidybot_interfaces.srv import AcquireLease

        return self.call("lease/acquire", AcquireLease.Request(
            holder=holder, ttl_s=float(ttl_s), wait_s=float(wait_s), resources=list(resources)),
            timeout + wait_s)

    def two_agents(self, wait_s: float = 0.0) -> tuple:
        """Leases of disjoint parts, granted: a base agent's ('nav', the base) and an arm
        agent's ('arm-agent', the arm and the gripper) acquire replies."""
        nav = self.acquire("nav", wait_s=wait_s, resources=("base",))
        hand = self.acquire("arm-agent", wait_s=wait_s, resources=("arm", "gripper"))
        assert nav.success and hand.success, (nav.message, hand.message)
        return nav, hand

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until execution/status says idle (a stop returns before the code has ended)."""
        from tidybot_interfaces.msg import ExecutionStatus

        from tidybot_exec.ros.qos import LATCHED

        seen: list = []
        sub = self.ros.node.create_subscription(
            ExecutionStatus, f"{self.prefix}/execution/status", seen.append, LATCHED)
        try:
            wait_until(lambda: seen and seen[-1].state == ExecutionStatus.STATE_IDLE, timeout,
                       "the execution to end")
        finally:
            self.ros.node.destroy_subscription(sub)

    def release(self, token: str):
        from tidybot_interfaces.srv import ReleaseLease

        return self.call("lease/release", ReleaseLease.Request(lease_id=token))

    def close(self) -> None:
        self.client.destroy()
        for service_client in self._services.values():
            self.ros.node.destroy_client(service_client)


# ------------------------------------------------------------------ shared stacks
def stack_key(module) -> tuple:
    """What makes a module's stack interchangeable with another's: the node parameters
    (STACK_PARAMS), the cameras (STACK_CAMERAS), or nothing (STACK_PRIVATE: its own)."""
    params = getattr(module, "STACK_PARAMS", None) or {}
    return (tuple(sorted((name, repr(value)) for name, value in params.items())),
            bool(getattr(module, "STACK_CAMERAS", False)),
            module.__name__ if getattr(module, "STACK_PRIVATE", False) else "")


class SharedStacks:
    """The one live simulator + node of the session and its client, kept while consecutive
    modules ask for the same key (pytest_collection_modifyitems puts them together) and
    stopped before a stack with another key starts."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.stack: Stack | None = None
        self.client: ExecClient | None = None

    def take(self, module, ros: RosClient, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Stack, ExecClient, bool]:
        """The stack for ``module``, its client, and whether another module used it before."""
        key = stack_key(module)
        if self.stack is not None and self.key == key:
            return self.stack, self.client, True
        self.close()
        log_dir = tmp_path_factory.mktemp("stack")
        self.stack = Stack(log_dir, log_dir / "history",
                           params=getattr(module, "STACK_PARAMS", None),
                           cameras=getattr(module, "STACK_CAMERAS", False))
        self.key, self.client = key, ExecClient(ros)
        return self.stack, self.client, False

    def close(self) -> None:
        stack, client = self.stack, self.client
        self.stack = self.client = self.key = None
        try:
            if client is not None:
                client.close()
        finally:
            if stack is not None:
                stack.stop()


SHARED = SharedStacks()


@pytest.fixture(scope="session")
def shared_stacks(ros) -> Iterator[SharedStacks]:
    """SHARED, stopped at the end of the session however it ends (-x, ^C), before the
    session's rclpy node (its client lives on that node)."""
    yield SHARED
    SHARED.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Stop the live stack once no module that follows shares it (one stack at a time)."""
    yield
    keys = item.config.stash.get(_stack_keys, {})
    if SHARED.stack is not None and (
            nextitem is None or keys.get(_module_of(nextitem).nodeid) != SHARED.key):
        SHARED.close()


def renew(s: Stack, client: ExecClient, ros: RosClient, node: bool) -> None:
    """A new simulator (the robot at home, the world's default scene), and with ``node`` a
    new node (no lease, no estop, nothing running); back once the node publishes the new
    robot's state."""
    if node:
        s.node.stop()
    s.restart_sim()
    if node:
        s.start_node()
        client.wait_ready()
    robot_state_since(ros, time.monotonic())


def robot_state_since(ros: RosClient, since: float, timeout: float = 30.0) -> None:
    """Until the node has published the state of all three backends after ``since``."""
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import JointState
    from tidybot_interfaces.msg import GripperState

    recorders = [Recorder(ros, msg_type, topic) for msg_type, topic in (
        (JointState, "/joint_states"), (Odometry, "/base/odom"), (GripperState, "/gripper/state"))]
    try:
        wait_until(lambda: all(r.since(since) for r in recorders), timeout,
                   "the node to publish the new simulator's state")
    finally:
        for r in recorders:
            r.close()


def leftovers(s: Stack, client: ExecClient, holder: str) -> list[str]:
    """What is not as a test on a shared stack must find it: both processes and every
    backend up, idle, the estop not latched, the lease held by ``holder`` ("": free) and
    nobody waiting for it."""
    if not (s.sim.alive() and s.node is not None and s.node.alive()):
        return ["the simulator or the node exited"]
    down = [name for name, up in s.control(cmd="stats")["running"].items() if not up]
    execution, lease = client.client.status()
    if execution is None or lease is None:
        return ["no execution/status or lease/status"]
    found = [f"the simulator's {name} server down" for name in down]
    if execution.state != "idle" or execution.estopped:
        found.append(f"execution/status {execution.state!r}"
                     + (" (estop latched)" if execution.estopped else ""))
    if lease.holder != holder:
        found.append(f"the lease held by {lease.holder!r}" if lease.held else "the lease free")
    if lease.waiting_holders:
        found.append(f"waiting for the lease: {', '.join(lease.waiting_holders)}")
    return found


def settled(s: Stack, client: ExecClient, holder: str, timeout: float = 30.0) -> list[str]:
    """leftovers() once they are gone, or after ``timeout`` (an ending run, a lapsing lease)."""
    deadline = time.monotonic() + timeout
    while (found := leftovers(s, client, holder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def stack(shared_stacks, ros, tmp_path_factory, request):
    """Simulator + node processes for a test module, and a client for them.

    Modules with the same STACK_PARAMS and STACK_CAMERAS share one. The next module gets it
    with a new simulator (the robot at home, the world's default scene; the node, its
    history and skills carry over), once the last one left it idle, the estop reset and the
    lease free. A module that harms its stack beyond that declares STACK_PRIVATE = True."""
    s, client, reused = shared_stacks.take(request.module, ros, tmp_path_factory)
    try:
        if reused:
            renew(s, client, ros, node=False)
        else:
            client.wait_ready()
    except AssertionError as exc:
        message = f"{exc}\n{s.describe()}"
        shared_stacks.close()
        raise AssertionError(message) from None
    yield s, client
    left = settled(s, client, "")
    if left:        # the next module must not inherit it
        shared_stacks.close()
        raise AssertionError(f"{request.module.__name__} left its stack with "
                             f"{'; '.join(left)}: stopped it")


@pytest.fixture(autouse=True)
def _stack_as_found(request):
    """A test leaves its stack as it found it (leftovers(); the lease with the same holder:
    a module's own lease fixture may hold it). Otherwise the simulator and the node are
    restarted, so that the next test starts from a known state, and this test fails."""
    if "stack" not in request.fixturenames:
        yield
        return
    s, client = request.getfixturevalue("stack")
    found = client.client.status()[1]
    holder = found.holder if found is not None else ""
    yield
    left = settled(s, client, holder)
    if left:
        renew(s, client, request.getfixturevalue("ros"), node=True)
        raise AssertionError(f"the test left its stack with {'; '.join(left)}: the "
                             "simulator and the node were restarted")
