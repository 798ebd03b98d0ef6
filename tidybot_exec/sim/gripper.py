"""Simulated Robotiq 2F-85 behind the gripper_server protocol (docs/protocols.md, "Gripper").

It answers as the TidyBot team's real gripper server does on a real 2F-85
(../shared/REAL-SERVERS.md §1): the state carries exactly the real server's 15 keys (its
client rebuilds the state from them, so an extra key breaks it); an unknown field in a
command is refused; activation and calibration move the fingers (fully open, then fully
closed), so whatever they held is let go; a move that has not arrived after 10 s still
replies success with where the fingers are; nothing is calibrated (0.0 mm) until CALIBRATE.
The server starts activated, as the real one activates the gripper when it starts.

Position 0 (open, 85 mm) .. 255 (closed); fingers move at 20..150 mm/s with the speed byte;
closing onto an object stops the fingers there and reports object_detected: an object
both pads touch (world.py's physics; the fingers stop at its extent between the pads), or
one of a configured width anywhere (``object_width_mm``, for tests). Replies come when the
motion is done and the REP loop is single-threaded, so a STOP sent during a move is
answered after it.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

from tidybot_sdk.protocol import (GRIPPER_MOVE_TIMEOUT_S, GRIPPER_TYPE_2F85, GripperMsg,
                                  GripperSeed, check_byte)

from .server import BackendServer

STROKE_MM = 85.0
RESET_WAIT_S = 0.5       # the driver waits this long after writing 0 before activating
ACTIVATION_S = 1.5       # rACT 0 -> 1 until gSTA 3 (with the reset wait: 2.0 s, as measured)
FRESH: GripperSeed = {"position": 255, "is_activated": True}   # after the start-up activation
FAULTS = {0: "No fault", 5: "Action delayed - reactivation required",
          7: "Activation bit must be set prior to action",
          8: "Max temperature exceeded - wait for cool-down",
          9: "No communication for 1 second", 10: "Under minimum voltage - reset required",
          11: "Automatic release in progress", 12: "Internal fault - contact support",
          13: "Activation fault - verify no interference", 14: "Overcurrent triggered",
          15: "Automatic release completed"}
_MOVE_REPLIES = {GripperMsg.MOVE: ("Object detected", "Position reached"),
                 GripperMsg.OPEN: ("Open complete", "Open complete"),
                 GripperMsg.CLOSE: ("Object detected", "Close complete")}


def stroke_mm(position: float) -> float:
    """Physical opening for a position byte (linear over the 85 mm stroke)."""
    return STROKE_MM * (1.0 - position / 255.0)


def clamp_byte(value: float) -> int:
    """The driver clamps every byte to 0..255 (300 -> 255) instead of refusing it."""
    return max(0, min(255, int(value)))


class Fingers(Protocol):
    """What the gripper asks the world (world.World)."""

    def pinched(self, opening_mm: float) -> float | None: ...
    def grasped(self) -> None: ...
    def released(self) -> None: ...


class NotActivated(Exception):
    """A move asked of a gripper that is not activated (the driver's RuntimeError)."""


class SimGripper(BackendServer):
    name = "gripper"
    msg_types = GripperMsg

    def __init__(self, cmd_addr: str, state_addr: str, *,
                 state_rate_hz: float = 10.0, object_width_mm: float | None = None,
                 seed: GripperSeed | None = None, world: Fingers | None = None) -> None:
        super().__init__(cmd_addr, state_addr, state_rate_hz=state_rate_hz, tick_hz=100.0)
        seed = FRESH if seed is None else seed
        self.object_width_mm = object_width_mm   # an object of this width is always there
        self.world = world
        self.position = float(check_byte("position", int(seed.get("position", 0))))
        self.target = self.position
        self.speed = 255
        self.force = 255
        self.activated = bool(seed.get("is_activated", False))
        self.activation_legs: list[float] = []     # finger targets of a running activation
        self.activating_until = 0.0
        self.moving = False
        self.jammed = False                        # fault injection: the fingers cannot move
        self.object_detected = bool(seed.get("object_detected", False))
        self.calibrated = bool(seed.get("is_calibrated", False))
        self.open_mm = float(seed.get("open_mm", 0.0)) if self.calibrated else 0.0
        self.close_mm = float(seed.get("close_mm", 0.0)) if self.calibrated else 0.0
        self.open_bit, self.close_bit = 0, 255    # where calibration found the stroke's ends
        self.fault_code = 0

    def error_reply(self, text: str) -> dict[str, Any]:
        return self._reply(False, text)

    @staticmethod
    def _reply(success: bool, message: str, data: dict | None = None) -> dict[str, Any]:
        """Exactly the real server's reply keys; ``data`` is null unless a move answered."""
        return {"msg_type": int(GripperMsg.RESPONSE), "success": success, "message": message,
                "data": data}

    def handle(self, msg_type: GripperMsg, fields: dict[str, Any]) -> dict[str, Any]:
        if msg_type == GripperMsg.ACTIVATE:
            ok = self._activate(fields.get("reset_first", True))
            return self._reply(ok, "Activation complete" if ok else "Activation failed")
        if msg_type == GripperMsg.RESET:
            with self.lock:
                self._reset()
            return self._reply(True, "Reset complete")
        if msg_type == GripperMsg.CALIBRATE:
            ok = self._calibrate(fields.get("open_mm", STROKE_MM), fields.get("close_mm", 0.0))
            return self._reply(ok, "Calibration complete" if ok else "Calibration failed")
        if msg_type == GripperMsg.STOP:
            return self._reply(self._stop_here(), "Stopped" if self.activated else "Stop failed")
        try:
            position = {GripperMsg.OPEN: 0, GripperMsg.CLOSE: 255}.get(msg_type)
            final, detected = self._move(fields["position"] if position is None else position,
                                         fields.get("speed", 255), fields.get("force", 255))
        except NotActivated:
            return self._reply(False, "Gripper not activated")
        message = _MOVE_REPLIES[msg_type][0 if detected else 1]
        return self._reply(True, message, {"position": final, "object_detected": detected})

    # ---------------------------------------------------------------- what the driver does
    def _stop_here(self) -> bool:
        """The driver's stop (a move to where the fingers are, speed 0): they stay there, on
        what they hold too (the holding force is left as it was)."""
        with self.lock:
            if not self.activated:
                return False
            self.target, self.moving = self.position, False
            return True

    def _reset(self) -> None:
        """rACT 0: not activated, any activation or move abandoned, faults cleared."""
        self.activated = self.moving = False
        self.activation_legs, self.activating_until = [], 0.0
        self.fault_code = 0

    def _activate(self, reset_first: bool) -> bool:
        with self.lock:
            if self.activated and not reset_first:
                return True                      # already active: nothing moves
        if reset_first:
            with self.lock:
                self._reset()
            if self._stop.wait(RESET_WAIT_S):
                return False
        with self.lock:
            self._release()                      # the fingers open fully: what they held goes
            self.activation_legs = [0.0, 255.0]
            self.activating_until = time.monotonic() + ACTIVATION_S
        if self._wait(lambda: self.activated, GRIPPER_MOVE_TIMEOUT_S):
            return True
        with self.lock:                          # given up (jammed fingers): not activating
            self.activation_legs, self.activating_until = [], 0.0
        return False

    def _calibrate(self, open_mm: float, close_mm: float) -> bool:
        """Open fully, then close fully, and remember the bytes at both ends (ends closed)."""
        try:
            open_bit, _ = self._move(0, 255, 255)
            close_bit, _ = self._move(255, 255, 255)
        except NotActivated:
            return False
        if abs(close_bit - open_bit) < 1:
            return False
        with self.lock:
            self.open_mm, self.close_mm = float(open_mm), float(close_mm)
            self.open_bit, self.close_bit = open_bit, close_bit
            self.calibrated = True
        return True

    def _move(self, position: float, speed: float, force: float) -> tuple[int, bool]:
        """Go to ``position``; (final position, object detected) once the fingers stop, or
        after GRIPPER_MOVE_TIMEOUT_S with object_detected False (the driver's timeout)."""
        with self.lock:
            if not self.activated:
                raise NotActivated
            position, self.speed, self.force = map(clamp_byte, (position, speed, force))
            if self.object_detected and position >= self.position:
                # closing further on what it holds: the fingers stay stalled on it
                self.target, self.moving = self.position, False
                return int(round(self.position)), True
            self._release()
            self.target = float(position)
            self.moving = self.target != self.position
        done = self._wait(lambda: not self.moving, GRIPPER_MOVE_TIMEOUT_S)
        with self.lock:
            return int(round(self.position)), done and self.object_detected

    def _release(self) -> None:
        if self.object_detected and self.world is not None:
            self.world.released()
        self.object_detected = False

    def _wait(self, condition, timeout: float) -> bool:
        """Block this (REP) thread until the physics makes ``condition`` true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self.lock:
                if condition():
                    return True
            time.sleep(0.005)
        return False

    # -------------------------------------------------------------------------- physics
    def step(self, dt: float) -> None:
        if self.activating_until:                # activating: open fully, then close fully
            if self.activation_legs and self._travel(self.activation_legs[0], 255, dt):
                self.activation_legs.pop(0)
            if not self.activation_legs and time.monotonic() >= self.activating_until:
                self.activated, self.activating_until = True, 0.0
                self.target = self.position
            return
        if not self.moving:
            return
        closing = self.target > self.position
        arrived = self._travel(self.target, self.speed, dt)
        width = self._stopped_on() if closing else None
        if width is not None:
            self.position = 255.0 * (1.0 - min(width, STROKE_MM) / STROKE_MM)  # on its faces
            self.object_detected, self.moving = True, False
            if self.world is not None and self.object_width_mm is None:
                self.world.grasped()
        elif arrived:
            self.moving = False

    def _stopped_on(self) -> float | None:
        """The width (mm) of what the closing fingers stop on now, if anything: the
        configured object once they reach its width, else the one the pads pinch."""
        if self.object_width_mm is not None:
            return self.object_width_mm if stroke_mm(self.position) <= self.object_width_mm \
                else None
        return self.world.pinched(stroke_mm(self.position)) if self.world is not None else None

    def _travel(self, target: float, speed: int, dt: float) -> bool:
        """Move the fingers toward ``target`` for dt; True once they are there."""
        if self.jammed:
            return False
        rate = (20.0 + 130.0 * speed / 255.0) * 255.0 / STROKE_MM   # position units per s
        delta = target - self.position
        self.position += max(-rate * dt, min(rate * dt, delta))
        return self.position == target

    def state(self) -> dict[str, Any]:
        """The real server's 15 keys, no more (its client breaks on an extra one)."""
        position = int(round(self.position))
        mm = 0.0
        if self.calibrated:
            per_bit = (self.close_mm - self.open_mm) / (self.close_bit - self.open_bit)
            mm = self.open_mm + per_bit * (self.position - self.open_bit)
        current = int(self.force * 0.6) if self.object_detected else (10 if self.moving else 0)
        return {
            "timestamp": time.time(), "gripper_type": GRIPPER_TYPE_2F85,
            "position": position, "position_mm": mm,
            "position_request": int(round(self.target)),
            "current": current, "current_ma": current * 10,
            "is_activated": self.activated, "is_moving": self.moving,
            "object_detected": self.object_detected, "is_calibrated": self.calibrated,
            "open_mm": self.open_mm, "close_mm": self.close_mm,
            "fault_code": self.fault_code,
            "fault_message": FAULTS.get(self.fault_code, f"Unknown fault: {self.fault_code}"),
        }
