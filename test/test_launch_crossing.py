"""The launch's crossing rule with real processes: the stack that tidybot_exec.launch.py's
plan describes (started by launch_plan.Started, as the demo starts it) drives its own
simulator and nothing else. Another simulator on the launch's ports ends the launch before
a node exists; another simulator on params_file's ports is never reached; and a simulator
that dies under the node ends it. The launch file itself applies the same plan and rules
(test_launch.py, with launch_testing)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray

import support
from support import Proc, python_cmd, sim_config, wait_until
from tidybot_exec.clients.client import TidybotClient
from tidybot_exec.cameras.protocol import DEFAULT_PORT as CAMERA_PORT
from tidybot_exec.ros.launch_plan import LaunchFailed, Started, plan
from tidybot_exec.sim import SimConfig
from tidybot_sdk import protocol as proto
from tidybot_sdk.transport import RequestClient, endpoint

pytestmark = pytest.mark.stack          # real simulators and a real node

BIN = Path(sys.executable).parent
NAMESPACE = "crossing"
DEFAULTS = [CAMERA_PORT, *(p for ports in proto.DEFAULT_PORTS.values() for p in ports)]


def free_offset(*taken: int) -> int:
    """A port_offset whose ports all lie free in this session's own block, none of them
    among ``taken`` (handed out by free_port, not bound yet)."""
    first = support._port_base - min(DEFAULTS)
    span = max(DEFAULTS) - min(DEFAULTS)
    for offset in range(first, first + support._PORT_BLOCK - span):
        if all(p + offset not in taken and _free(p + offset) for p in DEFAULTS):
            return offset
    raise RuntimeError("no port_offset with every port free in this session's block")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def other_sim(tmp_path: Path, name: str, config, control: int) -> Proc:
    """Another stack's simulator at ``config``'s ports, inspected on port ``control``."""
    ports = lambda ps: ",".join(map(str, ps))  # noqa: E731
    proc = Proc(python_cmd("tidybot_exec.sim.cli", "--arm-ports", ports(config.arm_ports),
                           "--gripper-ports", ports(config.gripper_ports),
                           "--base-ports", ports(config.base_ports), "--camera-port", "0",
                           "--control-port", str(control)), tmp_path, name)
    proc.wait_for_output("tidybot-sim: listening", 60)
    return proc


def received(control_port: int) -> dict:
    client = RequestClient(endpoint("127.0.0.1", control_port), "control")
    try:
        return client.request({"cmd": "stats"})["received"]
    finally:
        client.close()


def params_file(tmp_path: Path, **params) -> str:
    path = tmp_path / "params.yaml"
    lines = "".join(f"    {k}: {v}\n" for k, v in params.items())
    path.write_text(f"/**:\n  ros__parameters:\n    history_dir: {tmp_path / 'history'}\n"
                    f"{lines}")
    return str(path)


def test_a_simulator_that_cannot_bind_ends_the_launch_before_the_node_starts(tmp_path):
    control = support.free_port()
    offset = free_offset(control)
    held = SimConfig(**{f"{backend}_ports": tuple(p + offset for p in ports)
                        for backend, ports in proto.DEFAULT_PORTS.items()})
    other = other_sim(tmp_path, "other-sim", held, control)
    stack = Started(plan({"port_offset": str(offset), "namespace": NAMESPACE,
                          "params_file": params_file(tmp_path)}, support.ROOT,
                         rsp_available=False), BIN, log_dir=tmp_path)
    try:
        with pytest.raises(LaunchFailed, match="tidybot_sim exited with code 2 before it "
                                               "served .* without starting the node"):
            stack.start(say=lambda _: None)
        assert list(stack.popen) == ["tidybot_sim"]               # no node was ever started
        assert "Address already in use" in (tmp_path / "tidybot_sim.err").read_text()
        assert other.alive()
        assert received(control) == {"arm": {}, "gripper": {}, "base": {}}
    finally:
        stack.stop()
        other.stop()


def test_the_node_drives_its_own_simulator_whatever_params_file_says(tmp_path, ros, record):
    """params_file points at another simulator; the launch's node drives its own, says so,
    and ends with the launch when that simulator dies."""
    decoy_config, control = sim_config(), support.free_port()
    decoy = other_sim(tmp_path, "decoy-sim", decoy_config, control)
    a, g, b = decoy_config.arm_ports, decoy_config.gripper_ports, decoy_config.base_ports
    decoy_params = params_file(
        tmp_path, arm_cmd_port=a[0], arm_state_port=a[1], arm_stream_port=a[2],
        gripper_cmd_port=g[0], gripper_state_port=g[1], base_cmd_port=b[0],
        base_state_port=b[1], cameras="''")
    offset = free_offset()
    stack = Started(plan({"port_offset": str(offset), "namespace": NAMESPACE,
                          "params_file": decoy_params}, support.ROOT, rsp_available=False),
                    BIN, log_dir=tmp_path)
    diagnostics = record(DiagnosticArray, "/diagnostics")
    client = TidybotClient(ros.node, namespace=NAMESPACE)
    try:
        stack.start(say=lambda _: None)
        assert client.wait_for_server(60), (tmp_path / "tidybot_exec.err").read_text()
        client.acquire("crossing-test")
        result = client.execute(
            "from tidybot_sdk import base, sensors\nbase.forward(0.1)\n"
            "print(sensors.get_base_pose()[0])\n", label="forward").result(120)
        assert result.status == 0, result.error
        assert float(result.stdout) == pytest.approx(0.1, abs=0.02)     # its own base moved
        client.release()
        # the decoy that params_file named received nothing; the launch's own simulator moved
        assert received(control) == {"arm": {}, "gripper": {}, "base": {}}
        ready = wait_until(lambda: next((line for line in (tmp_path / "tidybot_exec.err")
                                         .read_text().splitlines() if "ready:" in line), None),
                           10, "the ready line")
        assert (f"ready: arm simulator tcp://127.0.0.1:{5555 + offset}, gripper simulator "
                f"tcp://127.0.0.1:{5570 + offset}, base simulator tcp://127.0.0.1:"
                f"{5590 + offset}; cameras ws://127.0.0.1:{CAMERA_PORT + offset}") in ready

        def base_entry():
            return next((s for m in reversed(diagnostics.since(0)) for s in m.status
                         if s.name == f"{NAMESPACE}/tidybot_exec: base backend"), None)
        entry = wait_until(base_entry, 10, "the base's /diagnostics entry")
        assert entry.message.startswith("simulator: ")
        assert entry.hardware_id == f"tcp://127.0.0.1:{5591 + offset}"
        # the simulator dies: the run ends, naming it
        stack.popen["tidybot_sim"].kill()
        stack.popen["tidybot_sim"].wait(10)
        with pytest.raises(LaunchFailed, match=r"tidybot_sim exited with code -9; the robot "
                                               r"cannot run without it"):
            stack.check()
    finally:
        codes = stack.stop()
        decoy.stop()
    assert codes["tidybot_exec"] == 0
