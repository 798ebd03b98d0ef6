"""``gripper``: the Robotiq 2F-85 two-finger gripper.

Positions are Robotiq bytes: 0 = fully open ... 255 = fully closed; ``speed`` and ``force``
are bytes too (force 255 is about 235 N; the lab caps it, see SafetyLimits). Widths are in
metres and use the gripper's real calibration. Every command blocks until the fingers stop.

The real gripper server gives up on a move after 10 s and still answers "success" with
wherever the fingers are; this module judges arrival from the gripper's state instead, so a
move that did not get there is a GripperError (docs/real-robot.md).
"""
from __future__ import annotations

from typing import Any

from .backend import Backend, stop_on_interrupt
from .errors import GripperError
from .limits import SafetyLimits
from .protocol import GRIPPER_MOVE_TIMEOUT_S, GripperMsg

DEFAULT_FORCE = 100      # byte, about 92 N
# s, for one reply: the server's own 10 s limit on a move or an activation, the driver's
# 0.5 s reset wait and a margin (a full stroke at the slowest speed takes ~4.3 s)
DEFAULT_TIMEOUT = GRIPPER_MOVE_TIMEOUT_S + 2.0
# calibration is a full open and a full close, each up to the server's limit
CALIBRATE_TIMEOUT = 2 * GRIPPER_MOVE_TIMEOUT_S + 2.0


class GripperAPI:
    """The gripper, as submitted code sees it (``from tidybot_sdk import gripper``)."""

    def __init__(self, backend: Backend, limits: SafetyLimits) -> None:
        self._backend = backend
        self._limits = limits

    def get_state(self) -> dict[str, Any]:
        """Gripper state: ``position`` (0..255), ``position_mm``, ``is_activated``,
        ``is_moving``, ``object_detected``, ``is_calibrated``, ``current``, ``current_ma``,
        ``fault_code``, ``fault_message``, ``open_mm``, ``close_mm``.

        Raises BackendUnavailable when the gripper is down or its state is stale."""
        s = self._backend.state()
        keys = ("position", "position_mm", "is_activated", "is_moving", "object_detected",
                "is_calibrated", "current", "current_ma", "fault_code", "fault_message",
                "open_mm", "close_mm")
        return {k: s[k] for k in keys if k in s}

    def activate(self, reset_first: bool | None = None, timeout: float | None = None) -> None:
        """Activate the gripper (the gripper server does it when it starts; again after a
        reset or a fault).

        Warning: activating MOVES THE FINGERS: they open fully and then close fully (about
        2 s), so whatever they hold is dropped and whatever is between them is squeezed.
        ``reset_first=None`` (default) does that only when the gripper is not activated or
        reports a fault; an active, healthy gripper is left as it is. ``True`` always
        resets and re-activates (the fingers move); ``False`` never resets.
        """
        if reset_first is None:                  # judged from a state sent after this call
            state = self._backend.next_state(timeout_s=1.0)
            if state.get("is_activated") and not state.get("fault_code"):
                return
            reset_first = True
        self._command(GripperMsg.ACTIVATE, timeout, reset_first=bool(reset_first))

    def open(self, speed: int = 255, force: int = DEFAULT_FORCE,
             timeout: float | None = None) -> None:
        """Open fully."""
        self._command(GripperMsg.OPEN, timeout, **self._speed_force(speed, force))

    def close(self, speed: int = 255, force: int = DEFAULT_FORCE,
              timeout: float | None = None) -> None:
        """Close fully (or until the fingers stop on an object)."""
        self._command(GripperMsg.CLOSE, timeout, **self._speed_force(speed, force))

    def grasp(self, speed: int = 255, force: int = DEFAULT_FORCE,
              timeout: float | None = None) -> bool:
        """Close on an object. Returns True when the fingers stopped on something, False when
        they closed on nothing (no exception: an empty grasp is an answer, not an error)."""
        reply = self._command(GripperMsg.CLOSE, timeout, **self._speed_force(speed, force))
        return bool(reply.get("data", {}).get("object_detected", False))

    def move(self, position: int | None = None, width: float | None = None, speed: int = 255,
             force: int = DEFAULT_FORCE, timeout: float | None = None) -> None:
        """Move the fingers to ``position`` (0 open .. 255 closed) or to an opening ``width``
        in metres (needs calibration; converted with the gripper's own open/close mm).
        Give exactly one of the two."""
        if (position is None) == (width is None):
            raise GripperError("give exactly one of position= (0..255) or width= (metres)")
        if width is not None:
            position = self._position_for_width(width)
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= 255:
            raise GripperError(f"position must be an integer 0..255, got {position!r}")
        self._command(GripperMsg.MOVE, timeout, position=position,
                      **self._speed_force(speed, force))

    def calibrate(self, open_mm: float = 85.0, close_mm: float = 0.0,
                  timeout: float | None = None) -> None:
        """Tell the gripper its measured opening when fully open (``open_mm``) and fully
        closed (``close_mm``), so widths and position_mm are right (until then they read 0).

        Warning: calibrating MOVES THE FINGERS: the gripper opens fully, then closes fully,
        and stays closed, so whatever it holds is dropped. Needs an activated gripper."""
        if not open_mm > close_mm >= 0:
            raise GripperError(f"need open_mm > close_mm >= 0, got {open_mm}, {close_mm}")
        self._command(GripperMsg.CALIBRATE, CALIBRATE_TIMEOUT if timeout is None else timeout,
                      open_mm=float(open_mm), close_mm=float(close_mm))

    def stop(self) -> None:
        """Stop the fingers where they are. (The gripper finishes a running command first.)"""
        self._command(GripperMsg.STOP, None)

    # ---------------------------------------------------------------- internals
    def _speed_force(self, speed: int, force: int) -> dict[str, int]:
        for name, value in (("speed", speed), ("force", force)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise GripperError(f"{name} must be an integer 0..255, got {value!r}")
        self._limits.check_gripper_force(force)
        return {"speed": speed, "force": force}

    def _position_for_width(self, width: float) -> int:
        state = self._backend.state()
        if not state.get("is_calibrated"):
            raise GripperError("width= needs a calibrated gripper: call gripper.calibrate() "
                               "first, or use position= (0..255)")
        open_mm, close_mm = float(state["open_mm"]), float(state["close_mm"])
        mm = width * 1000.0
        if not close_mm <= mm <= open_mm:
            raise GripperError(f"width {width:.4f} m is outside the gripper's range "
                               f"{close_mm / 1000:.4f}..{open_mm / 1000:.4f} m")
        return round(255.0 * (open_mm - mm) / (open_mm - close_mm))

    def _command(self, msg_type: GripperMsg, timeout: float | None, **fields: Any) -> dict:
        with stop_on_interrupt(self._stop_quietly):
            return command(self._backend, msg_type, timeout, **fields)

    def _stop_quietly(self) -> None:
        self._backend.request(GripperMsg.STOP, timeout_s=1.0)


def command(backend: Backend, msg_type: GripperMsg, timeout: float | None = None,
            **fields: Any) -> dict:
    """Send one gripper command and judge it: GripperError when the server refused it, or
    when it says success for a move the state shows did not arrive (the real server's
    10 s timeout); the rewinder moves the gripper back through this too."""
    wait = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    reply = backend.request(msg_type, timeout_s=wait, **fields)
    if not reply.get("success"):
        raise GripperError(f"gripper {msg_type.name.lower()} failed: "
                           f"{reply.get('message') or reply.get('error') or reply}")
    # State is published at ~10 Hz: wait for a message sent after the command finished,
    # so sensors read right after this call see its outcome.
    state = backend.next_state(timeout_s=1.0)
    data = reply.get("data") or {}
    if msg_type in _MOVES and not data.get("object_detected"):
        state = _settled(backend, state)
    if msg_type in _MOVES and not data.get("object_detected") and state.get("is_moving"):
        raise GripperError(
            f"the gripper did not reach position {state.get('position_request')} within "
            f"{GRIPPER_MOVE_TIMEOUT_S:g} s: it is at {state.get('position')} and still "
            f"moving (something blocks the fingers?); the server answered "
            f"{reply.get('message')!r}")
    return reply


_MOVES = (GripperMsg.MOVE, GripperMsg.OPEN, GripperMsg.CLOSE)
SETTLE_STATES = 4     # states (~0.4 s at 10 Hz) a finished move may still be seen moving in


def _settled(backend: Backend, state: dict) -> dict:
    """The first state showing the fingers still, within SETTLE_STATES: a state sampled just
    before a move ended can arrive after its reply; a jammed move stays moving in them all."""
    for _ in range(SETTLE_STATES):
        if not state.get("is_moving"):
            break
        state = backend.next_state(timeout_s=1.0)
    return state
