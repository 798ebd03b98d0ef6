#!/usr/bin/env python3
"""Rewind on the simulator: accuracy, speed, and what recording costs.

    ./tidybot run python bench/rewind.py

Through the execution service (no ROS) on an in-process simulator: for each motion below,
code moves the robot from a fresh lease's start, then the robot is rewound to "start".
Prints, per motion: the final error of every joint (max, rad) and of the base (m) against
the start; the forward and the rewind duration; the peak joint, end-effector and base
speeds sampled from the simulator's state stream during the rewind, as a fraction of the
caps (a rewind keeps to half). Then the recorder's cost per state message and per kept
waypoint (``Recorder.observe``, in-process).
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np

from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.guard.recorder import Recorder
from tidybot_exec.execution.rewind_path import RewindRequest
from tidybot_sdk import kinematics as kin
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.transport import StateSubscriber

from common import in_process_simulator

MOTIONS = {
    "arm joints": "from tidybot_sdk import arm\nq = arm.get_state()['q']\n"
                  "q[0] += 0.6\nq[3] += 0.4\narm.move_joints(q)\n",
    "arm cartesian": "from tidybot_sdk import arm\narm.move_delta(dx=0.1, dz=-0.1)\n"
                     "arm.move_delta(dy=0.15)\n",
    "base": "from tidybot_sdk import base\nbase.move_delta(dx=0.3)\nbase.move_delta(dy=-0.2, "
            "dtheta=0.5)\n",
    "arm + base": "from tidybot_sdk import arm, base\nbase.move_delta(dx=-0.2)\n"
                  "q = arm.get_state()['q']\nq[1] += 0.3\narm.move_joints(q)\n"
                  "arm.move_delta(dz=0.1)\nbase.move_delta(dtheta=-0.4)\n",
}


class Sampler:
    """Every arm and base state the simulator publishes while running."""

    def __init__(self, config: SdkConfig) -> None:
        self.arm: list[tuple[float, list]] = []
        self.base: list[tuple[float, list]] = []
        self.on = threading.Event()
        self._subs = {name: sub for name, sub in zip(("arm", "base"), [
            StateSubscriber(config.arm["state"], "arm", lambda m: self.on.is_set() and self.arm.append(
                (time.monotonic(), m["q"]))),
            StateSubscriber(config.base["state"], "base", lambda m: self.on.is_set() and self.base.append(
                (time.monotonic(), m["base_pose"])))])}

    def state(self, name: str) -> dict:
        """The next state of ``name`` ("arm" or "base")."""
        return self._subs[name].wait_next(5.0)

    def peaks(self) -> tuple[float, float, float]:
        """(joint rad/s, end effector m/s, base m/s) over 50 ms windows (noise-free speeds)."""
        def peak(samples, distance) -> float:
            best = 0.0
            for i, (t0, a) in enumerate(samples):
                j = next((k for k in range(i, len(samples)) if samples[k][0] - t0 >= 0.05), None)
                if j is None:
                    break
                best = max(best, distance(np.asarray(a), np.asarray(samples[j][1])) / (samples[j][0] - t0))
            return best
        return (peak(self.arm, lambda a, b: float(np.max(np.abs(b - a)))),
                peak(self.arm, lambda a, b: float(np.linalg.norm(kin.fk(b)[:3, 3] - kin.fk(a)[:3, 3]))),
                peak(self.base, lambda a, b: float(np.hypot(*(b[:2] - a[:2])))))

    def close(self) -> None:
        for sub in self._subs.values():
            sub.close()


def recorder_cost(n: int = 20000) -> tuple[float, float]:
    """(µs per state message, µs per kept waypoint) of Recorder.observe."""
    clock = [0.0]
    rec = Recorder(clock=lambda: clock[0])
    rec.begin_lease(1)
    q = np.array(kin.HOME_Q, dtype=float)
    start = time.perf_counter()
    for i in range(n):                      # still: no waypoint is kept
        clock[0] += 0.001
        rec.observe("arm", {"q": q})
    still = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for i in range(n):                      # moving, 0.1 s apart: every message is kept
        clock[0] += 0.1
        q[0] = 0.5 * np.sin(i * 0.05)
        rec.observe("arm", {"q": q})
    kept = (time.perf_counter() - start) / n
    return still * 1e6, kept * 1e6


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    simulator, robot = in_process_simulator()
    sampler = Sampler(robot)
    limits = robot.limits
    with tempfile.TemporaryDirectory() as history:
        service = ExecutionService(
            ExecutorSettings(sdk_config_json=robot.to_json(), warm_worker=False),
            History(history, 100), lambda: [], LeasePolicy())
        while service.recorder.current().base is None:     # its feed sees the robot
            time.sleep(0.01)
        print(f"{'motion':15s} {'joint err':>10s} {'base err':>9s} {'forward':>8s} "
              f"{'rewind':>7s} {'joint':>6s} {'hand':>6s} {'base':>6s}  (peak speeds / cap)")
        for name, code in MOTIONS.items():
            granted: list = []
            service.leases.acquire("bench", 0.0, 0.0, granted.append)
            token = granted[0].lease_id
            q0 = np.asarray(sampler.state("arm")["q"])
            b0 = np.asarray(sampler.state("base")["base_pose"])
            start = time.monotonic()
            result = service.run(Request(code, timeout_s=60), token)
            forward = time.monotonic() - start
            if result.status != Status.SUCCEEDED:
                raise SystemExit(f"{name}: {result.error}\n{result.stderr}")
            sampler.arm.clear()
            sampler.base.clear()
            sampler.on.set()
            outcome = service.rewind(RewindRequest("start"), token)
            sampler.on.clear()
            if not outcome.success:
                raise SystemExit(f"{name}: rewind failed: {outcome.message}")
            q = np.asarray(sampler.state("arm")["q"])
            b = np.asarray(sampler.state("base")["base_pose"])
            joint, hand, base = sampler.peaks()
            print(f"{name:15s} {np.max(np.abs(q - q0)):10.4f} {np.hypot(*(b - b0)[:2]):9.4f} "
                  f"{forward:7.2f}s {outcome.duration_s:6.2f}s {joint / limits.joint_speed:6.2f} "
                  f"{hand / limits.cartesian_speed:6.2f} {base / limits.base_speed:6.2f}")
            service.leases.release(token)
        service.shutdown()
    sampler.close()
    simulator.stop()
    still, kept = recorder_cost()
    print(f"recorder: {still:.1f} µs per state message (robot still), {kept:.1f} µs per kept "
          f"waypoint")


if __name__ == "__main__":
    main()
