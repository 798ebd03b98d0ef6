"""The launch file's arguments and processes, checked without the launch packages."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import ROOT
from tidybot_exec.ros.launch_plan import ARGUMENTS, FLEET_ARGUMENTS, command_line, fleet_plan, plan

LAUNCH_FILE = ROOT / "launch" / "tidybot_exec.launch.py"


def test_defaults_start_the_simulator_and_the_node_with_the_installed_parameters():
    processes = plan({}, ROOT, rsp_available=True)
    assert [(p.name, p.executable, p.is_ros_node) for p in processes] == [
        ("tidybot_sim", "tidybot-sim", False), ("tidybot_exec", "tidybot-exec", True)]
    assert processes[1].params_files == (str(ROOT / "config" / "tidybot_exec.yaml"),)
    assert processes[1].namespace == ""


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
    node = plan({"namespace": "r1"}, ROOT, rsp_available=False)[1]
    assert command_line(node, Path("/x/bin")) == [
        "/x/bin/tidybot-exec", "--ros-args", "-r", "__node:=tidybot_exec", "-r", "__ns:=/r1",
        "--params-file", str(ROOT / "config" / "tidybot_exec.yaml")]


def test_launch_file_declares_every_argument_from_the_plan():
    """The launch file builds its arguments and actions from launch_plan (checked by AST,
    since launch itself is not importable here)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == "tidybot_exec.ros.launch_plan" for a in n.names}
    assert {"ARGUMENTS", "plan"} <= imported
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    assert set(ARGUMENTS) == {"use_sim", "namespace", "params_file", "rsp"}


def test_a_fleet_gives_each_robot_a_namespace_a_simulator_and_its_own_ports():
    processes = fleet_plan({"robots": "3", "port_step": "100"}, ROOT)
    sims = [p for p in processes if not p.is_ros_node]
    nodes = [p for p in processes if p.is_ros_node]
    assert [n.namespace for n in nodes] == ["robot1", "robot2", "robot3"]
    assert [s.name for s in sims] == ["tidybot_sim_robot1", "tidybot_sim_robot2",
                                      "tidybot_sim_robot3"]
    assert sims[1].arguments == ("--arm-ports", "5655,5656,5657", "--gripper-ports",
                                 "5670,5671", "--base-ports", "5690,5691",
                                 "--camera-port", "5680")
    assert nodes[1].parameters == {
        "arm_cmd_port": 5655, "arm_state_port": 5656, "arm_stream_port": 5657,
        "gripper_cmd_port": 5670, "gripper_state_port": 5671, "base_cmd_port": 5690,
        "base_state_port": 5691, "cameras": "ws://127.0.0.1:5680"}
    ports = [v for n in nodes for v in n.parameters.values()]
    assert len(ports) == len(set(ports))                 # no two robots share a port
    hardware = fleet_plan({"robots": "2", "use_sim": "false", "namespace_prefix": "arm"}, ROOT)
    assert [p.namespace for p in hardware] == ["arm1", "arm2"]


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
