"""Simulated TidyBot holonomic base (docs/protocols.md, "Base").

Like the real controller: pose or velocity targets, velocity and acceleration limits of
(0.5 m/s, 0.5 m/s, 1.57 rad/s) and (0.25, 0.25, 0.79), and a 250 ms command watchdog after
which the base brakes, holds where it is and disables its motors.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from tidybot_sdk.kinematics import wrap_angle
from tidybot_sdk.protocol import BASE_MAX_ACCEL, BASE_MAX_VEL, BASE_WATCHDOG_S, BaseMsg

from .motion import track_position, track_velocity
from .server import BackendServer

V_MAX = np.array(BASE_MAX_VEL)
A_MAX = np.array(BASE_MAX_ACCEL)


class SimBase(BackendServer):
    name = "base"
    msg_types = BaseMsg

    def __init__(self, cmd_addr: str, state_addr: str, *,
                 state_rate_hz: float = 50.0, pose0=(0.0, 0.0, 0.0)) -> None:
        super().__init__(cmd_addr, state_addr, state_rate_hz=state_rate_hz, tick_hz=250.0)
        self.pose = np.array(pose0, dtype=float)     # x, y, theta in the odometry frame
        self.vel = np.zeros(3)                       # vx, vy, wz in the odometry frame
        self.target_pose = self.pose.copy()
        self.target_vel = np.zeros(3)
        self.velocity_mode = False
        self.active = False          # a command is being followed (False: braking/holding)
        self.motors_enabled = False
        self.last_command = 0.0      # monotonic time of the last command

    def handle(self, msg_type: BaseMsg, fields: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if msg_type == BaseMsg.GET_STATE:
                return self.state()
            if msg_type == BaseMsg.EXECUTE_ACTION:
                self.target_pose = np.array(fields["base_pose"])
                self._command(velocity_mode=False)
            elif msg_type == BaseMsg.SET_TARGET_VELOCITY:
                v = np.clip(np.array(fields["velocity"]), -V_MAX, V_MAX)
                if fields.get("frame", "global") == "local":
                    c, s = math.cos(self.pose[2]), math.sin(self.pose[2])
                    v = np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])
                self.target_vel = v
                self._command(velocity_mode=True)
            elif msg_type == BaseMsg.STOP:
                self.active = False
            elif msg_type == BaseMsg.RESET:
                self.pose[:] = 0.0
                self.vel[:] = 0.0
                self.active = self.motors_enabled = False
            return {"msg_type": int(msg_type), "success": True}

    def _command(self, velocity_mode: bool) -> None:
        self.velocity_mode = velocity_mode
        self.active = self.motors_enabled = True
        self.last_command = time.monotonic()

    def step(self, dt: float) -> None:
        if dt <= 0.0:
            return
        if self.active and time.monotonic() - self.last_command > BASE_WATCHDOG_S:
            self.active = False          # watchdog: brake and hold
        if not self.active:
            if not self.vel.any():       # at rest (the idle base's tick): nothing to integrate
                self.motors_enabled = False
                return
            self.pose, self.vel = track_velocity(self.pose, self.vel, np.zeros(3), A_MAX, dt)
            if not np.any(self.vel):
                self.motors_enabled = False
        elif self.velocity_mode:
            self.pose, self.vel = track_velocity(self.pose, self.vel, self.target_vel, A_MAX, dt)
        else:
            # shortest way round for theta: track an unwrapped target near the current angle
            target = self.target_pose.copy()
            target[2] = self.pose[2] + wrap_angle(target[2] - self.pose[2])
            self.pose, self.vel = track_position(self.pose, self.vel, target, V_MAX, A_MAX, dt)
        self.pose[2] = wrap_angle(self.pose[2])

    def resting(self) -> bool:
        return not self.active and not self.vel.any()

    def state(self) -> dict[str, Any]:
        return {
            "base_pose": self.pose.tolist(), "base_velocity": self.vel.tolist(),
            "is_velocity_mode": self.velocity_mode,
            "cmd_vel": self.target_vel.tolist() if self.velocity_mode else [0.0, 0.0, 0.0],
            "target_pose": self.target_pose.tolist(),
            "active": self.active, "motors_enabled": self.motors_enabled,
            "timestamp": time.time(),
        }
