"""What tidybot_exec.launch.py starts, as plain data (no launch import needed), and the same
plan started as plain subprocesses (the demo, process tests).

The launch file turns this plan into launch actions (launch_actions.py); plain pytest tests
check it where the launch packages are not installed.

A launch's node drives only what that launch meant it to (docs/real-robot.md, "Launch"):

- with use_sim:=true every endpoint of the node is its own simulator's (and with
  base_bridge:=true the base's is its own bridge's), whatever params_file says;
- the node starts only once each process it drives has said that it serves (``ready_text``,
  printed after its ports are bound): a simulator that cannot bind because another holds
  its ports never says so, so the node is never started against the other one;
- a process the robot needs (``required``) that exits ends the whole launch, with a reason
  that names it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from tidybot_exec.cameras.protocol import DEFAULT_PORT as CAMERA_PORT
from tidybot_sdk import protocol as proto

# the default ports span 5555..5591 (the camera server's 5580 among them): a robot's block
# of ports must not reach into the next one's
MIN_PORT_STEP = 40
HIGHEST_PORT = max(CAMERA_PORT, *(p for ports in proto.DEFAULT_PORTS.values() for p in ports))
# how long a process the node waits for may take to say that it serves (a simulator on two
# loaded cores takes a few seconds)
READY_TIMEOUT_S = 60.0
LOOPBACK = "127.0.0.1"
SIM_READY = "tidybot-sim: listening"
BRIDGE_READY = "tidybot-base-bridge: listening"

ARGUMENTS = {
    "use_sim": ("true", "start the simulated arm, gripper, base and cameras (tidybot-sim) and "
                        "wire the node to them, whatever params_file says"),
    "namespace": ("", "namespace of the node and its topics, services and action"),
    "params_file": ("", "parameter YAML (default: the installed config/tidybot_exec.yaml)"),
    "rsp": ("false", "start robot_state_publisher with urdf/tidybot.urdf (if installed)"),
    "port_offset": ("0", f"add this to the default port of every backend: the simulator's or "
                         f"the base bridge's, and the node's endpoints (0, or at least "
                         f"{MIN_PORT_STEP}: a second stack beside one on the default ports)"),
    "base_bridge": ("false", "start tidybot-base-bridge in front of the real base's RPC server "
                             "and drive the base through it (with use_sim:=false)"),
    "base_rpc": ("localhost:50000", "HOST:PORT of the base's RPC server (base_bridge)"),
    "base_authkey_file": ("", "file holding the base RPC server's authkey (required with "
                              "base_bridge: there is no built-in key)"),
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
    """One process to start: a ROS node (ros_args apply) or a plain executable.

    ``ready_text`` is what it prints on stdout once it serves; a process starts only after
    every process named in ``after`` has printed its. A ``required`` process that exits
    ends the launch: the robot cannot run without it.
    """

    name: str
    package: str
    executable: str
    is_ros_node: bool
    namespace: str = ""
    params_files: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    arguments: tuple[str, ...] = ()
    ready_text: str = ""
    after: tuple[str, ...] = ()
    required: bool = False


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
    use_sim, bridge = truthy(values["use_sim"]), truthy(values["base_bridge"])
    offset = _count(values, "port_offset", 0)
    if 0 < offset < MIN_PORT_STEP or HIGHEST_PORT + offset > 65535:
        raise ValueError(f"port_offset must be 0 or {MIN_PORT_STEP}..{65535 - HIGHEST_PORT} "
                         f"(a smaller one overlaps the default ports), got {offset}")
    if bridge and use_sim:
        raise ValueError(
            "base_bridge:=true drives the real base, but use_sim:=true starts a simulator that "
            "serves a base of its own (tidybot-sim cannot leave it out): use use_sim:=false "
            "with a params_file for the real arm and gripper")
    ports = {backend: [port + offset for port in default]
             for backend, default in proto.DEFAULT_PORTS.items()}
    sources = {"arm": "hardware", "gripper": "hardware", "base": "hardware"}
    # what the node connects to: only what differs from params_file (hardware: its hosts)
    endpoints: dict[str, object] = {}
    processes = []
    if use_sim:
        camera_port = CAMERA_PORT + offset
        processes.append(Process(
            "tidybot_sim", "tidybot_exec", "tidybot-sim", is_ros_node=False,
            arguments=("--host", LOOPBACK, *(a for backend in ("arm", "gripper", "base") for a in (
                f"--{backend}-ports", ",".join(map(str, ports[backend])))),
                "--camera-port", str(camera_port)),
            ready_text=SIM_READY, required=True))
        sources = dict.fromkeys(sources, "simulator")
        endpoints = {**_endpoint_params(("arm", "gripper", "base"), ports),
                     "cameras": f"ws://{LOOPBACK}:{camera_port}"}
    elif offset:
        endpoints = {k: v for k, v in _endpoint_params(("arm", "gripper", "base"), ports).items()
                     if not k.endswith("_host")}
    if bridge:
        processes.append(Process(
            "tidybot_base_bridge", "tidybot_exec", "tidybot-base-bridge", is_ros_node=False,
            arguments=("--rpc", _rpc_address(values["base_rpc"]),
                       "--authkey-file", _authkey_file(values["base_authkey_file"]),
                       "--host", LOOPBACK, "--base-ports", ",".join(map(str, ports["base"]))),
            ready_text=BRIDGE_READY, required=True))
        sources["base"] = "bridge"
        endpoints.update(_endpoint_params(("base",), ports))
    parameters = {**endpoints, **{f"{b}_served_by": s for b, s in sources.items()}}
    processes.append(Process("tidybot_exec", "tidybot_exec", "tidybot-exec", is_ros_node=True,
                             namespace=namespace, params_files=(params_file,),
                             parameters=parameters, after=tuple(p.name for p in processes),
                             required=True))
    if truthy(values["rsp"]) and rsp_available:
        urdf = (share_dir / "urdf" / "tidybot.urdf").read_text()
        # in a namespace its links carry the same prefix as the node's frames (frame_prefix)
        processes.append(Process("robot_state_publisher", "robot_state_publisher",
                                 "robot_state_publisher", is_ros_node=True, namespace=namespace,
                                 parameters={"robot_description": urdf,
                                             **({"frame_prefix": f"{namespace}/"}
                                                if namespace else {})}))
    return processes


def _endpoint_params(backends: tuple[str, ...], ports: dict[str, list[int]]) -> dict[str, object]:
    """The node's host and port parameters of ``backends`` on loopback at ``ports``."""
    out: dict[str, object] = {}
    for backend in backends:
        out[f"{backend}_host"] = LOOPBACK
        out.update({f"{backend}_{role}_port": port
                    for role, port in zip(proto.SOCKETS[backend], ports[backend])})
    return out


def _rpc_address(text: str) -> str:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"base_rpc must be HOST:PORT (e.g. localhost:50000), got {text!r}")
    return f"{host}:{port}"


def _authkey_file(path: str) -> str:
    """The key file's path, refused when missing: the bridge has no built-in key, since
    pickle over a known key lets anyone who can reach the RPC port run code on the robot."""
    if not path.strip():
        raise ValueError("base_bridge:=true needs base_authkey_file:=FILE, the file holding "
                         "the base RPC server's authkey (there is no built-in key)")
    resolved = Path(path).expanduser()
    if not resolved.is_file() or not os.access(resolved, os.R_OK):
        raise ValueError(f"base_authkey_file {path}: not a readable file")
    return str(resolved)


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
        robot = plan({"use_sim": values["use_sim"], "namespace": namespace,
                      "params_file": values["params_file"], "port_offset": str((i - 1) * step)},
                     share_dir, rsp_available=False)
        # the simulators get names of their own; the nodes keep theirs (the namespace tells
        # them apart)
        renamed = {p.name: p.name if p.is_ros_node else f"{p.name}_{namespace}" for p in robot}
        processes += [replace(p, name=renamed[p.name], after=tuple(renamed[a] for a in p.after))
                      for p in robot]
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


def exit_reason(p: Process, code: int | None, was_ready: bool) -> str:
    """Why the launch ends when required ``p`` exited (``code``; None: it never said that
    it serves within READY_TIMEOUT_S). The same words from ros2 launch and the demo."""
    if code is None:
        return (f"{p.name} did not say that it serves ({p.ready_text!r}) within "
                f"{READY_TIMEOUT_S:g} s: the launch ends without starting what drives it")
    if not was_ready and p.ready_text:
        return (f"{p.name} exited with code {code} before it served (its output above says "
                f"why): the launch ends without starting the node, which would otherwise "
                f"drive whatever else serves those ports")
    return f"{p.name} exited with code {code}; the robot cannot run without it: the launch ends"


class LaunchFailed(RuntimeError):
    """A required process of a started plan exited, or never said that it serves."""


class Started:
    """A plan's processes as plain subprocesses, with the launch file's rules: each starts
    once those it comes ``after`` have said that they serve, and a required process that
    exits ends the whole run (LaunchFailed with exit_reason's words). The demo runs on it,
    so does the process test of the launch's crossing rule."""

    def __init__(self, processes: list[Process], bin_dir: Path, log_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.processes = {p.name: p for p in processes}
        if len(self.processes) != len(processes):
            raise ValueError("Started runs one robot's plan: process names must differ")
        self.bin_dir, self.log_dir, self.env = bin_dir, log_dir, env
        self.popen: dict[str, subprocess.Popen] = {}
        self._ready: set[str] = set()
        self._changed = threading.Condition()
        self._readers: list[threading.Thread] = []

    def start(self, say=print) -> None:
        """Start every process in order; LaunchFailed (all stopped again) when one fails."""
        try:
            for p in self.processes.values():
                self._wait_ready(p.after)
                say(f"starting {p.name}")
                self._spawn(p)
            self.check()
        except BaseException:
            self.stop()
            raise

    def check(self) -> None:
        """LaunchFailed when a required process has exited."""
        for name, popen in self.popen.items():
            p = self.processes[name]
            if p.required and popen.poll() is not None:
                raise LaunchFailed(exit_reason(p, popen.returncode, name in self._ready))

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """SIGINT to each, the last started first; SIGKILL after ``timeout``. Exit codes."""
        codes = {}
        for name, popen in reversed(self.popen.items()):
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
            try:
                codes[name] = popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                codes[name] = popen.wait()
        for reader in self._readers:
            reader.join(timeout)
        return codes

    def _wait_ready(self, names: tuple[str, ...]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with self._changed:
            while not set(names) <= self._ready:
                self.check()
                if time.monotonic() > deadline:
                    late = next(n for n in names if n not in self._ready)
                    raise LaunchFailed(exit_reason(self.processes[late], None, False))
                self._changed.wait(0.5)

    def _spawn(self, p: Process) -> None:
        err: IO | None = None
        out: IO = sys.stdout.buffer
        if self.log_dir is not None:
            out = open(self.log_dir / f"{p.name}.out", "wb")
            err = open(self.log_dir / f"{p.name}.err", "wb")
        popen = subprocess.Popen(command_line(p, self.bin_dir), stdout=subprocess.PIPE,
                                 stderr=err, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})})
        if err is not None:
            err.close()
        self.popen[p.name] = popen
        reader = threading.Thread(target=self._read, args=(p, popen, out),
                                  name=f"out-{p.name}", daemon=True)
        self._readers.append(reader)
        reader.start()

    def _read(self, p: Process, popen: subprocess.Popen, out: IO) -> None:
        """Pass ``p``'s output on, noting when it says that it serves and when it ends."""
        try:
            for line in iter(popen.stdout.readline, b""):
                out.write(line)
                out.flush()
                if p.ready_text and p.ready_text.encode() in line:
                    with self._changed:
                        self._ready.add(p.name)
                        self._changed.notify_all()
        finally:
            popen.stdout.close()
            if out is not sys.stdout.buffer:
                out.close()
            popen.wait()
            with self._changed:
                self._changed.notify_all()
