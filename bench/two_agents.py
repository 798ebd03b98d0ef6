#!/usr/bin/env python3
"""Two agents at once (DESIGN §12.3): the wall time of a base agent and an arm agent
running side by side against the sum of each one alone, and what a trivial goal waits for
when one agent works alone under a whole-robot lease and under an arm-only lease.

    ./tidybot run python bench/two_agents.py [--rounds 3] [--goals 30]

It starts the simulator and the node as processes (as bench/latency.py does) and drives
them from two TidybotClients on one spun node, each with its own lease: "nav" holds the
base, "arm-agent" the arm and the gripper. Each round runs (i) the base's code alone (a
0.2 m square, the holonomic base sliding without turning), (ii) the arm's code alone
(waves of the first joint around home), (iii) both at once, from two threads. The two
codes take about as long alone (~10 s), so that overlap shows: wall(both) / (sum of the
solo walls) is 1.0 when the two ran one after the other, near 0.5 when fully overlapped.
For each run it prints the result's duration_s (the code's own run time) and the goal →
result wall time the client saw; for (iii) also the wall time from both goals sent to
both results in. Then goal → result of ``print(1)`` (p50/p90 over --goals, the warm
worker's path) for one agent alone, first with a lease of all three parts, then with a
lease of the arm only.
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from common import start_stack, stop
from latency import percentiles, timed
from tidybot_exec.clients.client import TidybotClient, TidybotClientError, spun_client
from tidybot_exec.execution.records import Status

BASE_SQUARE = """\
from tidybot_sdk import base
for dx, dy in ((0.2, 0.0), (0.0, 0.2), (-0.2, 0.0), (0.0, -0.2)):
    base.move_delta(dx=dx, dy=dy)
"""
ARM_WAVE = """\
from tidybot_sdk import arm
home = arm.HOME_POSITION
for _ in range(4):
    for swing in (0.3, -0.3):
        arm.move_joints([home[0] + swing, *home[1:]])
arm.move_joints(home)
"""
PARTS = ("arm", "gripper", "base")


class Run:
    """One goal, sent from the calling thread: its result (or why there is none) and the
    seconds from sending it to its result."""

    def __init__(self, client: TidybotClient, code: str) -> None:
        self.client, self.code = client, code
        self.result, self.error, self.sent, self.done = None, "", 0.0, 0.0

    def __call__(self) -> None:
        self.sent = time.monotonic()
        try:
            self.result = self.client.execute(self.code, timeout_s=120.0).result(180.0)
            if self.result.status != Status.SUCCEEDED:
                self.error = f"{Status(self.result.status).name}: {self.result.error}"
        except TidybotClientError as exc:
            self.error = str(exc)
        self.done = time.monotonic()

    @property
    def wall(self) -> float:
        return self.done - self.sent

    def line(self, name: str) -> str:
        ran = f"ran {self.result.duration_s:5.2f} s" if self.result is not None else "no result"
        return (f"  {name:22s} {ran}, goal -> result {self.wall:5.2f} s"
                + (f"  FAILED {self.error}" if self.error else ""))


def side_by_side(runs: list[Run]) -> float:
    """Start every run in a thread of its own; the wall time until the last result."""
    threads = [threading.Thread(target=run) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(r.done for r in runs) - min(r.sent for r in runs)


def rounds(nav: TidybotClient, manipulator: TidybotClient, count: int) -> None:
    ratios = []
    for i in range(count):
        alone = [Run(nav, BASE_SQUARE), Run(manipulator, ARM_WAVE)]
        for run in alone:
            run()
        both = [Run(nav, BASE_SQUARE), Run(manipulator, ARM_WAVE)]
        wall = side_by_side(both)
        print(f"round {i + 1}:")
        print(alone[0].line("(i) base alone"))
        print(alone[1].line("(ii) arm alone"))
        print(both[0].line("(iii) base, together"))
        print(both[1].line("(iii) arm, together"))
        if any(r.error for r in alone + both):
            print("  (a run failed: no ratio)")
            continue
        ratios.append(wall / (alone[0].wall + alone[1].wall))
        print(f"  {'(iii) wall, both':22s} {wall:5.2f} s; sum of solo walls "
              f"{alone[0].wall + alone[1].wall:5.2f} s; wall(both)/sum {ratios[-1]:.2f}")
    if ratios:
        print(f"wall(both)/sum of solo, median over {len(ratios)} rounds: {np.median(ratios):.2f}")


def trivial_goals(client: TidybotClient, resources: tuple[str, ...], goals: int) -> None:
    """goal -> first feedback and goal -> result of print(1), one agent alone."""
    client.acquire("bench-latency", resources=resources)
    try:
        for _ in range(3):
            client.execute("print('warm up')").result(60)
        first, done = [], []
        for _ in range(goals):
            time.sleep(0.02)          # an agent looks at the result before its next step
            f, d = timed(client, "print(1)")
            first.append(f)
            done.append(d)
        print(f"one agent, lease of {','.join(resources)}:")
        percentiles("goal -> first feedback", first)
        percentiles("goal -> result", done)
    finally:
        client.release()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds of (i), (ii), (iii)")
    p.add_argument("--goals", type=int, default=30, help="trivial goals per lease")
    a = p.parse_args()
    sim, node = start_stack(79)
    try:      # rclpy is initialised after start_stack: it chooses the ROS domain
        with spun_client("bench_two_agents") as nav:
            manipulator = TidybotClient(nav.node)
            try:
                assert nav.wait_for_server(30) and manipulator.wait_for_server(30), "no server"
                nav.acquire("nav", resources=["base"])
                manipulator.acquire("arm-agent", resources=["arm", "gripper"])
                for client in (nav, manipulator):
                    client.execute("print('warm up')").result(60)
                rounds(nav, manipulator, a.rounds)
                nav.release()
                manipulator.release()
                trivial_goals(nav, PARTS, a.goals)
                trivial_goals(nav, ("arm",), a.goals)
            finally:
                nav.destroy()
                manipulator.destroy()
    finally:
        stop(node, sim)


if __name__ == "__main__":
    main()
