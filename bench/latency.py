#!/usr/bin/env python3
"""What an agent waits for: goal → first feedback, goal → result, cancel → result (and when
the hold was commanded), sustained goals per second, and memory per running execution —
with the warm worker and without it (``warm_worker: false``), in one run.

    ./tidybot run python bench/latency.py --goals 100

For each mode it starts the simulator and the node as processes (lease held, as an agent
works) and drives them from a real rclpy client (TidybotClient, its node spun by its own
thread), printing p50/p90/p99. Each trivial goal is followed by one to the *floor*
(floor_server.py: a bare rclpy action server in its own process that sends one feedback
and the result at once), so the floor is measured in the same run, interleaved goal by
goal, under the same load; the ratios say what the node adds. The node's arm command port
goes through a tap (a ZMQ
ROUTER/DEALER proxy with a capture socket) that timestamps the hold's STOP. USS per
execution: the unique memory of every process of one running execution, summed from
/proc/PID/smaps_rollup — warm: the processes in the execution's PID namespace (its init
and the code); cold: the node's descendants (supervisor, bwrap, the code). The warm pool's
standing cost (host, bwrap, zygote, the spare) is printed apart.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from common import free_ports, start_stack, stop
from tidybot_exec.clients.client import TidybotClient, spun_client
from tidybot_sdk import protocol as proto

CANCELED_CODE = ("import os, time\nprint(os.readlink('/proc/self/ns/pid'), flush=True)\n"
                 "time.sleep(30)\n")


def percentiles(name: str, seconds: list[float]) -> None:
    ms = np.asarray(seconds) * 1000
    print(f"  {name:30s} p50 {np.percentile(ms, 50):7.1f} ms  p90 {np.percentile(ms, 90):7.1f} ms"
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


def in_pid_namespace(pids: list[int], namespace: str) -> list[int]:
    found = []
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == namespace:
                found.append(pid)
        except OSError:
            continue
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


class StopTap:
    """Forwards the node's arm commands to the simulator and notes when each STOP passed."""

    def __init__(self, sim_port: int) -> None:
        self.port = free_ports(1)[0]
        self.stops: list[float] = []
        ctx = zmq.Context.instance()
        front, back, capture = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER), ctx.socket(zmq.PAIR)
        front.bind(f"tcp://127.0.0.1:{self.port}")
        back.connect(f"tcp://127.0.0.1:{sim_port}")
        capture.bind(f"inproc://tap-{id(self)}")
        watch = ctx.socket(zmq.PAIR)
        watch.connect(f"inproc://tap-{id(self)}")
        threading.Thread(target=zmq.proxy, args=(front, back, capture), daemon=True).start()
        threading.Thread(target=self._watch, args=(watch,), daemon=True).start()

    def _watch(self, watch: zmq.Socket) -> None:
        while True:
            frame = watch.recv()
            try:
                msg = proto.decode(frame)
            except proto.ProtocolError:
                continue
            if msg.get("msg_type") == int(proto.ArmMsg.STOP):
                self.stops.append(time.monotonic())

    def first_stop_after(self, t: float) -> float | None:
        return next((s for s in self.stops if s >= t), None)


def timed(client, code: str) -> tuple[float, float]:
    """(goal -> first feedback, goal -> result) of one goal, in seconds. A feedback lost on
    the way (a topic) fails the run after 60 s instead of waiting for ever."""
    sent = time.monotonic()
    run = client.execute(code)
    while not run.feedback():
        if time.monotonic() - sent > 60:
            raise RuntimeError(f"no feedback within 60 s of the goal: {run.result(10)}")
        time.sleep(0.0002)
    first = time.monotonic() - sent
    run.result(60)
    return first, time.monotonic() - sent


def measure(warm: bool, goals: int, seconds: float, domain_id: int) -> None:
    taps: list[StopTap] = []

    def tap(sim_port: int) -> int:
        taps.append(StopTap(sim_port))
        return taps[0].port

    sim, node = start_stack(domain_id, arm_cmd=tap, warm_worker=str(warm).lower())
    floor = subprocess.Popen([sys.executable, str(Path(__file__).with_name("floor_server.py")),
                              "bench_floor"], stdout=subprocess.PIPE, text=True)
    floor.stdout.readline()
    try:      # rclpy is initialised after start_stack: it chooses the ROS domain
        with spun_client("bench_latency") as client:
            floor_client = TidybotClient(client.node, "bench_floor")
            try:
                assert client.wait_for_server(30), "no server"
                assert floor_client.wait_for_server(30), "no floor server"
                client.acquire("bench")
                for _ in range(3):
                    client.execute("print('warm up')").result(60)
                    floor_client.execute("print('warm up')").result(60)
                first, done, cancel, hold, uss, standing = [], [], [], [], [], []
                floor_first, floor_done = [], []
                for _ in range(goals):
                    time.sleep(0.02)          # an agent looks at the result before its next step
                    f, d = timed(client, "print('hi')")
                    first.append(f)
                    done.append(d)
                    time.sleep(0.02)
                    f, d = timed(floor_client, "print('hi')")
                    floor_first.append(f)
                    floor_done.append(d)
                for _ in range(max(10, goals // 5)):
                    time.sleep(0.02)
                    run = client.execute(CANCELED_CODE)
                    while not (fb := run.feedback()):
                        time.sleep(0.001)
                    namespace = fb[0].text.strip()
                    everything = descendants(node.pid)
                    mine = in_pid_namespace(everything, namespace) if warm else everything
                    uss.append(uss_mb(mine))
                    standing.append(uss_mb([p for p in everything if p not in mine]))
                    asked = time.monotonic()
                    run.cancel()
                    run.result(60)
                    cancel.append(time.monotonic() - asked)
                    stopped = taps[0].first_stop_after(asked)
                    if stopped is not None:
                        hold.append(stopped - asked)
                count, start = 0, time.monotonic()
                while time.monotonic() - start < seconds:
                    client.execute("print('hi')").result(60)
                    count += 1
                rate = count / (time.monotonic() - start)
                print(f"warm_worker: {str(warm).lower()}")
                percentiles("goal -> first feedback", first)
                percentiles("goal -> result", done)
                percentiles("floor: goal -> first feedback", floor_first)
                percentiles("floor: goal -> result", floor_done)
                print(f"  {'vs the floor (p50)':30s} first feedback "
                      f"{np.median(first) / np.median(floor_first):.2f}x, result "
                      f"{np.median(done) / np.median(floor_done):.2f}x")
                percentiles("cancel -> result", cancel)
                percentiles("cancel -> hold commanded", hold)
                print(f"  {'sustained trivial goals':30s} {rate:.1f} per second")
                print(f"  {'USS per running execution':30s} median {np.median(uss):.1f} MB")
                if warm:
                    print(f"  {'warm pool standing USS':30s} median {np.median(standing):.1f} MB "
                          f"(host, bwrap, zygote, the spare)")
            finally:
                client.destroy()
                floor_client.destroy()
    finally:
        stop(node, sim, floor)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--goals", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0, help="sustained-rate window")
    a = p.parse_args()
    measure(True, a.goals, a.seconds, 79)
    measure(False, a.goals, a.seconds, 79)


if __name__ == "__main__":
    main()
