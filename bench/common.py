"""Helpers shared by the benchmarks: free ports, process CPU time, starting the simulator."""
from __future__ import annotations

import os
import socket
import subprocess
import sys


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_sim(ports: list[int], *extra: str) -> subprocess.Popen:
    """tidybot-sim on ports[0:7] (arm 3, gripper 2, base 2); returns once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidybot_exec.sim.cli",
         "--arm-ports", ",".join(map(str, ports[0:3])), "--gripper-ports",
         ",".join(map(str, ports[3:5])), "--base-ports", ",".join(map(str, ports[5:7])), *extra],
        stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc
