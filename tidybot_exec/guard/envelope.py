"""The envelope: the limits, enforced on every command of the code (pure: no sockets).

What is checked (``Envelope.admit``):

* arm targets: joint limits, the end-effector workspace box (FK of joint targets, the pose
  of cartesian targets), and speed — successive targets may move no faster than the caps
  (``SpeedGate``: a rate limit on the commanded path with a small burst, reset to the
  measured state when a stream starts) — and what is forwarded is *shaped* to the caps
  (``Shaper``), so the measured motion keeps to them; velocity commands within the caps
  and, held for the backend's 100 ms hold-off, inside the limits; torque mode is refused;
* arm keep-out (tidybot_sdk.collision.KeepOut): the arm's collision geometry at what is
  forwarded (a joint target as shaped; a cartesian target's joint angles, followed from the
  last target's by IK; where a velocity takes the arm within the hold-off) stays
  ``keep_out_margin_m`` away from the floor, the robot's base and mast and the ``keep_out``
  boxes, placed where the base measures itself now; a body the arm is already closer to
  than that it may only move away from;
* base: the workspace box for pose targets and for a velocity held for the 250 ms
  watchdog, and the speed caps; pose targets are shaped to the caps like the arm's;
* gripper: the force cap (a command without ``force`` gets the backend's default, 255).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import numpy as np

from tidybot_sdk import collision
from tidybot_sdk import kinematics as kin
from tidybot_sdk import protocol as proto
from tidybot_sdk.errors import BackendUnavailable, SafetyError
from tidybot_sdk.limits import SafetyLimits
from tidybot_sdk.protocol import ArmMsg, BaseMsg, ControlMode, GripperMsg, ProtocolError

State = Callable[[], "dict[str, Any] | None"]
BURST_S = 0.03                  # motion a target may get ahead of the speed cap, in seconds
# A tick that comes this late may make up for the time. The relay reads the newest target
# only (it conflates), so a guard thread not scheduled for a while (a busy machine: 0.14 s
# seen in CI) reads an honest stream that far ahead; refused, every later target would be
# as far from the last one admitted, the motion would never arrive and the run would fail
# for the guard's own stall. The gate is not what bounds the arm's speed — the Shaper keeps
# every forwarded target within the caps of the last one — so its credit covers such stalls.
CREDIT_S = 0.25
# A stream that resumes after a silence longer than the hold-off — the guard's own thread
# not scheduled for longer than CREDIT_S (0.3 s seen in CI), or code that paused — is judged
# from the measured state with credit for the silence, up to this long: what the arm is sent
# is still shaped from where it is, one step per target.
RESUME_CREDIT_S = 1.0
FIRST_STEP_S = 0.02             # a motion's first target moves at most this long at the cap
MAX_STEP_S = 0.04               # a late target makes up for at most this long at the cap
# The base is commanded at the SDK's 10 Hz and accelerates slowly (0.25 m/s^2): a target
# may carry up to two periods of motion at the cap; silence past its watchdog starts anew.
BASE_FIRST_STEP_S = 0.1
BASE_MAX_STEP_S = 0.2


class MissingState(BackendUnavailable):
    """A check needs the state of ``part`` and none is fresh."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


class SpeedGate:
    """Successive targets may move no faster than ``cap``: a rate limit on the commanded
    path (GCRA), so a sustained or sudden excess is refused while a 50 Hz tick that comes
    up to CREDIT_S late with the step for the time it missed (the SDK's absolute schedule)
    passes. The largest single jump is (CREDIT_S + BURST_S) of motion at the cap. The
    stream relay conflates (as the backend does), so ticks bunched by a busy machine are
    judged as one step over their real time. A stream that pauses longer than the
    backend's hold-off starts again from the measured state, with credit for the silence
    (at most RESUME_CREDIT_S): a guard thread not scheduled for a while reads the stream
    that far ahead, and code that was not scheduled sends the target it computed before,
    then the next at once (the Shaper still moves the arm from rest at most FIRST_STEP_S)."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._ref: np.ndarray | None = None
        self._tat = 0.0             # when the reference would be reached at the cap
        self._last = -math.inf

    def reset(self) -> None:
        """Another kind of motion moved the arm: start again from the measured state."""
        self._ref, self._last = None, -math.inf

    def admit(self, target: np.ndarray, measured: Callable[[], np.ndarray], now: float,
              distance: Callable[[np.ndarray, np.ndarray], float],
              commit: bool = True) -> tuple[float, float] | None:
        """None when admitted (remembered only with ``commit``), else (the step, the most
        the cap allows now)."""
        silent = now - self._last                     # inf: a new motion
        if self._ref is None or silent > proto.ARM_HOLD_AFTER_S:
            credit = CREDIT_S if math.isinf(silent) else min(max(silent, CREDIT_S),
                                                            RESUME_CREDIT_S)
            self._ref, self._tat = measured(), now - credit
            start = self._tat
        else:
            start = max(self._tat, now - CREDIT_S)
        step = distance(target, self._ref)
        if start + step / self.cap > now + BURST_S:
            return step, max(0.0, (now + BURST_S - start) * self.cap)
        if commit:
            self._ref, self._tat, self._last = target, start + step / self.cap, now
        return None


def _joint_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def _translation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]))


def _rotation(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
    return float(math.acos(max(-1.0, min(1.0, cos))))


def _joint_fraction(caps: tuple[float, ...], dt: float, a: np.ndarray, b: np.ndarray) -> float:
    step = _joint_distance(a, b)
    return 1.0 if step <= caps[0] * dt else caps[0] * dt / step


def _joint_blend(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    return a + f * (b - a)


def _pose_fraction(caps: tuple[float, ...], dt: float, a: np.ndarray, b: np.ndarray) -> float:
    f = 1.0
    for cap, step in zip(caps, (_translation(a, b), _rotation(a, b))):
        if step > cap * dt:
            f = min(f, cap * dt / step)
    return f


def _base_fraction(caps: tuple[float, ...], dt: float, a: np.ndarray, b: np.ndarray) -> float:
    f = 1.0
    for cap, step in zip(caps, (float(np.hypot(*(b[:2] - a[:2]))), abs(kin.wrap_angle(b[2] - a[2])))):
        if step > cap * dt:
            f = min(f, cap * dt / step)
    return f


def _base_blend(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    return np.array([a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]),
                     kin.wrap_angle(a[2] + f * kin.wrap_angle(b[2] - a[2]))])


def _turn(rotation: np.ndarray) -> np.ndarray:
    """The rotation matrix of axis-angle vector ``rotation``."""
    angle = float(np.linalg.norm(rotation))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = rotation / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _pose_blend(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    """``f`` of the way from pose ``a`` to ``b``: straight in position, about one axis in
    orientation (the relative rotation's, scaled)."""
    out = a.copy()
    out[:3, 3] = a[:3, 3] + f * (b[:3, 3] - a[:3, 3])
    relative = a[:3, :3].T @ b[:3, :3]
    angle = _rotation(a, b)
    if angle > 1e-9:
        axis = np.array([relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0],
                         relative[1, 0] - relative[0, 1]])
        norm = np.linalg.norm(axis)
        if norm > 1e-12:
            out[:3, :3] = a[:3, :3] @ _turn(axis * (f * angle / norm))
        elif f >= 1.0:                  # a half turn: no unique axis; only all of it
            out[:3, :3] = b[:3, :3]
    return out


class Shaper:
    """What is forwarded to the arm moves no faster than the caps on the guard's own clock.

    The gate refuses targets far off the cap; within what it admits (its burst and the
    credit for a late tick) a target may still jump ahead, and the arm would catch up at
    its hardware speed. So each target forwarded is the last one forwarded moved toward
    the code's target by at most cap × the time since (at most MAX_STEP_S; FIRST_STEP_S
    for a motion's first target, from the measured state): the *measured* motion keeps to
    the cap whatever the code streams — bursts, bunched ticks, jumps — and what is cut off
    follows with the next targets (the SDK repeats its final target until the arm is there).
    """

    def __init__(self, caps: tuple[float, ...], fraction, blend, first_step_s: float = FIRST_STEP_S,
                 max_step_s: float = MAX_STEP_S, hold_off_s: float = proto.ARM_HOLD_AFTER_S) -> None:
        self._caps, self._fraction, self._blend = caps, fraction, blend
        self._first, self._max, self._hold_off = first_step_s, max_step_s, hold_off_s
        self._sent: np.ndarray | None = None
        self._at = -math.inf

    def reset(self) -> None:
        self._sent = None

    def toward(self, target: np.ndarray, now: float, measured: Callable[[], np.ndarray],
               commit: bool = True) -> np.ndarray:
        """What to forward for ``target`` now (remembered as forwarded only with ``commit``)."""
        if self._sent is None or now - self._at > self._hold_off:
            sent, dt = measured(), self._first
        else:
            sent, dt = self._sent, min(max(0.0, now - self._at), self._max)
        f = self._fraction(self._caps, dt, sent, target)
        shaped = target if f >= 1.0 else self._blend(sent, target, f)
        if commit:
            self._sent, self._at = shaped, now
        return shaped


class Envelope:
    """The limits, enforced on every message, with the state the checks need; ``admit``
    also returns the message to forward (motion targets shaped to the caps, ``Shaper``)."""

    def __init__(self, limits: SafetyLimits, arm_state: State, base_state: State,
                 clock: Callable[[], float] = time.monotonic,
                 kept_out: collision.KeepOut = collision.KeepOut()) -> None:
        self.limits, self._arm_state, self._base_state, self._clock = limits, arm_state, base_state, clock
        self.kept_out = kept_out
        # the joint angles (and their frames) of the last arm target forwarded, and when: a
        # cartesian target's IK starts from them (from the measured ones after the hold-off)
        self._q_sent: tuple[np.ndarray, list[np.ndarray]] | None = None
        self._q_sent_at = -math.inf
        self._joints = SpeedGate(limits.joint_speed)
        self._translation = SpeedGate(limits.cartesian_speed)
        self._rotation = SpeedGate(limits.cartesian_angular_speed)
        self._joint_shaper = Shaper((limits.joint_speed,), _joint_fraction, _joint_blend)
        self._pose_shaper = Shaper((limits.cartesian_speed, limits.cartesian_angular_speed),
                                   _pose_fraction, _pose_blend)
        self._base_shaper = Shaper((limits.base_speed, limits.base_angular_speed), _base_fraction,
                                   _base_blend, BASE_FIRST_STEP_S, BASE_MAX_STEP_S,
                                   proto.BASE_WATCHDOG_S)
        joint, cartesian = (self._joints, self._joint_shaper), (
            self._translation, self._rotation, self._pose_shaper)
        every = (*joint, *cartesian)
        self._reset_by = {ArmMsg.JOINT_POSITION: cartesian, ArmMsg.CARTESIAN_POSE: joint,
                          ArmMsg.JOINT_VELOCITY: every, ArmMsg.CARTESIAN_VELOCITY: every,
                          ArmMsg.STOP: every, ArmMsg.SET_CONTROL_MODE: every}
        self._lock = threading.Lock()

    def check(self, backend: str, msg: dict[str, Any]) -> str | None:
        """Why ``msg`` must not reach ``backend`` (None when it may)."""
        return self.admit(backend, msg)[0]

    def admit(self, backend: str, msg: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """(why ``msg`` must not reach ``backend`` or None, the message to forward)."""
        try:
            with self._lock:
                return None, getattr(self, f"_{backend}")(msg) or msg
        except SafetyError as exc:
            return str(exc), msg
        except ProtocolError as exc:
            return f"invalid {backend} command: {exc}", msg
        except MissingState as exc:
            return f"cannot check the command without the {exc.part}'s state: {exc}", msg

    # ------------------------------------------------------------------ arm
    def _measured(self) -> dict[str, Any]:
        state = self._arm_state()
        if state is None:
            raise MissingState("arm", "no fresh arm state")
        return state

    def _measured_q(self) -> np.ndarray:
        return np.asarray(self._measured()["q"], dtype=float)

    def _ee_position(self) -> np.ndarray:
        """The measured end-effector position (O_T_EE is column-major: its translation is
        elements 12..14)."""
        return np.asarray(self._measured()["O_T_EE"], dtype=float)[12:15]

    def _check_ee(self, p: np.ndarray, what: str = "end-effector target") -> None:
        """The workspace box for ``p``; outside it, ``p`` may still lead back in from where
        the arm is (the measured state is read only then)."""
        try:
            self.limits.check_ee_position(p, what)
        except SafetyError:
            self.limits.check_ee_position(p, what, now=self._ee_position())

    def _arm(self, original: dict[str, Any]) -> dict[str, Any] | None:
        """Raises when refused; returns the shaped message for a motion target."""
        kind, msg = proto.parse_command(original, ArmMsg)
        lim, now = self.limits, self._clock()
        for state in self._reset_by.get(kind, ()):
            state.reset()
        if kind == ArmMsg.JOINT_POSITION:
            q = np.asarray(msg["q"], dtype=float)
            lim.check_joints(q)
            frames = kin.frames(q)
            self._check_ee(frames[-1][:3, 3])
            refused = self._joints.admit(q, self._measured_q, now, _joint_distance, commit=False)
            if refused is not None:
                raise SafetyError(f"joint target {refused[0]:.3f} rad from the last one, more "
                                  f"than the {refused[1]:.3f} rad the joint speed cap "
                                  f"{lim.joint_speed:g} rad/s allows now")
            shaped = self._joint_shaper.toward(q, now, self._measured_q, commit=False)
            if shaped is not q:
                frames = kin.frames(shaped)
            self._check_keep_out(frames, "joint target")     # what the arm is sent
            self._joints.admit(q, self._measured_q, now, _joint_distance)
            self._joint_shaper.toward(q, now, self._measured_q)
            self._q_sent, self._q_sent_at = (shaped, frames), now
            return {**original, "q": shaped.tolist()}
        elif kind == ArmMsg.JOINT_VELOCITY:
            dq = np.asarray(msg["dq"], dtype=float)
            if np.max(np.abs(dq)) > lim.joint_speed + 1e-9:
                raise SafetyError(f"joint velocity {np.max(np.abs(dq)):.2f} rad/s is above the "
                                  f"joint speed cap {lim.joint_speed:g} rad/s")
            here = self._measured_q()
            ahead = here + dq * proto.ARM_HOLD_AFTER_S
            lim.check_joints(ahead, "velocity would take it to")
            frames = kin.frames(ahead)
            self._check_ee(frames[-1][:3, 3], "velocity would take the end effector to")
            # the whole way it may go: the hold-off at dq, then braking at the hardware's rate
            # (a thin box between here and ``ahead`` would be passed over by its end alone)
            stop = ahead + dq * np.abs(dq) / (2.0 * kin.DDQ_MAX)
            self._check_keep_out_path(here, stop, "joint velocity")
        elif kind == ArmMsg.CARTESIAN_POSE:
            pose = np.asarray(msg["pose"], dtype=float).reshape(4, 4).T     # column-major
            self._check_ee(pose[:3, 3])
            measured = lambda: np.asarray(self._measured()["O_T_EE"], dtype=float).reshape(4, 4).T  # noqa: E731
            gates = ((self._translation, _translation, "m", lim.cartesian_speed),
                     (self._rotation, _rotation, "rad", lim.cartesian_angular_speed))
            for gate, distance, unit, cap in gates:          # both must admit, then both move on
                refused = gate.admit(pose, measured, now, distance, commit=False)
                if refused is not None:
                    raise SafetyError(
                        f"end-effector target {refused[0]:.3f} {unit} from the last one, more "
                        f"than the {refused[1]:.3f} {unit} the cap {cap:g} {unit}/s allows now")
            shaped = self._pose_shaper.toward(pose, now, measured, commit=False)
            seed = self._q_sent if now - self._q_sent_at <= proto.ARM_HOLD_AFTER_S else None
            followed = self._check_pose(shaped, seed, "end-effector target")
            for gate, distance, _, _ in gates:
                gate.admit(pose, measured, now, distance)
            self._pose_shaper.toward(pose, now, measured)
            self._q_sent, self._q_sent_at = followed, now
            return {**original, "pose": kin.column_major(shaped)}
        elif kind == ArmMsg.CARTESIAN_VELOCITY:
            v, w = np.asarray(msg["twist"][:3], dtype=float), np.asarray(msg["twist"][3:], dtype=float)
            lim.check_cartesian_speed(float(np.linalg.norm(v)), float(np.linalg.norm(w)),
                                      proto.ARM_HOLD_AFTER_S)
            here = np.asarray(self._measured()["O_T_EE"], dtype=float).reshape(4, 4).T
            ee = here[:3, 3]
            lim.check_ee_position(ee + v * proto.ARM_HOLD_AFTER_S,
                                  "velocity would take the end effector to", now=ee)
            ahead = here.copy()
            ahead[:3, 3] += v * proto.ARM_HOLD_AFTER_S
            ahead[:3, :3] = _turn(w * proto.ARM_HOLD_AFTER_S) @ here[:3, :3]
            self._check_pose(ahead, None, "cartesian velocity")
        elif kind == ArmMsg.SET_CONTROL_MODE and msg["control_mode"] == ControlMode.TORQUE:
            raise SafetyError("torque control bypasses every limit and is not available to "
                              "submitted code; use joint or cartesian moves")

    def _check_keep_out(self, frames: list[np.ndarray], what: str) -> None:
        """The keep-out rule for the arm at ``frames`` (kinematics.frames), the boxes placed
        where the base measures itself now (its state is read only when there are boxes)."""
        scene = self.kept_out.scene(self._base_pose() if self.kept_out.boxes else None)
        breach = self.kept_out.check(scene, frames, self._measured_q)
        if breach is not None:
            raise SafetyError(f"{what} {breach}")

    def _check_keep_out_path(self, here: np.ndarray, there: np.ndarray, what: str) -> None:
        """The keep-out rule along the straight joint-space way from ``here`` (where the arm
        is) to ``there``, finely enough that no point of the arm moves a centimetre unchecked."""
        scene = self.kept_out.scene(self._base_pose() if self.kept_out.boxes else None)
        found = self.kept_out.check_path(scene, lambda s, _: here + s * (there - here), (0.0, 1.0))
        if found is not None:
            raise SafetyError(f"{what} {found[1]}")

    def _check_pose(self, pose: np.ndarray, seed: tuple[np.ndarray, list[np.ndarray]] | None,
                    what: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The keep-out rule for the end effector at ``pose``: its joint angles followed by
        IK from ``seed`` (joint angles and their frames; None: the measured ones), as the
        arm would reach it; returns them with their frames."""
        found = (collision.follow(pose, self._measured_q()) if seed is None
                 else collision.follow(pose, *seed))
        if found is None:
            raise SafetyError(f"{what} at {np.round(pose[:3, 3], 3).tolist()} m cannot be "
                              f"reached from where the arm is, so its clearance cannot be checked")
        self._check_keep_out(found[1], what)
        return found

    # ----------------------------------------------------------------- base
    def _base_pose(self) -> np.ndarray:
        state = self._base_state()
        if state is None:
            raise MissingState("base", "no fresh base state")
        return np.asarray(state["base_pose"], dtype=float)

    def _base(self, original: dict[str, Any]) -> dict[str, Any] | None:
        """Raises when refused; returns the shaped message for a pose target (the base's
        own controller is limited per axis, so a diagonal could exceed the cap)."""
        kind, msg = proto.parse_command(original, BaseMsg)
        if kind != BaseMsg.EXECUTE_ACTION:
            self._base_shaper.reset()
        if kind == BaseMsg.EXECUTE_ACTION:
            target = np.asarray(msg["base_pose"], dtype=float)
            self.limits.check_base_position(*target[:2])
            shaped = self._base_shaper.toward(target, self._clock(), self._base_pose)
            return {**original, "base_pose": shaped.tolist()}
        if kind == BaseMsg.SET_TARGET_VELOCITY:
            vx, vy, wz = msg["velocity"]
            self.limits.check_base_velocity(vx, vy, wz)
            x, y, theta = self._base_pose()
            if msg.get("frame", "global") == "local":
                vx, vy = (vx * math.cos(theta) - vy * math.sin(theta),
                          vx * math.sin(theta) + vy * math.cos(theta))
            self.limits.check_base_position(x + vx * proto.BASE_WATCHDOG_S,
                                            y + vy * proto.BASE_WATCHDOG_S)

    # -------------------------------------------------------------- gripper
    def _gripper(self, msg: dict[str, Any]) -> None:
        kind, msg = proto.parse_command(msg, GripperMsg)
        if kind in (GripperMsg.MOVE, GripperMsg.OPEN, GripperMsg.CLOSE):
            self.limits.check_gripper_force(int(msg.get("force", 255)))
