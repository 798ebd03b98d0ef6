"""The node as a real process: discoverable, parameters visible, logs to /rosout, clean exit."""
from __future__ import annotations

import signal
import subprocess

import pytest
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import GetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile

from support import Proc, wait_until


def start_node(procs, tmp_path, *ros_args: str, env: dict | None = None) -> Proc:
    args = ["tidybot-exec", "--ros-args", "-p", f"history_dir:={tmp_path / 'history'}", *ros_args]
    proc = Proc(args, tmp_path, f"tidybot_exec{len(procs)}", env)
    procs.append(proc)
    return proc


def visible(ros, name: str = "tidybot_exec") -> bool:
    return (name, "/") in ros.node.get_node_names_and_namespaces()


def ready(node: Proc) -> bool:
    """This process logged its ready line (the graph may still show an earlier test's node)."""
    return "ready:" in node.stderr or not node.alive()


def test_node_is_discoverable_and_shows_its_parameters(ros, procs, tmp_path):
    node = start_node(procs, tmp_path, "-p", "arm_cmd_port:=6001")
    wait_until(lambda: ready(node) and visible(ros), 30, "the node in the ROS graph")
    assert node.alive(), node.describe()
    reply = ros.call(GetParameters, "/tidybot_exec/get_parameters",
                     GetParameters.Request(names=["arm_cmd_port", "gripper_cmd_port"]))
    assert [v.integer_value for v in reply.values] == [6001, 5570]


def test_node_logs_to_rosout(ros, procs, tmp_path):
    got: list[Log] = []
    qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    sub = ros.node.create_subscription(Log, "/rosout", got.append, qos)
    try:
        start_node(procs, tmp_path)
        wait_until(lambda: any(m.name == "tidybot_exec" and "ready" in m.msg for m in got),
                   30, "the node's ready line on /rosout")
    finally:
        ros.node.destroy_subscription(sub)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_node_exits_cleanly_on_signal(ros, procs, tmp_path, sig):
    node = start_node(procs, tmp_path)
    wait_until(lambda: ready(node), 30, "the node's ready line")
    node.signal(sig)
    assert node.wait(15) == 0, node.describe()
    assert "Traceback" not in node.stderr, node.stderr


def test_nonsense_parameters_are_refused_with_a_clear_message(procs, tmp_path):
    node = start_node(procs, tmp_path, "-p", "gripper_cmd_port:=70000")
    assert node.wait(30) == 2
    assert "gripper_cmd_port = 70000 is above its maximum 65535" in node.stderr
    assert "Traceback" not in node.stderr
    typed = start_node(procs, tmp_path, "-p", "arm_host:=5")
    assert typed.wait(30) == 2
    assert "arm_host" in typed.stderr and "Traceback" not in typed.stderr


def test_without_a_sandbox_the_node_refuses_to_start_unless_allowed(ros, procs, tmp_path):
    broken = {"TIDYBOT_BWRAP": "/bin/false"}          # a bwrap that cannot make namespaces
    node = start_node(procs, tmp_path, env=broken)
    assert node.wait(30) == 2
    assert ("no sandbox for submitted code (bwrap cannot create namespaces here: exit 1); set "
            "allow_unsandboxed:=true only if you accept running it unconfined") in node.stderr
    assert "Traceback" not in node.stderr
    allowed = start_node(procs, tmp_path, "-p", "allow_unsandboxed:=true", env=broken)
    wait_until(lambda: ready(allowed), 30, "the ready line")
    assert allowed.alive() and "running submitted code UNSANDBOXED" in allowed.stderr
    assert "isolation: none" in allowed.stderr


def test_check_isolation_runs_three_probes_in_the_sandbox():
    done = subprocess.run(["tidybot-exec", "--check-isolation"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "isolation: namespaces" in done.stdout
    assert [line for line in done.stdout.splitlines() if line.startswith("ok")] == [
        "ok   no network", "ok   no other processes", "ok   read-only system"]
