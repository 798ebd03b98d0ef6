"""Simulated Robotiq 2F-85 behind the gripper_server protocol (docs/protocols.md, "Gripper").

Position 0 (open, 85 mm) .. 255 (closed); fingers move at 20..150 mm/s with the speed byte;
closing onto an object stops the fingers there and reports object_detected: the object the
world finds between the fingers when the close starts (world.py), or one of a configured
width anywhere (``object_width_mm``, for tests).
As on the real server, move/open/close replies come when the motion is done and the REP
loop is single-threaded, so a STOP sent during a move is answered after it.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

from tidybot_sdk.protocol import GRIPPER_TYPE_2F85, GripperMsg, GripperSeed, check_byte

from .server import BackendServer

STROKE_MM = 85.0
ACTIVATION_S = 0.3
MOVE_TIMEOUT_S = 5.0
FAULTS = {0: "", 5: "Action delayed: activation must be completed first",
          7: "The activation bit must be set prior to action"}


def stroke_mm(position: float) -> float:
    """Physical opening for a position byte (linear over the 85 mm stroke)."""
    return STROKE_MM * (1.0 - position / 255.0)


class Fingers(Protocol):
    """What the gripper asks the world (world.World)."""

    def between_fingers(self, opening_mm: float) -> float | None: ...
    def grasped(self) -> None: ...
    def released(self) -> None: ...


class SimGripper(BackendServer):
    name = "gripper"
    msg_types = GripperMsg

    def __init__(self, cmd_addr: str, state_addr: str, *,
                 state_rate_hz: float = 10.0, object_width_mm: float | None = None,
                 seed: GripperSeed | None = None, world: Fingers | None = None) -> None:
        super().__init__(cmd_addr, state_addr, state_rate_hz=state_rate_hz, tick_hz=100.0)
        seed = seed or {}
        self.object_width_mm = object_width_mm   # an object of this width is always there
        self.world = world
        self._between_mm: float | None = None      # the world's object this close stops on
        self.position = float(check_byte("position", int(seed.get("position", 0))))
        self.target = self.position
        self.speed = 255
        self.force = 255
        self.activated = bool(seed.get("is_activated", False))
        self.activating_until = 0.0
        self.moving = False
        self.object_detected = bool(seed.get("object_detected", False))
        if self.object_detected:                  # what it holds stays between the fingers
            self._between_mm = stroke_mm(self.position)
        self.calibrated = bool(seed.get("is_calibrated", False))
        self.open_mm = float(seed.get("open_mm", STROKE_MM))
        self.close_mm = float(seed.get("close_mm", 0.0))
        self.fault_code = 0

    def error_reply(self, text: str) -> dict[str, Any]:
        return {"msg_type": int(GripperMsg.RESPONSE), "success": False, "message": text}

    def _reply(self, success: bool, message: str, data: dict | None = None) -> dict[str, Any]:
        reply = {"msg_type": int(GripperMsg.RESPONSE), "success": success, "message": message}
        if data is not None:
            reply["data"] = data
        return reply

    def handle(self, msg_type: GripperMsg, fields: dict[str, Any]) -> dict[str, Any]:
        if msg_type == GripperMsg.ACTIVATE:
            with self.lock:
                if fields.get("reset_first", True):
                    self.activated = False
                self.fault_code = 0
                if not self.activated:
                    self.activating_until = time.monotonic() + ACTIVATION_S
            self._wait(lambda: self.activated, ACTIVATION_S * 4)
            return self._reply(self.activated, "activated")
        if msg_type == GripperMsg.RESET:
            with self.lock:
                self.activated = self.moving = False
                self.fault_code = 0
            return self._reply(True, "reset")
        if msg_type == GripperMsg.CALIBRATE:
            with self.lock:
                self.open_mm = fields.get("open_mm", STROKE_MM)
                self.close_mm = fields.get("close_mm", 0.0)
                self.calibrated = True
            return self._reply(True, f"calibrated {self.open_mm:g}..{self.close_mm:g} mm")
        with self.lock:
            if msg_type == GripperMsg.STOP:      # nothing moves unless activated: always fine
                self.target, self.moving = self.position, False
                return self._reply(True, "stopped", self._data())
            if not self.activated:
                self.fault_code = 7
                return self._reply(False, FAULTS[7])
            position = {GripperMsg.OPEN: 0, GripperMsg.CLOSE: 255}.get(msg_type)
            if position is None:
                position = check_byte("position", fields["position"])
            self.speed = check_byte("speed", fields.get("speed", 255))
            self.force = check_byte("force", fields.get("force", 255))
            if self.object_detected and position >= self.position:
                # closing further on what it holds: the fingers stay stalled on it
                self.target, self.moving = self.position, False
                return self._reply(True, "done", self._data())
            if self.object_detected and self.world is not None:
                self.world.released()
            self.target = float(position)
            self.moving = self.target != self.position
            self.object_detected = False
            self._between_mm = (self.world.between_fingers(stroke_mm(self.position))
                                if self.world is not None and self.target > self.position
                                else None)
        done = self._wait(lambda: not self.moving, MOVE_TIMEOUT_S)
        with self.lock:
            return self._reply(done, "done" if done else "motion timed out", self._data())

    def _wait(self, condition, timeout: float) -> bool:
        """Block this (REP) thread until the physics makes ``condition`` true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if condition():
                    return True
            time.sleep(0.005)
        return False

    def _data(self) -> dict[str, Any]:
        return {"position": int(round(self.position)), "object_detected": self.object_detected}

    def step(self, dt: float) -> None:
        if not self.activated and self.activating_until and time.monotonic() >= self.activating_until:
            self.activated, self.activating_until = True, 0.0
        if not self.moving:
            return
        rate = (20.0 + 130.0 * self.speed / 255.0) * 255.0 / STROKE_MM   # position units per s
        delta = self.target - self.position
        self.position += max(-rate * dt, min(rate * dt, delta))
        closing = delta > 0
        width = self.object_width_mm if self.object_width_mm is not None else self._between_mm
        if closing and width is not None and stroke_mm(self.position) <= width:
            self.position = 255.0 * (1.0 - width / STROKE_MM)
            self.object_detected, self.moving = True, False
            if self.world is not None and self.object_width_mm is None:
                self.world.grasped()
        elif self.position == self.target:
            self.moving = False

    def state(self) -> dict[str, Any]:
        fraction = self.position / 255.0
        mm = self.open_mm + (self.close_mm - self.open_mm) * fraction if self.calibrated else (
            stroke_mm(self.position))
        current = int(self.force * 0.6) if self.object_detected else (10 if self.moving else 0)
        return {
            "msg_type": int(GripperMsg.STATE), "timestamp": time.time(),
            "gripper_type": GRIPPER_TYPE_2F85,
            "position": int(round(self.position)), "position_request": int(round(self.target)),
            "position_mm": mm, "current": current, "current_ma": current * 10,
            "is_activated": self.activated, "is_moving": self.moving,
            "object_detected": self.object_detected, "is_calibrated": self.calibrated,
            "open_mm": self.open_mm, "close_mm": self.close_mm,
            "fault_code": self.fault_code, "fault_message": FAULTS.get(self.fault_code, "fault"),
        }
