"""The launch file's arguments and processes, checked without the launch packages."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import ROOT
from tidybot_exec.ros.launch_plan import (ARGUMENTS, BRIDGE_READY, FLEET_ARGUMENTS, SIM_READY,
                                          command_line, exit_reason, fleet_plan, plan)
from tidybot_exec.ros.backend_monitor import BackendMonitor, drives
from tidybot_exec.ros.params import validate

LAUNCH_FILE = ROOT / "launch" / "tidybot_exec.launch.py"


SIM_ENDPOINTS = {"arm_host": "127.0.0.1", "arm_cmd_port": 5555, "arm_state_port": 5556,
                 "arm_stream_port": 5557, "gripper_host": "127.0.0.1", "gripper_cmd_port": 5570,
                 "gripper_state_port": 5571, "base_host": "127.0.0.1", "base_cmd_port": 5590,
                 "base_state_port": 5591, "cameras": "ws://127.0.0.1:5580"}
ON_SIM = {"arm_served_by": "simulator", "gripper_served_by": "simulator",
          "base_served_by": "simulator"}


def shifted(params: dict, offset: int) -> dict:
    return {k: v + offset if k.endswith("_port") else
            v.replace("5580", str(5580 + offset)) if k == "cameras" else v
            for k, v in params.items()}


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "base.key"
    path.write_bytes(b"not the real key")
    return path


def test_defaults_start_the_simulator_and_then_the_node_wired_to_it():
    processes = plan({}, ROOT, rsp_available=True)
    assert [(p.name, p.executable, p.is_ros_node) for p in processes] == [
        ("tidybot_sim", "tidybot-sim", False), ("tidybot_exec", "tidybot-exec", True)]
    sim, node = processes
    assert node.params_files == (str(ROOT / "config" / "tidybot_exec.yaml"),)
    assert node.namespace == ""
    # the node starts once the simulator has said it serves; either one's exit ends the launch
    assert (sim.ready_text, sim.required, sim.after) == (SIM_READY, True, ())
    assert (node.after, node.required) == (("tidybot_sim",), True)
    assert sim.arguments == ("--host", "127.0.0.1", "--arm-ports", "5555,5556,5557",
                             "--gripper-ports", "5570,5571", "--base-ports", "5590,5591",
                             "--camera-port", "5580")
    # the node's endpoints are the simulator's, and it knows that it drives a simulator
    assert node.parameters == {**SIM_ENDPOINTS, **ON_SIM}
    assert validate(node.parameters) == []


def test_with_use_sim_a_params_file_cannot_send_the_node_to_other_backends(tmp_path):
    """A real robot's params file given to a simulated launch: the node still drives only
    the launch's simulator (the parameters given by the launch come after the file)."""
    params = tmp_path / "real.yaml"
    params.write_text("/**:\n  ros__parameters:\n    arm_host: robot\n    base_cmd_port: 6000\n"
                      "    cameras: ws://robot:5580\n")
    node = plan({"params_file": str(params)}, ROOT, rsp_available=False)[-1]
    assert node.params_files == (str(params),)
    assert node.parameters == {**SIM_ENDPOINTS, **ON_SIM}
    assert command_line(node, Path("/b")).index("--params-file") < command_line(
        node, Path("/b")).index("arm_host:=127.0.0.1")


def test_port_offset_moves_the_simulator_and_the_node_together():
    sim, node = plan({"port_offset": "1000"}, ROOT, rsp_available=False)
    assert sim.arguments == ("--host", "127.0.0.1", "--arm-ports", "6555,6556,6557",
                             "--gripper-ports", "6570,6571", "--base-ports", "6590,6591",
                             "--camera-port", "6580")
    assert node.parameters == {**shifted(SIM_ENDPOINTS, 1000), **ON_SIM}


def test_base_bridge_starts_before_the_node_and_serves_its_base(key_file):
    bridge, node = plan({"use_sim": "false", "base_bridge": "true", "base_rpc": "nuc:50000",
                         "base_authkey_file": str(key_file)}, ROOT, rsp_available=False)
    assert (bridge.executable, bridge.ready_text, bridge.required) == (
        "tidybot-base-bridge", BRIDGE_READY, True)
    assert bridge.arguments == ("--rpc", "nuc:50000", "--authkey-file", str(key_file),
                                "--host", "127.0.0.1", "--base-ports", "5590,5591")
    assert node.after == ("tidybot_base_bridge",)
    # the base through the local bridge; the arm and gripper where params_file says
    assert node.parameters == {"base_host": "127.0.0.1", "base_cmd_port": 5590,
                               "base_state_port": 5591, "arm_served_by": "hardware",
                               "gripper_served_by": "hardware", "base_served_by": "bridge"}
    assert str(key_file.read_bytes()) not in " ".join(command_line(bridge, Path("/b")))
    moved = plan({"use_sim": "false", "base_bridge": "true", "port_offset": "100",
                  "base_authkey_file": str(key_file)}, ROOT, rsp_available=False)
    assert moved[0].arguments[-1] == "5690,5691"
    assert (moved[1].parameters["base_cmd_port"], moved[1].parameters["arm_cmd_port"]) == (
        5690, 5655)


@pytest.mark.parametrize("args,error", [
    ({"use_sim": "false", "base_bridge": "true"}, "needs base_authkey_file:=FILE"),
    ({"use_sim": "false", "base_bridge": "true", "base_authkey_file": "/no/such/key"},
     "base_authkey_file /no/such/key: not a readable file"),
    ({"use_sim": "false", "base_bridge": "true", "base_authkey_file": "KEY",
      "base_rpc": "50000"}, "base_rpc must be HOST:PORT"),
    ({"base_bridge": "true", "base_authkey_file": "KEY"}, "tidybot-sim cannot leave it out"),
    ({"base_bridge": "maybe"}, "expected true or false"),
    ({"port_offset": "10"}, "port_offset must be 0 or 40..59944"),
    ({"port_offset": "60000"}, "port_offset must be 0 or 40..59944"),
    ({"port_offset": "-100"}, "port_offset must be at least 0"),
])
def test_bad_bridge_and_port_arguments_are_refused(args, error, key_file):
    args = {k: str(key_file) if v == "KEY" else v for k, v in args.items()}
    with pytest.raises(ValueError, match=error):
        plan(args, ROOT, rsp_available=False)


def test_exit_reasons_name_the_process_and_what_the_launch_does():
    sim = plan({}, ROOT, rsp_available=False)[0]
    assert exit_reason(sim, 2, was_ready=False) == (
        "tidybot_sim exited with code 2 before it served (its output above says why): the "
        "launch ends without starting the node, which would otherwise drive whatever else "
        "serves those ports")
    assert "tidybot_sim exited with code -9; the robot cannot run without it" in exit_reason(
        sim, -9, was_ready=True)
    assert "did not say that it serves ('tidybot-sim: listening') within 60 s" in exit_reason(
        sim, None, was_ready=False)


def test_hardware_namespace_params_file_and_rsp(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    arm_host: robot\n")
    processes = plan({"use_sim": "false", "namespace": "/robot1/", "params_file": str(params),
                      "rsp": "true"}, ROOT, rsp_available=True)
    assert [p.name for p in processes] == ["tidybot_exec", "robot_state_publisher"]
    node, rsp = processes
    assert (node.namespace, node.params_files) == ("robot1", (str(params),))
    assert rsp.namespace == "robot1"
    assert rsp.parameters["robot_description"].startswith("<?xml")
    assert [p.name for p in plan({"rsp": "true"}, ROOT, rsp_available=False)] == [
        "tidybot_sim", "tidybot_exec"]


@pytest.mark.parametrize("args,error", [
    ({"use_sim": "maybe"}, "expected true or false"), ({"sim": "true"}, "unknown launch arguments")])
def test_bad_arguments_are_refused(args, error):
    with pytest.raises(ValueError, match=error):
        plan(args, ROOT, rsp_available=False)


@pytest.mark.parametrize("content,error", [
    (None, "No such file or directory"), ("a: [b", "is not valid YAML"),
    ("arm_host: robot\n", "no '<node>: ros__parameters:' section")])
def test_a_params_file_the_node_could_not_use_fails_the_launch(tmp_path, content, error):
    params = tmp_path / "p.yaml"
    if content is not None:
        params.write_text(content)
    with pytest.raises(ValueError, match=error) as raised:
        plan({"use_sim": "false", "params_file": str(params)}, ROOT, rsp_available=False)
    assert str(params) in str(raised.value)        # says which file


def test_command_lines_match_the_ros_arguments():
    node = plan({"namespace": "r1", "use_sim": "false"}, ROOT, rsp_available=False)[0]
    assert command_line(node, Path("/x/bin")) == [
        "/x/bin/tidybot-exec", "--ros-args", "-r", "__node:=tidybot_exec", "-r", "__ns:=/r1",
        "--params-file", str(ROOT / "config" / "tidybot_exec.yaml"),
        "-p", "arm_served_by:=hardware", "-p", "gripper_served_by:=hardware",
        "-p", "base_served_by:=hardware"]


def test_launch_file_declares_every_argument_from_the_plan():
    """The launch file builds its arguments and actions from launch_plan (checked by AST,
    since launch itself is not importable here)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "tidybot_exec.ros.launch_plan" for a in n.names}
    assert {"ARGUMENTS", "plan"} <= imported
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert set(ARGUMENTS) == {"use_sim", "namespace", "params_file", "rsp", "port_offset",
                              "base_bridge", "base_rpc", "base_authkey_file"}


def test_a_fleet_gives_each_robot_a_namespace_a_simulator_and_its_own_ports():
    processes = fleet_plan({"robots": "3", "port_step": "100"}, ROOT)
    sims = [p for p in processes if not p.is_ros_node]
    nodes = [p for p in processes if p.is_ros_node]
    assert [n.namespace for n in nodes] == ["robot1", "robot2", "robot3"]
    assert [s.name for s in sims] == ["tidybot_sim_robot1", "tidybot_sim_robot2",
                                      "tidybot_sim_robot3"]
    assert [n.name for n in nodes] == ["tidybot_exec"] * 3       # apart by namespace
    assert [n.after for n in nodes] == [(s.name,) for s in sims]  # each waits for its own
    assert sims[1].arguments == ("--host", "127.0.0.1", "--arm-ports", "5655,5656,5657",
                                 "--gripper-ports", "5670,5671", "--base-ports", "5690,5691",
                                 "--camera-port", "5680")
    assert nodes[1].parameters == {**shifted(SIM_ENDPOINTS, 100), **ON_SIM}
    ports = [v for n in nodes for k, v in n.parameters.items() if k.endswith("_port")]
    assert len(ports) == len(set(ports))                 # no two robots share a port
    hardware = fleet_plan({"robots": "2", "use_sim": "false", "namespace_prefix": "arm"}, ROOT)
    assert [p.namespace for p in hardware] == ["arm1", "arm2"]
    assert [p.parameters.get("arm_cmd_port") for p in hardware] == [None, 5655]


@pytest.mark.parametrize("args,error", [
    ({"robots": "0"}, "robots must be at least 1"), ({"robots": "two"}, "whole number"),
    ({"port_step": "10"}, "port_step must be at least 40"), ({"robot": "2"}, "unknown launch"),
    ({"namespace_prefix": "/"}, "namespace_prefix must not be empty")])
def test_bad_fleet_arguments_are_refused(args, error):
    with pytest.raises(ValueError, match=error):
        fleet_plan(args, ROOT)


def test_fleet_launch_file_declares_every_fleet_argument():
    tree = ast.parse((ROOT / "launch" / "tidybot_fleet.launch.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                for a in n.names}
    assert {"FLEET_ARGUMENTS", "fleet_plan", "actions"} <= imported
    assert set(FLEET_ARGUMENTS) == {"robots", "use_sim", "params_file", "namespace_prefix",
                                    "port_step"}


def test_what_the_node_drives_is_said_in_the_ready_line_and_the_health_messages():
    assert drives("base", "bridge", "tcp://127.0.0.1:5590") == "base bridge tcp://127.0.0.1:5590"
    assert drives("arm", "", "tcp://robot:5555") == (
        "arm (source not stated) tcp://robot:5555")
    now = [0.0]
    monitor = BackendMonitor("arm", 100.0, 0.5, clock=lambda: now[0])
    monitor.served_by = "simulator"
    assert monitor.health().message == "simulator: no state received yet: is the backend running?"
    monitor.arrived()
    now[0] = 2.0
    monitor.served_by = "hardware"
    assert monitor.health().message == "hardware: state stopped 2.0s ago"
    assert validate({"arm_served_by": "bridge", "base_served_by": "bridge"}) == [
        "arm_served_by must be simulator, hardware or '', got 'bridge'"]
