"""What tidybot_exec.launch.py starts, as plain data (no launch import needed).

The launch file turns this plan into launch actions; the demo turns it into processes;
plain pytest tests check it where the launch packages are not installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tidybot_exec.cameras.protocol import DEFAULT_PORT as CAMERA_PORT
from tidybot_sdk import protocol as proto

# the default ports span 5555..5591 (the camera server's 5580 among them): a robot's block
# of ports must not reach into the next one's
MIN_PORT_STEP = 40

ARGUMENTS = {
    "use_sim": ("true", "start the simulated arm, gripper and base (tidybot-sim)"),
    "namespace": ("", "namespace of the node and its topics, services and action"),
    "params_file": ("", "parameter YAML (default: the installed config/tidybot_exec.yaml)"),
    "rsp": ("false", "start robot_state_publisher with urdf/tidybot.urdf (if installed)"),
}

FLEET_ARGUMENTS = {
    "robots": ("1", "how many robots: namespaces <namespace_prefix>1 .. <namespace_prefix>N"),
    "use_sim": ("true", "start a simulator per robot, each on its own ports"),
    "params_file": ("", "parameter YAML for every robot (default: the installed "
                        "config/tidybot_exec.yaml); the ports are set per robot"),
    "namespace_prefix": ("robot", "robot i runs in namespace <namespace_prefix><i>"),
    "port_step": ("100", "robot i uses the default backend ports + (i - 1) * port_step"),
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
    values = _values(args, ARGUMENTS)
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
        # in a namespace its links carry the same prefix as the node's frames (frame_prefix)
        processes.append(Process("robot_state_publisher", "robot_state_publisher",
                                 "robot_state_publisher", is_ros_node=True, namespace=namespace,
                                 parameters={"robot_description": urdf,
                                             **({"frame_prefix": f"{namespace}/"}
                                                if namespace else {})}))
    return processes


def fleet_plan(args: dict[str, str], share_dir: Path) -> list[Process]:
    """The processes of ``robots`` robots: each robot's plan (plan()) in its own namespace,
    its simulator and its node on the default ports shifted by ``port_step`` per robot."""
    values = _values(args, FLEET_ARGUMENTS)
    robots, step = _count(values, "robots", 1), _count(values, "port_step", MIN_PORT_STEP)
    prefix = values["namespace_prefix"].strip("/")
    if not prefix:
        raise ValueError("namespace_prefix must not be empty")
    processes = []
    for i in range(1, robots + 1):
        namespace = f"{prefix}{i}"
        ports = {backend: [port + (i - 1) * step for port in default]
                 for backend, default in proto.DEFAULT_PORTS.items()}
        parameters = {f"{backend}_{role}_port": port for backend, roles in proto.SOCKETS.items()
                      for role, port in zip(roles, ports[backend])}
        camera_port = CAMERA_PORT + (i - 1) * step
        parameters["cameras"] = f"ws://127.0.0.1:{camera_port}"
        sim_arguments = tuple(a for backend in ("arm", "gripper", "base") for a in (
            f"--{backend}-ports", ",".join(map(str, ports[backend])))) + (
            "--camera-port", str(camera_port))
        for p in plan({"use_sim": values["use_sim"], "namespace": namespace,
                       "params_file": values["params_file"]}, share_dir, rsp_available=False):
            processes.append(
                replace(p, name=f"{p.name}_{namespace}", arguments=sim_arguments)
                if not p.is_ros_node else replace(p, parameters={**p.parameters, **parameters}))
    return processes


def _count(values: dict[str, str], name: str, minimum: int) -> int:
    try:
        count = int(values[name])
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {values[name]!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {count}")
    return count



def _values(args: dict[str, str], declared: dict[str, tuple[str, str]]) -> dict[str, str]:
    """``args`` with the defaults of ``declared`` filling the gaps; unknown ones refused."""
    unknown = set(args) - set(declared)
    if unknown:
        raise ValueError(f"unknown launch arguments: {', '.join(sorted(unknown))}")
    return {name: args.get(name, default) for name, (default, _) in declared.items()}


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
