#!/usr/bin/env python3
"""The simulator's physics (DESIGN §12.2 speed): how fast it steps, what it costs idle.

    ./tidybot run python bench/physics.py [--seconds 10]

- stepping alone: the default scene's MuJoCo model (physics.Engine) stepped at its fixed
  time step, as the world's thread does in batches, with the robot still, with the hand
  sweeping through the cube's place, and holding the cube while the arm moves; printed
  as physics seconds per wall second (the × real time);
- one batch of the world's thread while the arm moves (robot read, the static-contact
  check, 3 steps, the reading);
- tidybot-sim's idle CPU (cameras served, no client, nothing commanded) from
  /proc/<pid>/stat over ``--seconds``, the process started as the user would;
- a dry run's private simulator (sim/private.py, started as the supervisor starts it):
  until it listens, until its arm's first state, until it is gone after SIGTERM (medians).

A dry run's whole start is bench/dry_run_start.py's; the cameras' figures bench/cameras.py's.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import cpu_seconds, free_ports, start_sim
from tidybot_sdk.protocol import ipc_endpoints
from tidybot_sdk.transport import StateSubscriber
from tidybot_exec.sim.physics import DT_S, Engine, Pose, StaticContacts, import_mujoco
from tidybot_exec.sim.world import Scene
from tidybot_sdk import kinematics as kin

CUBE = np.array([0.5, 0.0, 0.075])          # the default cube, arm base frame


def at(xyz: np.ndarray, q_seed: np.ndarray) -> np.ndarray:
    T = kin.fk(kin.HOME_Q).copy()
    T[:3, 3] = xyz
    q = kin.ik(T, q_seed)
    assert q is not None
    return q


def realtime(engine: Engine, poses: list[Pose], batch: int = 5) -> float:
    """Physics seconds per wall second over ``poses``, one batch of steps per pose."""
    start = time.perf_counter()
    for pose in poses:
        engine.advance(batch, pose)
    return len(poses) * batch * DT_S / (time.perf_counter() - start)


def stepping() -> None:
    scene = Scene.default()
    home = Pose(kin.HOME_Q.copy(), np.zeros(3), 0.0)
    t = time.perf_counter()
    import_mujoco()
    imported = time.perf_counter() - t
    engine = Engine(scene, home)
    built = time.perf_counter() - t - imported
    engine.advance(500, home)                                  # settle
    still = realtime(engine, [home] * 1000)
    # the open hand sweeps through the cube's place along y at 0.25 m/s (5 ms batches)
    q = at(CUBE + (0.0, -0.15, 0.0), kin.HOME_Q)
    sweep = []
    for y in np.arange(-0.15, 0.15, 0.25 * 5 * DT_S):
        q = at(CUBE + (0.0, y, 0.0), q)
        sweep.append(Pose(q, np.zeros(3), 0.0))
    engine = Engine(scene, sweep[0])
    engine.advance(250, sweep[0])
    pushing = realtime(engine, sweep)
    moved = np.linalg.norm(engine.read().poses["cube"][:3, 3] - scene.objects[0].pose[:3, 3])
    # holding the cube (welded) while the arm lifts it and swings the hand
    grip = 255.0 * (1 - 50 / 85)
    q = at(CUBE, kin.HOME_Q)
    engine = Engine(scene, Pose(q, np.zeros(3), grip))
    engine.advance(50, Pose(q, np.zeros(3), grip))
    engine.hold("cube")
    carry = []
    for s in np.linspace(0.0, 1.0, 300):
        q = at(CUBE + (0.0, 0.2 * s, 0.15 * s), q)
        carry.append(Pose(q, np.array([0.3 * s, 0.0, 0.0]), grip))
    holding = realtime(engine, carry)
    print(f"MuJoCo imported in {imported * 1000:.0f} ms, the model built in {built * 1000:.1f} ms")
    print(f"stepping alone (dt {DT_S * 1000:.0f} ms, batches of 5): robot still "
          f"{still:.0f}x real time; hand sweeping the cube {pushing:.0f}x (cube moved "
          f"{moved:.3f} m); carrying the cube {holding:.0f}x")
    static = StaticContacts(scene.table_box())
    reading_t, check_t = [], []
    for i, pose in enumerate(sweep):
        t = time.perf_counter()
        static.check(np.asarray(pose.q), pose.base, False, 0.0)
        check_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine.advance(3, pose)
        engine.read()
        reading_t.append(time.perf_counter() - t)
    print(f"one batch while the arm moves: static-contact check {np.median(check_t) * 1e3:.2f} ms,"
          f" 3 steps + reading {np.median(reading_t) * 1e3:.2f} ms (medians)")


def idle_cpu(seconds: float) -> None:
    ports = free_ports(8)
    proc = start_sim(ports)                # cameras served on ports[7], nobody subscribed
    try:
        time.sleep(2.0)                    # the objects settle, the physics falls asleep
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    print(f"tidybot-sim idle: {100 * (c1 - c0) / (t1 - t0):.1f} % of one core over {seconds:.0f} s")


def private_start(runs: int) -> None:
    private = Path(__file__).resolve().parents[1] / "tidybot_exec" / "sim" / "private.py"
    listening, first_state, gone = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as workdir:
            Path(workdir, "spec.json").write_text(json.dumps({"dry_run": {}}))
            start = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-I", "-u", str(private), workdir],
                                    stdout=subprocess.PIPE, text=True)
            proc.stdout.readline()
            listening.append(time.monotonic() - start)
            sub = StateSubscriber(ipc_endpoints(workdir)["arm"]["state"], "arm")
            sub.wait_next(10)
            first_state.append(time.monotonic() - start)
            sub.close()
            time.sleep(0.2)                 # a short dry run's code
            end = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=10)
            gone.append(time.monotonic() - end)
    print(f"a dry run's private simulator: listening after {np.median(listening) * 1e3:.0f} ms,"
          f" its arm's first state after {np.median(first_state) * 1e3:.0f} ms, gone "
          f"{np.median(gone) * 1e3:.0f} ms after SIGTERM ({runs} runs)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=7, help="private simulators started")
    a = p.parse_args()
    stepping()
    idle_cpu(a.seconds)
    private_start(a.runs)


if __name__ == "__main__":
    main()
