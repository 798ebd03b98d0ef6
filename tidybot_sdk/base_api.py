"""``base``: the holonomic mobile base.

Frames: "global" is the odometry frame (origin where the base started or was reset; x
forward, y left, theta counter-clockwise, metres and radians); "local" is the robot's own
heading at the moment of the call. The base stops by itself 250 ms after the last command,
so every motion here re-sends its target at 10 Hz until done.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backend import Backend, stop_on_interrupt
from .errors import BaseError
from .kinematics import wrap_angle
from .limits import SafetyLimits, finite
from .protocol import BASE_MAX_ACCEL, BASE_WATCHDOG_S, BaseMsg
from .streaming import Pacer, quintic, quintic_duration

RESEND_HZ = 10.0
POSITION_TOLERANCE = 0.02    # m
ANGLE_TOLERANCE = 0.03       # rad
SETTLED_SPEED = 0.02         # m/s and rad/s
MIN_DURATION = 1.0           # s
CAP_FRACTION = 0.8           # of the speed caps and the base's acceleration limits


class BaseAPI:
    """The mobile base, as submitted code sees it (``from tidybot_sdk import base``)."""

    def __init__(self, backend: Backend, limits: SafetyLimits) -> None:
        self._backend = backend
        self._limits = limits

    def get_state(self) -> dict[str, Any]:
        """``{"base_pose": [x, y, theta], "base_velocity": [vx, vy, wz]}`` (odometry frame).

        Raises BackendUnavailable when the base is down or its state is stale."""
        s = self._backend.state()
        return {"base_pose": list(s["base_pose"]), "base_velocity": list(s["base_velocity"])}

    def move_to_pose(self, x: float, y: float, theta: float, timeout: float | None = None,
                     frame: str = "global") -> None:
        """Drive to pose (x, y in m, theta in rad) and stop there.

        ``frame="global"``: odometry frame; ``frame="local"``: relative to the current pose
        and heading. Follows a smooth profile within the base speed caps; ``timeout`` (s,
        default 10) is how long to wait for arrival after the planned motion. Raises
        SafetyError (nothing moves) when the target is outside the base workspace box,
        BaseError when the base does not arrive.
        """
        target = finite([x, y, theta], "x, y, theta", 3, BaseError)
        start = np.array(self._backend.state()["base_pose"])
        if frame == "local":
            target = _compose(start, target)
        elif frame != "global":
            raise BaseError(f"frame must be 'global' or 'local', got {frame!r}")
        self._drive_to(start, target, timeout)

    def move_delta(self, dx: float = 0.0, dy: float = 0.0, dtheta: float = 0.0,
                   frame: str = "global", timeout: float | None = None) -> None:
        """Move by (dx, dy) m and turn by dtheta rad; ``frame`` "global" (odometry axes)
        or "local" (the robot's axes: dx forward, dy left)."""
        delta = finite([dx, dy, dtheta], "dx, dy, dtheta", 3, BaseError)
        start = np.array(self._backend.state()["base_pose"])
        if frame == "local":
            target = _compose(start, delta)
        elif frame == "global":
            target = start + delta
        else:
            raise BaseError(f"frame must be 'global' or 'local', got {frame!r}")
        self._drive_to(start, target, timeout)

    def forward(self, distance: float, timeout: float | None = None) -> None:
        """Drive ``distance`` m straight ahead (negative: backwards)."""
        self.move_delta(dx=distance, frame="local", timeout=timeout)

    def strafe(self, distance: float, timeout: float | None = None) -> None:
        """Slide ``distance`` m to the left (negative: right) without turning."""
        self.move_delta(dy=distance, frame="local", timeout=timeout)

    def rotate(self, angle: float, timeout: float | None = None) -> None:
        """Turn in place by ``angle`` rad (positive: counter-clockwise)."""
        self.move_delta(dtheta=angle, frame="local", timeout=timeout)

    def rotate_degrees(self, degrees: float, timeout: float | None = None) -> None:
        """Turn in place by ``degrees`` (positive: counter-clockwise)."""
        self.rotate(math.radians(degrees), timeout=timeout)

    def drive(self, vx: float, vy: float = 0.0, wz: float = 0.0, duration: float = 1.0,
              frame: str = "local") -> None:
        """Drive at velocity (vx, vy m/s, wz rad/s) for ``duration`` s, then stop.

        The command is re-sent at 10 Hz so the base's watchdog stays fed; ``frame``
        "local" (robot axes, default) or "global". Raises SafetyError above the caps."""
        v = finite([vx, vy, wz], "vx, vy, wz", 3, BaseError)
        if frame not in ("global", "local"):
            raise BaseError(f"frame must be 'global' or 'local', got {frame!r}")
        if not (math.isfinite(duration) and duration >= 0):
            raise BaseError(f"duration must be a non-negative number of seconds, got {duration!r}")
        self._limits.check_base_velocity(*v)
        with stop_on_interrupt(self.stop):
            for t in Pacer(RESEND_HZ).ticks():
                if t >= duration:
                    break
                self._command(BaseMsg.SET_TARGET_VELOCITY, velocity=v.tolist(), frame=frame)
            self.stop()

    def stop(self) -> None:
        """Brake and hold the current pose."""
        self._command(BaseMsg.STOP)

    # ---------------------------------------------------------------- internals
    def _command(self, msg_type: BaseMsg, **fields: Any) -> None:
        reply = self._backend.request(msg_type, **fields)
        if not reply.get("success"):
            raise BaseError(f"the base refused {msg_type.name}: {reply.get('error', reply)}")

    def _drive_to(self, start: np.ndarray, target: np.ndarray, timeout: float | None) -> None:
        target = target.copy()
        target[2] = wrap_angle(target[2])
        self._limits.check_base_position(target[0], target[1])
        delta = target - start
        delta[2] = wrap_angle(delta[2])
        distance, turn = float(np.hypot(delta[0], delta[1])), abs(float(delta[2]))
        # within the caps and the base's own acceleration limits: a faster path would
        # leave the real base lagging its target, then settling
        f = CAP_FRACTION
        duration = max(MIN_DURATION,
                       quintic_duration(distance, f * self._limits.base_speed,
                                        f * BASE_MAX_ACCEL[0]),
                       quintic_duration(turn, f * self._limits.base_angular_speed,
                                        f * BASE_MAX_ACCEL[2]))
        settle_for = 10.0 if timeout is None else float(timeout)
        with stop_on_interrupt(self.stop):
            pacer = Pacer(RESEND_HZ, restart_after=BASE_WATCHDOG_S)
            for _ in pacer.ticks():
                t = pacer.motion                # a stall slows the path (see streaming)
                pose = start + quintic(t / duration) * delta
                self._command(BaseMsg.EXECUTE_ACTION, base_pose=[pose[0], pose[1],
                                                                 wrap_angle(pose[2])])
                if t < duration:
                    continue
                state = self._backend.state()
                error = np.array(state["base_pose"]) - target
                if (np.hypot(error[0], error[1]) < POSITION_TOLERANCE
                        and abs(wrap_angle(error[2])) < ANGLE_TOLERANCE
                        and max(map(abs, state["base_velocity"])) < SETTLED_SPEED):
                    return
                if t > duration + settle_for:
                    raise BaseError(
                        f"the base did not reach ({target[0]:.3f}, {target[1]:.3f}, "
                        f"{target[2]:.3f}) within {settle_for:g}s after the {duration:.1f}s "
                        f"motion; it is at {np.round(state['base_pose'], 3).tolist()}")


def _compose(pose: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``delta`` (x, y, theta in the robot's frame at ``pose``) expressed in odometry."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return np.array([pose[0] + c * delta[0] - s * delta[1],
                     pose[1] + s * delta[0] + c * delta[1], pose[2] + delta[2]])
