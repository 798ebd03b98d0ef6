"""Helpers shared by the benchmarks: free ports, process CPU time, starting the stack."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Callable


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on loopback right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def in_process_simulator():
    """(started Simulator, SdkConfig pointing at it) on free ports, in this process."""
    from tidybot_exec.sim import SimConfig, Simulator
    from tidybot_sdk.config import SdkConfig

    ports = free_ports(7)
    config = SimConfig(arm_ports=tuple(ports[0:3]), gripper_ports=tuple(ports[3:5]),
                       base_ports=tuple(ports[5:7]))
    simulator = Simulator(config)
    simulator.start()
    return simulator, SdkConfig().with_endpoints(config.addresses())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sim(ports: list[int], *extra: str) -> subprocess.Popen:
    """tidybot-sim on ports[0:7] (arm 3, gripper 2, base 2), cameras on ports[7] when
    given (else none); returns once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidybot_exec.sim.cli",
         "--arm-ports", ",".join(map(str, ports[0:3])), "--gripper-ports",
         ",".join(map(str, ports[3:5])), "--base-ports", ",".join(map(str, ports[5:7])),
         "--camera-port", str(ports[7] if len(ports) > 7 else 0), *extra],
        stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


PORT_PARAMS = ("arm_cmd_port", "arm_state_port", "arm_stream_port", "gripper_cmd_port",
               "gripper_state_port", "base_cmd_port", "base_state_port")


def start_stack(domain_id: int, arm_cmd: Callable[[int], int] | None = None,
                cameras: tuple[str, ...] | None = None,
                **params: object) -> tuple[subprocess.Popen, subprocess.Popen]:
    """tidybot-sim and tidybot-exec as processes on free ports, in ROS domain ``domain_id``
    (unless ROS_DOMAIN_ID is set), discovery on this host; ``params`` are node parameters;
    ``arm_cmd`` maps the simulator's arm command port to the one the node is given (a tap);
    ``cameras``: the simulator serves cameras, started with these extra arguments.
    Returns (simulator, node); stop them with ``stop``."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(domain_id))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    ports = free_ports(len(PORT_PARAMS) + 1)
    sim = start_sim(ports if cameras is not None else ports[:7], *(cameras or ()))
    if arm_cmd is not None:
        ports[0] = arm_cmd(ports[0])
    params = {"history_dir": tempfile.mkdtemp(), **dict(zip(PORT_PARAMS, ports)),
              "cameras": f"ws://127.0.0.1:{ports[7]}" if cameras is not None else "''", **params}
    args = ["tidybot-exec", "--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return sim, subprocess.Popen(args, stderr=subprocess.DEVNULL)


def stop(*procs: subprocess.Popen) -> None:
    """SIGINT each process (node first) and wait for it."""
    for proc in procs:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
