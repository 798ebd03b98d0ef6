"""Shared machinery of the test suites: ROS isolation, real child processes, waiting.

Tests talk to real processes over real sockets and a real rclpy graph; these helpers keep
that deterministic (bounded waits that fail loudly) and clean (every process is reaped).
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent

# Kept open for the whole session: the flock is what reserves the session's slot.
_slot_lock = None
_PORT_BLOCK = 100
_port_base = 0
_next_port = 0


def isolate_ros() -> int:
    """Give this test session a ROS_DOMAIN_ID and a block of TCP ports of its own.

    A file lock per slot (1..101) reserves the slot, so parallel runs (two distros, two
    developers) never share ports; the slot is also the domain id, so they never see each
    other's nodes, unless ROS_DOMAIN_ID is set in the environment: that one is used as it
    is (the caller chose it). Discovery is limited to this host.
    """
    global _slot_lock, _port_base
    lock_dir = Path(tempfile.gettempdir()) / "tidybot-test-domains"
    lock_dir.mkdir(exist_ok=True)
    for slot in range(1, 102):
        handle = open(lock_dir / f"{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _slot_lock, _port_base = handle, 20000 + slot * _PORT_BLOCK
        chosen = _domain_from_environment()
        domain = slot if chosen is None else chosen
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        return domain
    raise RuntimeError("no free test slot (ports, ROS_DOMAIN_ID) in 1..101 on this machine")


def _domain_from_environment() -> int | None:
    """ROS_DOMAIN_ID as the caller set it (None: unset or empty)."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > 232:
        raise RuntimeError(f"ROS_DOMAIN_ID={value!r} from the environment: a ROS domain id is "
                           "0..232 (unset it to let the tests pick a free one)")
    return int(value)


def free_port() -> int:
    """A free TCP port on loopback from this session's own block below the ephemeral range.

    Ports handed out by bind(0) come from the ephemeral range, where any outgoing connection
    may take them again before the server binds; a block per reserved slot, below that
    range, avoids both that and other sessions.
    """
    global _next_port
    assert _port_base, "isolate_ros() reserves the session's ports first"
    for _ in range(_PORT_BLOCK):
        port = _port_base + _next_port
        _next_port = (_next_port + 1) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_port_base}..{_port_base + _PORT_BLOCK - 1}")


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A real child process whose output is captured to files (no pipe can fill up)."""

    def __init__(self, args: list[str], log_dir: Path, name: str,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=ROOT, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s\nstderr:\n{self.stderr[-2000:]}"
            ) from None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL of its whole group if it does not exit in ``timeout``."""
        self.signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait()

    def describe(self) -> str:
        return f"{self.name} stdout:\n{self.stdout[-3000:]}\n{self.name} stderr:\n{self.stderr[-3000:]}"

    def wait_for_output(self, text: str, timeout: float) -> None:
        """Wait until ``text`` is on its stdout; fail at once (with its output) if it exits."""
        try:
            wait_until(lambda: text in self.stdout or not self.alive(), timeout,
                       f"{text!r} from {self.name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None
        assert text in self.stdout, f"{self.name} exited ({self.popen.returncode})\n{self.describe()}"


def python_cmd(module: str, *args: str) -> list[str]:
    """Command line running ``python -m module`` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def sim_config(**overrides):
    """A simulator configuration on free loopback ports (parallel sessions never clash)."""
    from tidybot_exec.sim import SimConfig

    return SimConfig(arm_ports=(free_port(), free_port(), free_port()),
                     gripper_ports=(free_port(), free_port()),
                     base_ports=(free_port(), free_port()), **overrides)


class Wire:
    """Protocol clients for the three backends of one simulator, as a test would speak them."""

    def __init__(self, config) -> None:
        from tidybot_sdk.transport import RequestClient, StateSubscriber, StreamPublisher

        at = config.addresses()
        self.cmd = {name: RequestClient(at[name]["cmd"], name,
                                        **({"timeout_s": 15.0} if name == "gripper" else {}))
                    for name in at}
        self.states = {name: StateSubscriber(at[name]["state"], name) for name in at}
        self.stream = StreamPublisher(at["arm"]["stream"])

    def req(self, server: str, msg_type: int, **fields):
        return self.cmd[server].request({"msg_type": int(msg_type), **fields})

    def state(self, server: str, timeout: float = 5.0) -> dict:
        return self.states[server].wait_next(timeout)

    def arm_at_rest(self, timeout: float = 3.0) -> dict:
        """The first arm state with every joint at rest (fails after ``timeout``)."""
        return wait_until(lambda: (s := self.state("arm")) and max(map(abs, s["dq"])) < 1e-9 and s,
                          timeout, "the arm to come to rest")

    def arm_holding(self, timeout: float = 3.0, hold_s: float = 0.4) -> dict:
        """The arm comes to rest and stays exactly there for ``hold_s``; returns that state."""
        held = self.arm_at_rest(timeout)
        time.sleep(hold_s)
        now = self.state("arm")["q"]
        assert all(abs(a - b) < 1e-9 for a, b in zip(now, held["q"])), "the arm drifted"
        return held

    def close(self) -> None:
        for c in (*self.cmd.values(), *self.states.values(), self.stream):
            c.close()


def sdk_config_for(config, **limits):
    """The SDK configuration that points at a simulator started with ``config``."""
    from tidybot_sdk.config import SdkConfig
    from tidybot_sdk.limits import SafetyLimits

    return SdkConfig(limits=SafetyLimits(**limits)).with_endpoints(config.addresses())


# The node parameters of the modules that run goals without a lease: they share one stack
# (conftest's `stack`). The code's output, memory and disk are kept small (the limits'
# tests); its cameras are a ROS driver's topics that test_driver_cameras publishes.
LEASE_FREE = {"require_lease": False, "max_output_bytes": 65536, "child_address_space_mb": 1024,
              "child_disk_mb": 32, "cameras": "ros:wrist=/fake_driver/camera"}


class Stack:
    """tidybot-sim and tidybot-exec as real processes, wired to each other on free ports."""

    def __init__(self, log_dir: Path, history_dir: Path, name: str = "stack",
                 params: dict | None = None, node_name: str = "tidybot_exec",
                 namespace: str = "", cameras: bool = False) -> None:
        self.config = sim_config()
        self.control_port = free_port()
        # cameras only where a test looks at them (each stack its own port; no rendering else)
        self.camera_port = free_port() if cameras else 0
        c = self.config
        self.log_dir, self.name, self.node_name = log_dir, name, node_name
        self.namespace = namespace
        self.start_sim()
        self.params = {
            "arm_cmd_port": c.arm_ports[0], "arm_state_port": c.arm_ports[1],
            "arm_stream_port": c.arm_ports[2], "gripper_cmd_port": c.gripper_ports[0],
            "gripper_state_port": c.gripper_ports[1], "base_cmd_port": c.base_ports[0],
            "base_state_port": c.base_ports[1], "history_dir": str(history_dir),
            "cameras": f"ws://127.0.0.1:{self.camera_port}" if cameras else "''",
            **(params or {})}
        self.node: Proc | None = None
        self.start_node()

    def start_sim(self) -> Proc:
        """The simulator process, as it starts: the robot at home, the world's default scene."""
        c = self.config
        ports = lambda ps: ",".join(map(str, ps))  # noqa: E731
        self.sim = Proc(python_cmd("tidybot_exec.sim.cli", "--arm-ports", ports(c.arm_ports),
                                   "--gripper-ports", ports(c.gripper_ports),
                                   "--base-ports", ports(c.base_ports),
                                   "--control-port", str(self.control_port),
                                   "--camera-port", str(self.camera_port)),
                        self.log_dir, f"{self.name}-sim")
        return self.sim

    def restart_sim(self) -> None:
        """A new simulator on the same ports (the node reconnects to it by itself)."""
        self.sim.stop()
        self.start_sim().wait_for_output("tidybot-sim: listening", 60)

    def start_node(self) -> Proc:
        args = ["tidybot-exec", "--ros-args", "-r", f"__node:={self.node_name}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace}"]
        for key, value in self.params.items():
            args += ["-p", f"{key}:={value}"]
        self.node = Proc(args, self.log_dir, f"{self.name}-node")
        return self.node

    def control(self, **request):
        from tidybot_sdk.transport import RequestClient, endpoint

        client = RequestClient(endpoint("127.0.0.1", self.control_port), "control")
        try:
            return client.request(request)
        finally:
            client.close()

    def stop(self) -> None:
        for proc in (self.node, self.sim):
            if proc is not None:
                proc.stop()

    def describe(self) -> str:
        return "\n".join(p.describe() for p in (self.sim, self.node) if p is not None)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # ESRCH: reaped between open and read
        return False


def host_pids_with_argv(token: str) -> list[int]:
    """Host PIDs of processes whose command line holds ``token`` (inside the sandbox the
    code sees its own PID namespace, so it names its processes by a token instead)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and token in open(f"/proc/{entry}/cmdline", "rb").read().decode(
                    errors="replace") and pid_alive(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


def private_sims() -> list[int]:
    """PIDs of dry-run simulators (``sim/private.py WORKDIR``) alive on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if len(args) >= 2 and args[-2].endswith(b"sim/private.py"):
            pids.append(int(entry.name))
    return pids


def host_workdir(run) -> Path:
    """The execution's working directory on the host (the code sees its own, inside): a
    cold start's own, or a warm worker's guard directory in its pool's."""
    tmp, execution_id = Path(tempfile.gettempdir()), run.feedback[0].execution_id
    (path,) = [*tmp.glob(f"tidybot-{execution_id}-*"),
               *tmp.glob(f"tidybot-warm-*/files/guards/{execution_id}")]
    return path


def answered(service_client, request, tries: int = 10, per_try_s: float = 2.0):
    """Call until a reply comes (a reply lost before discovery finished is asked again)."""
    for _ in range(tries):
        future = service_client.call_async(request)
        deadline = time.monotonic() + per_try_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if future.done():
            return future.result()
    raise AssertionError(f"no reply from {service_client.srv_name} after {tries} tries")
