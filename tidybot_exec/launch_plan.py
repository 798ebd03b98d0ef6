"""What tidybot_exec.launch.py starts, as plain data (no launch import needed).

The launch file turns this plan into launch actions; the demo turns it into processes;
plain pytest tests check it where the launch packages are not installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ARGUMENTS = {
    "use_sim": ("true", "start the simulated arm, gripper and base (tidybot-sim)"),
    "namespace": ("", "namespace of the node and its topics, services and action"),
    "params_file": ("", "parameter YAML (default: the installed config/tidybot_exec.yaml)"),
    "rsp": ("false", "start robot_state_publisher with urdf/tidybot.urdf (if installed)"),
}


@dataclass(frozen=True)
class Process:
    """One process to start: a ROS node (ros_args apply) or a plain executable."""

    name: str
    package: str
    executable: str
    is_ros_node: bool
    namespace: str = ""
    params_files: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    arguments: tuple[str, ...] = ()


def truthy(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def check_params_file(path: str) -> None:
    """Refuse a parameter file the node could not use: a node started without it would run
    on built-in defaults (localhost, default limits), which on a real robot is wrong."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ValueError(f"params_file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"params_file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not any(
            isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
        raise ValueError(f"params_file {path} has no '<node>: ros__parameters:' section")


def plan(args: dict[str, str], share_dir: Path, rsp_available: bool) -> list[Process]:
    """The processes for launch arguments ``args`` (defaults from ARGUMENTS fill the gaps)."""
    values = {name: args.get(name, default) for name, (default, _) in ARGUMENTS.items()}
    unknown = set(args) - set(ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments: {', '.join(sorted(unknown))}")
    params_file = values["params_file"] or str(share_dir / "config" / "tidybot_exec.yaml")
    check_params_file(params_file)
    namespace = values["namespace"].strip("/")
    processes = []
    if truthy(values["use_sim"]):
        processes.append(Process("tidybot_sim", "tidybot_exec", "tidybot-sim", is_ros_node=False))
    processes.append(Process("tidybot_exec", "tidybot_exec", "tidybot-exec", is_ros_node=True,
                             namespace=namespace, params_files=(params_file,)))
    if truthy(values["rsp"]) and rsp_available:
        urdf = (share_dir / "urdf" / "tidybot.urdf").read_text()
        processes.append(Process("robot_state_publisher", "robot_state_publisher",
                                 "robot_state_publisher", is_ros_node=True, namespace=namespace,
                                 parameters={"robot_description": urdf}))
    return processes


def command_line(p: Process, bin_dir: Path) -> list[str]:
    """The command that starts ``p`` outside of ros2 launch (as the demo does)."""
    cmd = [str(bin_dir / p.executable), *p.arguments]
    if p.is_ros_node:
        cmd += ["--ros-args", "-r", f"__node:={p.name}"]
        if p.namespace:
            cmd += ["-r", f"__ns:=/{p.namespace}"]
        for params_file in p.params_files:
            cmd += ["--params-file", params_file]
        for key, value in p.parameters.items():
            cmd += ["-p", f"{key}:={value}"]
    return cmd
