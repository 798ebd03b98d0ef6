#!/usr/bin/env python3
"""What an agent waits for: goal → first feedback, goal → result, cancel → result,
sustained goals per second, and memory per running execution.

    ./tidybot run python bench/latency.py --goals 100

Starts the simulator and the node as processes (lease held, as an agent works) and drives
them from a real rclpy client (TidybotClient, its node spun by its own thread), printing
p50/p90/p99 of each figure. USS per execution: the unique memory of every process of one
running execution (supervisor, bwrap, the code), summed from /proc/PID/smaps_rollup.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor

from common import start_stack, stop
from tidybot_exec.client import TidybotClient


def percentiles(name: str, seconds: list[float]) -> None:
    ms = np.asarray(seconds) * 1000
    print(f"{name:28s} p50 {np.percentile(ms, 50):7.1f} ms  p90 {np.percentile(ms, 90):7.1f} ms"
          f"  p99 {np.percentile(ms, 99):7.1f} ms  (n={len(ms)})")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def uss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--goals", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0, help="sustained-rate window")
    a = p.parse_args()
    sim, node = start_stack(79)
    rclpy.init()
    client_node = rclpy.create_node("bench_latency")
    executor = SingleThreadedExecutor()
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = TidybotClient(client_node)
    try:
        assert client.wait_for_server(30), "no server"
        client.acquire("bench")
        client.execute("print('warm')").result(60)
        first, done, cancel, uss = [], [], [], []
        for _ in range(a.goals):
            sent = time.monotonic()
            run = client.execute("print('hi')")
            while not run.feedback():
                time.sleep(0.0005)
            first.append(time.monotonic() - sent)
            run.result(60)
            done.append(time.monotonic() - sent)
        for _ in range(max(10, a.goals // 5)):
            run = client.execute("import time\nprint('x', flush=True)\ntime.sleep(30)")
            while not run.feedback():
                time.sleep(0.001)
            uss.append(uss_mb(descendants(node.pid)))
            asked = time.monotonic()
            run.cancel()
            run.result(60)
            cancel.append(time.monotonic() - asked)
        count, start = 0, time.monotonic()
        while time.monotonic() - start < a.seconds:
            client.execute("print('hi')").result(60)
            count += 1
        percentiles("goal -> first feedback", first)
        percentiles("goal -> result", done)
        percentiles("cancel -> result", cancel)
        print(f"{'sustained trivial goals':28s} {count / (time.monotonic() - start):.1f} per second")
        print(f"{'USS per running execution':28s} median {np.median(uss):.1f} MB "
              f"(all its processes)")
    finally:
        client.destroy()
        executor.shutdown()
        client_node.destroy_node()
        rclpy.try_shutdown()
        stop(node, sim)


if __name__ == "__main__":
    main()
