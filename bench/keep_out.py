#!/usr/bin/env python3
"""Keep-out: what the arm's collision check costs, per streamed target and per motion.

    ./tidybot run python bench/keep_out.py [--repeat 5]

Starts tidybot-sim, a guard in front of it with the default scene's table kept out, and
the SDK through the guard making ordinary motions over the table (joint moves, cartesian
moves and deltas: 50 Hz streams), ``--repeat`` times. Prints p50/p99 of:
  * the SDK's path check per motion (the quintic path at its 50 Hz ticks and finer where
    a point would move more than 1 cm), and how many samples it took;
  * the guard's time per streamed target: the targets the guard saw (with the arm's and
    the base's state it read) replayed through a fresh Envelope in this one thread, so the
    figure is the check's own cost, not the wait for the GIL of the bench's other threads:
    all of ``Envelope.admit`` (limits, speed gate, shaping, keep-out) and the keep-out part
    alone (a joint target: the arm's clearances; a cartesian target: IK from the last
    target's joint angles and the clearances);
and the guard's refusals, which for this well-behaved code must be none.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np

from common import free_ports, start_sim, stop
from tidybot_exec.guard.envelope import Envelope
from tidybot_exec.guard.relay import Guard
from tidybot_sdk import Robot, collision
from tidybot_sdk.arm_api import ArmAPI
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.protocol import ArmMsg

TABLE = {"name": "table", "center": [0.75, 0.0, 0.225], "size": [0.6, 0.8, 0.45]}
STREAMED = (ArmMsg.JOINT_POSITION, ArmMsg.CARTESIAN_POSE)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 2 else max(values)


def line(label: str, seconds: list[float], unit: str = "us") -> str:
    scale = 1e6 if unit == "us" else 1e3
    return (f"  {label:<38} p50 {pct(seconds, 50) * scale:6.0f} {unit}   "
            f"p99 {pct(seconds, 99) * scale:6.0f} {unit}   (n={len(seconds)})")


def timed(into: list[float], call: Callable) -> Callable:
    """``call``, appending each call's duration (s) to ``into``."""
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - started)
    return wrapper


def motions(arm: ArmAPI, repeat: int, path: dict[str, list[float]]) -> None:
    """Six ordinary motions over the table, ``repeat`` times; the SDK's path check of each
    is timed into ``path`` by kind."""
    check = arm._check_keep_out
    joint, cartesian = timed(path["joint"], check), timed(path["cartesian"], check)
    home = np.array(arm.HOME_POSITION)
    for _ in range(repeat):
        arm._check_keep_out = joint
        arm.move_joints((home + [0.3, 0.1, -0.2, 0.2, 0.1, -0.1, 0.3]).tolist())
        arm.go_home()
        arm._check_keep_out = cartesian
        arm.move_to_pose(x=0.55, y=0.1, z=0.15)           # 10 cm over the table top
        arm.move_delta(dz=-0.05)
        arm.move_delta(dy=-0.2)
        arm._check_keep_out = joint
        arm.go_home()


def replay(config: SdkConfig, seen: list[tuple[float, dict, Any, Any]]) -> dict[str, list[float]]:
    """Per target: all of admit, and the keep-out part, in a fresh Envelope fed the states
    the guard read."""
    now: dict[str, Any] = {}
    env = Envelope(config.limits, lambda: now["arm"], lambda: now["base"], lambda: now["t"],
                   config.kept_out())
    out: dict[str, list[float]] = {k: [] for k in ("joint", "joint keep-out", "cartesian",
                                                   "cartesian keep-out")}
    env._check_pose = timed(out["cartesian keep-out"], env._check_pose)
    check_keep_out = env._check_keep_out

    def joint_keep_out(frames, what):     # (a cartesian target's is within _check_pose's)
        return (timed(out["joint keep-out"], check_keep_out) if what == "joint target"
                else check_keep_out)(frames, what)

    env._check_keep_out = joint_keep_out
    for t, msg, arm, base in seen:
        now.update(t=t, arm=arm, base=base)
        kind = "joint" if msg["msg_type"] == ArmMsg.JOINT_POSITION else "cartesian"
        started = time.perf_counter()
        reason, _ = env.admit("arm", msg)
        out[kind].append(time.perf_counter() - started)
        assert reason is None, reason
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    ports = free_ports(7)
    sim = start_sim(ports)
    url = lambda port: f"tcp://127.0.0.1:{port}"  # noqa: E731
    upstream = SdkConfig(keep_out=[TABLE]).with_endpoints({
        "arm": {"cmd": url(ports[0]), "state": url(ports[1]), "stream": url(ports[2])},
        "gripper": {"cmd": url(ports[3]), "state": url(ports[4])},
        "base": {"cmd": url(ports[5]), "state": url(ports[6])}})
    path: dict[str, list[float]] = {"joint": [], "cartesian": []}
    samples: list[int] = []
    seen: list[tuple[float, dict, Any, Any]] = []
    check_path = collision.KeepOut.check_path

    def counted(self, scene, q_at, s_values):
        samples.append(0)

        def q_counted(s, before):
            samples[-1] += 1
            return q_at(s, before)
        return check_path(self, scene, q_counted, s_values)

    collision.KeepOut.check_path = counted
    with tempfile.TemporaryDirectory() as directory:
        guard = Guard(upstream, directory).start()
        admit = guard.envelope.admit

        def recorded(backend: str, msg: dict):
            if backend == "arm" and msg.get("msg_type") in STREAMED:
                seen.append((time.monotonic(), msg, guard.state("arm"), guard.state("base")))
            return admit(backend, msg)

        guard.envelope.admit = recorded
        config = upstream.with_endpoints(guard.endpoints)
        robot = Robot(config)
        robot.arm = ArmAPI(robot.backend("arm"), config.limits, config.kept_out(),
                           robot.backend("base"))
        try:
            motions(robot.arm, a.repeat, path)
        finally:
            collision.KeepOut.check_path = check_path
            robot.close()
            guard.close()
            stop(sim)
    per_target = replay(upstream, seen)
    print(f"keep-out: the table at {TABLE['center']}, size {TABLE['size']}, and the robot "
          f"itself; margin {upstream.keep_out_margin_m} m; {a.repeat} rounds of 6 motions")
    print("SDK, path check per motion:")
    print(line("joint move", path["joint"], "ms"))
    print(line("cartesian move", path["cartesian"], "ms"))
    print(f"  samples per motion: {min(samples)}..{max(samples)}, median "
          f"{statistics.median(samples):g}")
    print("guard, per streamed target (replayed, one thread):")
    print(line("joint target, all of admit", per_target["joint"]))
    print(line("joint target, keep-out check", per_target["joint keep-out"]))
    print(line("cartesian target, all of admit", per_target["cartesian"]))
    print(line("cartesian target, IK + keep-out check", per_target["cartesian keep-out"]))
    print(f"guard refusals in the live run: {len(guard.refusals)}"
          + (f", first: {guard.refusals[0]}" if guard.refusals else ""))


if __name__ == "__main__":
    main()
