#!/usr/bin/env python3
"""What tidybot-mcp adds: a trivial execute_code through MCP against the same goal sent
directly with TidybotClient, and the server's memory and CPU while idle.

    ./tidybot run python bench/mcp_overhead.py --goals 50

Starts the simulator and the node as processes (leases required), then: N trivial goals
(``print(1)``) through TidybotClient with its own lease, timed send → result; then a
tidybot-mcp started over stdio by the mcp client library, as an MCP client starts it, and N
execute_code calls with the same code, timed call → answer (the first call, which takes the
lease, is not counted). Prints p50/p90 of both and the difference, then the server's RSS
and USS (its unique memory, /proc/PID/smaps_rollup) after start and after the run, and its
CPU time over 10 s of idling.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import anyio
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import cpu_seconds, start_stack, stop
from tidybot_exec.clients.client import spun_client

CODE = "print(1)\n"


def p(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def show(name: str, seconds: list[float]) -> None:
    print(f"  {name:28s} p50 {p(seconds, 50):6.1f} ms  p90 {p(seconds, 90):6.1f} ms  "
          f"(n={len(seconds)})")


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, USS) of a process in MiB."""
    kib = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        name, _, value = line.partition(":")
        if name in ("Rss", "Private_Clean", "Private_Dirty"):
            kib[name] = int(value.split()[0])
    return kib["Rss"] / 1024, (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024


def server_pid() -> int:
    """The tidybot-mcp that the stdio client started (a child of this process)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"tidybot-mcp" in cmdline:
            return int(entry)
    raise RuntimeError("no tidybot-mcp child process")


def direct(goals: int) -> list[float]:
    times = []
    with spun_client("bench_mcp_direct") as client:
        assert client.wait_for_server(30), "no tidybot_exec server"
        client.acquire("bench-direct")
        client.execute(CODE).result(60)            # warm
        for _ in range(goals):
            start = time.perf_counter()
            result = client.execute(CODE).result(60)
            times.append(time.perf_counter() - start)
            assert result.status == 0, result.error
        client.release()
    return times


async def through_mcp(goals: int) -> list[float]:
    params = StdioServerParameters(command="tidybot-mcp", args=["--name", "bench"],
                                   env=dict(os.environ))
    times = []
    async with Client(stdio_client(params)) as client:
        pid = server_pid()
        await anyio.sleep(2)
        rss, uss = memory_mb(pid)
        print(f"  tidybot-mcp after start      RSS {rss:6.1f} MiB  USS {uss:6.1f} MiB")
        assert not (await client.call_tool("execute_code", {"code": CODE})).is_error  # lease
        for _ in range(goals):
            start = time.perf_counter()
            answer = await client.call_tool("execute_code", {"code": CODE})
            times.append(time.perf_counter() - start)
            assert answer.structured_content["status"] == "succeeded", answer.content
        await anyio.sleep(2)
        rss, uss = memory_mb(pid)
        print(f"  tidybot-mcp after the run    RSS {rss:6.1f} MiB  USS {uss:6.1f} MiB")
        before = cpu_seconds(pid)
        await anyio.sleep(10)
        print(f"  tidybot-mcp idle CPU         {(cpu_seconds(pid) - before) / 10 * 100:.2f} % "
              f"of a core (lease held, 10 s)")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goals", type=int, default=50)
    goals = parser.parse_args().goals
    sim, node = start_stack(79)
    try:
        plain = direct(goals)
        mcp = anyio.run(through_mcp, goals)
    finally:
        stop(node, sim)
    show("TidybotClient goal", plain)
    show("MCP execute_code", mcp)
    print(f"  MCP adds (p50)               {p(mcp, 50) - p(plain, 50):6.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
