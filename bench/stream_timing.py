#!/usr/bin/env python3
"""SDK motion stream timing: how close to its 50 Hz schedule the arm stream is sent.

    ./tidybot run python bench/stream_timing.py --seconds 10

Runs the simulator in-process, makes one move_joints of the given duration and reports the
lateness of each tick against its absolute due time (p50/p99/max), the achieved rate and
the drift (last tick's due time vs. the wall clock).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import free_ports
from tidybot_exec.sim import SimConfig, Simulator
from tidybot_sdk import Robot
from tidybot_sdk.config import SdkConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    ports = free_ports(7)
    config = SimConfig(arm_ports=tuple(ports[:3]), gripper_ports=tuple(ports[3:5]),
                       base_ports=tuple(ports[5:]))
    url = lambda port: f"tcp://127.0.0.1:{port}"  # noqa: E731
    sdk = Robot(SdkConfig(arm={"cmd": url(ports[0]), "state": url(ports[1]), "stream": url(ports[2])},
                          gripper={"cmd": url(ports[3]), "state": url(ports[4])},
                          base={"cmd": url(ports[5]), "state": url(ports[6])}))
    with Simulator(config) as sim:
        sdk.sensors.get_arm_joints()
        before = sim.arm.received["stream_JOINT_POSITION"]
        start = time.monotonic()
        sdk.arm.move_joints([0.6, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=a.seconds)
        wall = time.monotonic() - start
        received = sim.arm.received["stream_JOINT_POSITION"] - before
    late = np.array(sdk.arm.last_stream_lateness) * 1000.0
    ticks = len(late)
    print(f"{ticks} ticks in {wall:.2f}s = {ticks / wall:.2f} Hz sent, {received} received by the sim")
    print(f"lateness vs schedule: p50 {np.percentile(late, 50):.3f} ms, "
          f"p99 {np.percentile(late, 99):.3f} ms, max {late.max():.3f} ms")
    intervals = np.diff(np.arange(ticks) * 20.0 + late)
    print(f"interval: mean {intervals.mean():.3f} ms, p99 |jitter| "
          f"{np.percentile(np.abs(intervals - 20.0), 99):.3f} ms")
    sdk.close()


if __name__ == "__main__":
    main()
