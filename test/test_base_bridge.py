"""tidybot-base-bridge between the SDK and a stand-in of the real base server's RPC
(base_rpc_standin.py), all real processes on this session's ports."""
from __future__ import annotations

import itertools
import math
from multiprocessing.managers import BaseManager
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from support import Proc, free_port, python_cmd, wait_until
from tidybot_exec.base_bridge.rpc import BaseRpc
from tidybot_sdk import Robot, SdkConfig
from tidybot_sdk.errors import BaseError, BaseUnavailable
from tidybot_sdk.protocol import BaseMsg
from tidybot_sdk.transport import RequestClient, StateSubscriber

STANDIN = Path(__file__).with_name("base_rpc_standin.py")
READY = "tidybot-base-bridge: listening"
_names = itertools.count()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "base.key"
    path.write_bytes(b"a key of this test only\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def standin(procs, tmp_path, key_file):
    """Start a stand-in base server: start(api, *extra, port=None) -> (Proc, port)."""
    def start(api: str, *extra: str, port: int | None = None) -> tuple[Proc, int]:
        port = port or free_port()
        proc = Proc([sys.executable, str(STANDIN), "--port", str(port), "--authkey-file",
                     str(key_file), "--api", api, *extra], tmp_path, f"standin{next(_names)}")
        procs.append(proc)
        proc.wait_for_output("base-rpc-standin: serving", 20)
        return proc, port
    return start


@pytest.fixture
def bridge(procs, tmp_path, key_file):
    """Start tidybot-base-bridge: start(rpc_port, key=key_file, ready=True) -> (Proc, base
    endpoints); ``ready=False`` does not wait for it to serve (it may exit)."""
    def start(rpc_port: int, key: Path = key_file, ready: bool = True):
        cmd, state = free_port(), free_port()
        proc = Proc(python_cmd("tidybot_exec.base_bridge.cli", "--rpc", f"127.0.0.1:{rpc_port}",
                               "--authkey-file", str(key), "--base-ports", f"{cmd},{state}"),
                    tmp_path, f"bridge{next(_names)}")
        procs.append(proc)
        if ready:
            proc.wait_for_output(READY, 30)
        return proc, {"cmd": f"tcp://127.0.0.1:{cmd}", "state": f"tcp://127.0.0.1:{state}"}
    return start


@pytest.fixture
def sdk():
    """An SDK Robot whose base is at the given endpoints (closed after the test)."""
    robots: list[Robot] = []

    def connect(endpoints: dict[str, str]) -> Robot:
        robots.append(Robot(SdkConfig(base=endpoints)))
        return robots[-1]
    yield connect
    for robot in robots:
        robot.close()


def pose_of(robot: Robot) -> np.ndarray:
    return np.array(robot.base.get_state()["base_pose"])


def wait_for_state(robot: Robot, predicate, what: str, timeout: float = 5.0) -> dict:
    """The first new state of the base that satisfies ``predicate``."""
    return wait_until(lambda: (s := robot.backend("base").next_state(2.0)) and predicate(s) and s,
                      timeout, what)


@pytest.mark.parametrize("api", ["upstream", "fork"])
def test_the_sdk_drives_the_base_through_the_bridge(api, standin, bridge, sdk):
    _, port = standin(api)
    proc, endpoints = bridge(port)
    assert f"({api} API)" in proc.stdout
    robot = sdk(endpoints)
    robot.base.forward(0.2)
    assert np.allclose(pose_of(robot), [0.2, 0.0, 0.0], atol=0.02)
    robot.base.rotate(math.pi / 2)
    assert np.allclose(pose_of(robot), [0.2, 0.0, math.pi / 2], atol=0.03)
    # silence: the real watchdog lets the motors coast 250 ms after the last command
    state = wait_for_state(robot, lambda s: not s["motors_enabled"], "the watchdog's coast")
    assert state["active"] is False and max(map(abs, state["base_velocity"])) < 0.02
    if api == "fork":
        robot.base.drive(0.2, duration=1.0)          # ahead is +y now; ends with a STOP
        wait_for_state(robot, lambda s: max(map(abs, s["base_velocity"])) < 1e-3, "a standstill")
        assert pose_of(robot)[1] > 0.08
    else:
        with pytest.raises(BaseError, match="no velocity control: drive the base with pose"):
            robot.base.drive(0.1, duration=0.5)
        assert np.allclose(pose_of(robot)[:2], [0.2, 0.0], atol=0.01)
    robot.base.stop()
    assert proc.stop() == 0 and "stopped" in proc.stdout


def test_theta_across_pi_goes_the_short_way_on_the_unwrapped_base(standin, bridge, sdk, key_file):
    start = 3.0 + 2 * math.pi           # the fork's base has turned a full round before
    _, port = standin("fork", "--pose", f"0,0,{start}")
    _, endpoints = bridge(port)
    robot = sdk(endpoints)
    assert pose_of(robot)[2] == pytest.approx(3.0, abs=1e-6)      # the protocol's θ is wrapped
    seen: list[float] = []
    watcher = StateSubscriber(endpoints["state"], "base",
                              on_message=lambda s: seen.append(s["base_pose"][2]))
    try:
        wait_until(lambda: seen, 5, "the watcher's first state")
        robot.base.move_to_pose(0.0, 0.0, -3.0)                   # 0.28 rad across ±π
    finally:
        watcher.close()
    assert pose_of(robot)[2] == pytest.approx(-3.0, abs=0.03)
    assert min(map(abs, seen)) > 2.9, "θ passed through 0: the base turned the long way"
    rpc = BaseRpc("127.0.0.1", port, key_file.read_bytes().strip())
    rpc.open()
    try:                                # the server counts on: 2π + (π + 0.14)
        assert rpc.call("get_full_state")["base_pose"][2] == pytest.approx(
            start + (2 * math.pi - 6.0), abs=0.03)
    finally:
        rpc.close()


def drive_until_fast(cmd: RequestClient, states: StateSubscriber) -> dict:
    """Stream a far pose target at 10 Hz until the base runs at 0.3 m/s; that state."""
    def streaming_until_fast() -> dict | None:
        assert cmd.request({"msg_type": int(BaseMsg.EXECUTE_ACTION),
                            "base_pose": [3.0, 0.0, 0.0]})["success"]
        s = states.wait_next(2.0)
        return s if s["base_velocity"][0] > 0.3 else None
    return wait_until(streaming_until_fast, 10, "the base at 0.3 m/s", interval=0.1)


def test_stop_brakes_the_upstream_base_where_it_is(standin, bridge):
    """Upstream has no stop and its watchdog coasts: the bridge's STOP is a pose target where
    a full brake ends, re-sent until the base stands (not where STOP came: no reversing)."""
    _, port = standin("upstream")
    _, endpoints = bridge(port)
    cmd = RequestClient(endpoints["cmd"], "base")
    xs: list[float] = []
    states = StateSubscriber(endpoints["state"], "base",
                             on_message=lambda s: xs.append(s["base_pose"][0]))
    try:
        moving = drive_until_fast(cmd, states)
        x0, v0 = moving["base_pose"][0], moving["base_velocity"][0]
        assert cmd.request({"msg_type": int(BaseMsg.STOP)})["success"]
        wait_until(lambda: (s := states.wait_next(2.0))["base_velocity"][0] < 1e-3
                   and not s["motors_enabled"], 10, "a standstill, then the motors off")
        stopped_at = xs[-1]
    finally:
        cmd.close()
        states.close()
    # a full brake from v0 covers v0²/(2·0.25) (plus the poll's lag); a coast (friction
    # 0.1 m/s²) over twice as much, and a target at the STOP's pose would drive back
    assert stopped_at - x0 < v0 ** 2 / 0.5 + 0.05
    # the velocity is estimated from polled poses: a brake target a little short of the
    # true braking point makes the base come back by that much, never by the whole way
    assert max(xs) - stopped_at < 0.02, "the base drove back after STOP"


def test_the_bridge_brakes_a_moving_base_before_it_exits(standin, bridge, key_file):
    """Stopped mid-motion (SIGINT, as a launch ends), the bridge stops the base first: after
    it nobody re-sends a brake and the base's watchdog would let it coast. Judged from the
    fork's shared vehicle, read straight from the server once the bridge is gone."""
    _, port = standin("fork")
    proc, endpoints = bridge(port)
    cmd = RequestClient(endpoints["cmd"], "base")
    states = StateSubscriber(endpoints["state"], "base")
    try:
        moving = drive_until_fast(cmd, states)
    finally:
        cmd.close()
        states.close()
    x0, v0 = moving["base_pose"][0], moving["base_velocity"][0]
    assert proc.stop() == 0

    class Server(BaseManager):
        pass
    Server.register("Base")
    server = Server(address=("127.0.0.1", port), authkey=key_file.read_bytes().rstrip(b"\n"))
    server.connect()
    base = server.Base()
    state = wait_until(lambda: (s := base.get_full_state())["base_velocity"][0] < 1e-3 and s,
                       10, "a standstill")
    # a brake from v0 covers v0²/(2·0.25) (and the moment the exit took); the coast its
    # watchdog would leave (friction 0.1 m/s²) runs v0²/(2·0.1): 0.45 m from 0.3 m/s
    assert state["base_pose"][0] - x0 < v0 ** 2 / 0.5 + 0.08


def test_start_fails_clearly(standin, bridge, tmp_path):
    # nothing listens
    proc, _ = bridge(free_port(), ready=False)
    assert proc.wait(20) == 2
    assert "nothing listens at 127.0.0.1:" in proc.stderr and "is the base server running" \
        in proc.stderr
    # the wrong key
    _, port = standin("upstream")
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"not the key")
    wrong.chmod(0o600)
    proc, _ = bridge(port, key=wrong, ready=False)
    assert proc.wait(20) == 2
    assert f"the base server at 127.0.0.1:{port} refused the authkey in {wrong}" in proc.stderr
    # no key file: there is no built-in key to fall back on
    proc, _ = bridge(port, key=tmp_path / "missing.key", ready=False)
    assert proc.wait(20) == 2 and "cannot read --authkey-file" in proc.stderr
    # a server without a method the bridge needs
    _, port = standin("upstream", "--without", "get_state")
    proc, _ = bridge(port, ready=False)
    assert proc.wait(20) == 2
    assert "has no method get_state() (it offers close, execute_action, reset)" in proc.stderr


def test_a_server_killed_mid_motion_is_unavailable_then_back(standin, bridge, sdk):
    server, port = standin("upstream")
    proc, endpoints = bridge(port)
    robot = sdk(endpoints)
    killed = threading.Event()

    def kill_when_moving(state: dict) -> None:
        if state["base_velocity"][0] > 0.05 and not killed.is_set():
            server.popen.kill()
            killed.set()
    watcher = StateSubscriber(endpoints["state"], "base", on_message=kill_when_moving)
    try:
        with pytest.raises(BaseUnavailable):
            robot.base.forward(0.5)
    finally:
        watcher.close()
    assert killed.is_set() and proc.alive()
    with pytest.raises(BaseUnavailable):
        robot.base.get_state()                   # no state: never a stale or zero one
    server.wait(10)
    standin("upstream", port=port)               # back on the same port: a new vehicle
    wait_until(lambda: f"connected to the base server at 127.0.0.1:{port}" in proc.stderr,
               20, "the bridge to reconnect", interval=0.05)
    wait_for_state(robot, lambda s: True, "a state from the new server")   # then it publishes
    robot.base.forward(0.1)
    assert np.allclose(pose_of(robot), [0.1, 0.0, 0.0], atol=0.02)   # odometry from reset


def test_a_hung_server_is_unavailable_never_hangs_and_recovers(standin, bridge, sdk):
    server, port = standin("upstream")
    proc, endpoints = bridge(port)
    robot = sdk(endpoints)
    robot.base.forward(0.1)
    server.signal(signal.SIGSTOP)
    try:
        with pytest.raises(BaseUnavailable):
            robot.base.stop()                    # the bridge gives up after 1 s, then is silent
        with pytest.raises(BaseUnavailable):
            robot.base.get_state()
        assert proc.alive()
    finally:
        server.signal(signal.SIGCONT)
    # the same object again (upstream's odometry is not reset): back where it was
    wait_until(lambda: _state_or_none(robot), 20, "the base's state again")
    assert np.allclose(pose_of(robot)[:2], [0.1, 0.0], atol=0.02)
    robot.base.forward(0.1)
    assert np.allclose(pose_of(robot), [0.2, 0.0, 0.0], atol=0.02)
    assert proc.stop() == 0


def _state_or_none(robot: Robot) -> dict | None:
    try:
        return robot.base.get_state()
    except BaseUnavailable:
        return None
