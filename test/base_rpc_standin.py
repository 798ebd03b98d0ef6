"""A stand-in for the TidyBot base server, written here from the facts of REAL-SERVERS.md §2
and §6 (no fetched code): a real ``multiprocessing.managers`` server (typeid ``Base``, an
HMAC authkey, pickled numpy) over a fake vehicle.

- ``--api upstream``: reset, execute_action({'base_pose': ndarray}), get_state, close; every
  ``Base()`` is a new object without a vehicle until reset() (before: AttributeError on
  'NoneType'); reset() starts a new vehicle at odometry 0.
- ``--api fork``: also ensure_initialized, set_target_velocity(v, frame), stop,
  get_full_state, get_command_state, get_battery_voltage; ``Base()`` is one shared object
  (``--pose X,Y,THETA``: its vehicle already runs there, θ unwrapped).
- ``--without M1,M2``: the server lacks those methods (AttributeError on the client's proxy).

The vehicle: a 250 Hz loop, limits (0.5, 0.5, 1.57) / (0.25, 0.25, 0.79), velocity targets
clipped and pose targets taken as given (θ unwrapped: no short way round), a 1-slot command
queue (a second command in one tick is dropped), and the 250 ms watchdog: target = here,
motors neutral, the base coasts (slowed by friction only, never braked).

Run: python test/base_rpc_standin.py --port P --authkey-file F [--api fork]; prints
"base-rpc-standin: serving" once it accepts connections.
"""
from __future__ import annotations

import argparse
import math
import queue
import threading
import time
from multiprocessing.managers import BaseManager

import numpy as np

from tidybot_exec.sim.motion import track_position, track_velocity

TICK_S = 1.0 / 250
WATCHDOG_S = 2.5 * 0.1
COAST_DECEL = np.array([0.1, 0.1, 0.3])     # friction of a coasting base, well below a brake
READY = "base-rpc-standin: serving"


class Vehicle:
    """The fake base: odometry ``x`` (θ unwrapped) driven by a 250 Hz control loop."""

    def __init__(self, max_vel, max_accel, pose=(0.0, 0.0, 0.0)) -> None:
        self.max_vel, self.max_accel = np.array(max_vel, float), np.array(max_accel, float)
        self._x, self._dx = np.array(pose, float), np.zeros(3)
        self._mode: str | None = None      # "pose", "velocity", "brake"; None: coasting
        self._target, self._v_target = self._x.copy(), np.zeros(3)
        self._last_command = -math.inf
        self._commands: queue.Queue = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.control_loop_running = False

    @property
    def x(self) -> np.ndarray:
        with self._lock:
            return self._x.copy()

    @property
    def dx(self) -> np.ndarray:
        with self._lock:
            return self._dx.copy()

    def command_state(self) -> dict:
        with self._lock:
            return {"mode": self._mode or "coast", "target": self._target.copy(),
                    "v_target": self._v_target.copy(), "motors_enabled": self._mode is not None}

    def start_control(self) -> None:
        self._stop.clear()
        threading.Thread(target=self._loop, daemon=True).start()
        self.control_loop_running = True

    def stop_control(self) -> None:
        self._stop.set()
        self.control_loop_running = False

    def _enqueue(self, command: tuple) -> None:
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            pass                           # the real queue holds one command per tick

    def set_target_position(self, pose) -> None:
        self._enqueue(("pose", np.array(pose, float)))

    def set_target_velocity(self, velocity, frame: str = "global") -> None:
        self._enqueue(("velocity", np.clip(np.array(velocity, float), -self.max_vel,
                                           self.max_vel), frame))

    def brake(self) -> None:
        self._enqueue(("brake",))

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._tick(TICK_S)
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.monotonic()

    def _tick(self, dt: float) -> None:
        now = time.monotonic()
        try:
            command = self._commands.get_nowait()
        except queue.Empty:
            command = None
        with self._lock:
            if command is not None:
                self._apply(command)
                self._last_command = now
            if self._mode in ("pose", "velocity") and now - self._last_command > WATCHDOG_S:
                self._mode, self._target = None, self._x.copy()     # coast from here
            if self._mode == "pose":
                self._x, self._dx = track_position(self._x, self._dx, self._target,
                                                   self.max_vel, self.max_accel, dt)
            elif self._mode in ("velocity", "brake"):
                self._x, self._dx = track_velocity(self._x, self._dx, self._v_target,
                                                   self.max_accel, dt)
                if self._mode == "brake" and not np.any(self._dx):
                    self._mode = None
            else:
                self._x, self._dx = track_velocity(self._x, self._dx, np.zeros(3),
                                                   COAST_DECEL, dt)

    def _apply(self, command: tuple) -> None:
        kind = command[0]
        if kind == "pose":
            self._mode, self._target = "pose", command[1]
        elif kind == "velocity":
            v, frame = command[1], command[2]
            if frame == "local":           # rotated by the heading when it is taken
                c, s = math.cos(self._x[2]), math.sin(self._x[2])
                v = np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])
            self._mode, self._v_target = "velocity", v
        else:
            self._mode, self._v_target = "brake", np.zeros(3)


class Base:
    """The upstream server's object: no vehicle until reset()."""

    def __init__(self, max_vel=(0.5, 0.5, 1.57), max_accel=(0.25, 0.25, 0.79)) -> None:
        self.max_vel, self.max_accel = max_vel, max_accel
        self.vehicle: Vehicle | None = None

    def reset(self) -> None:
        if self.vehicle is not None and self.vehicle.control_loop_running:
            self.vehicle.stop_control()
        self.vehicle = Vehicle(self.max_vel, self.max_accel)
        self.vehicle.start_control()

    def execute_action(self, action: dict) -> None:
        self.vehicle.set_target_position(action["base_pose"])

    def get_state(self) -> dict:
        return {"base_pose": self.vehicle.x}

    def close(self) -> None:
        if self.vehicle is not None and self.vehicle.control_loop_running:
            self.vehicle.stop_control()


class ForkBase(Base):
    """The robot's fork: one shared object, initialised on demand, with velocity and stop."""

    def __init__(self, pose=None) -> None:
        super().__init__()
        if pose is not None:
            self.vehicle = Vehicle(self.max_vel, self.max_accel, pose)
            self.vehicle.start_control()

    def ensure_initialized(self) -> None:
        if self.vehicle is None or not self.vehicle.control_loop_running:
            self.reset()

    def set_target_velocity(self, velocity, frame: str = "global") -> None:
        self.vehicle.set_target_velocity(velocity, frame)

    def stop(self) -> None:
        self.vehicle.brake()

    def get_full_state(self) -> dict:
        return {"base_pose": self.vehicle.x, "base_velocity": self.vehicle.dx}

    def get_command_state(self) -> dict:
        return self.vehicle.command_state()

    def get_battery_voltage(self) -> float:
        return 24.0


class StandinManager(BaseManager):
    pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--authkey-file", required=True)
    p.add_argument("--api", choices=("upstream", "fork"), default="upstream")
    p.add_argument("--without", default="", metavar="M1,M2")
    p.add_argument("--pose", default=None, metavar="X,Y,THETA")
    a = p.parse_args()
    with open(a.authkey_file, "rb") as f:
        key = f.read().rstrip(b"\r\n")
    cls = ForkBase if a.api == "fork" else Base
    without = set(filter(None, a.without.split(",")))
    exposed = [m for m in dir(cls) if not m.startswith("_") and callable(getattr(cls, m))
               and m not in without]
    if a.api == "fork":
        shared = ForkBase([float(v) for v in a.pose.split(",")] if a.pose else None)
        StandinManager.register("Base", lambda *args, **kwargs: shared, exposed=exposed)
    else:
        StandinManager.register("Base", Base, exposed=exposed)
    server = StandinManager(address=("127.0.0.1", a.port), authkey=key).get_server()
    print(READY, a.api, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
