"""``arm``: the Franka Panda. Joint and cartesian moves streamed at 50 Hz, checked first.

Frames: positions are metres in the arm base frame (libfranka "O": x forward, y left, z up,
origin at the arm's base); orientations are roll/pitch/yaw in radians with
R = Rz(yaw) Ry(pitch) Rx(roll). Every move blocks until the arm has arrived and settled,
and raises before anything moves when the target breaks a safety limit, or when its path
would bring the arm (links, hand, open fingers) within ``keep_out_margin_m`` (default
1 cm) of a kept-out body: the floor, the robot's own base and camera mast, and the lab's
keep-out boxes such as a table, placed where the base measures itself now. An arm
already closer than that to a body may move away from it, never closer.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import collision
from . import kinematics as kin
from .backend import ARM_RECOVERY, Backend, in_reflex, reflex_reason, stop_on_interrupt
from .errors import ArmError, ArmSafetyError
from .limits import SafetyLimits, finite
from .protocol import ARM_HOLD_AFTER_S, ArmMsg, ControlMode
from .streaming import QUINTIC_PEAK, Pacer, quintic

STREAM_HZ = 50.0
JOINT_TOLERANCE = 0.005          # rad, per joint, to call a joint move done
POSITION_TOLERANCE = 0.005       # m, end-effector position
ORIENTATION_TOLERANCE = 0.02     # rad, end-effector orientation
SETTLED_SPEED = 0.02             # rad/s, every joint, to call the arm settled
MIN_DURATION = 0.5               # s, shortest automatic motion
CARTESIAN_GAINS = {"cartesian_stiffness": [375.0, 375.0, 375.0, 25.0, 25.0, 25.0],
                   "cartesian_damping": [38.7, 38.7, 38.7, 10.0, 10.0, 10.0]}


class ArmAPI:
    """The arm, as submitted code sees it (``from tidybot_sdk import arm``)."""

    MODE_IDLE = ControlMode.IDLE
    MODE_JOINT_POSITION = ControlMode.JOINT_POSITION
    MODE_JOINT_VELOCITY = ControlMode.JOINT_VELOCITY
    MODE_TORQUE = ControlMode.TORQUE
    MODE_CARTESIAN_POSE = ControlMode.CARTESIAN_POSE
    MODE_CARTESIAN_VELOCITY = ControlMode.CARTESIAN_VELOCITY
    MODE_CARTESIAN_IMPEDANCE = ControlMode.CARTESIAN_IMPEDANCE
    HOME_POSITION = [float(v) for v in kin.HOME_Q]

    def __init__(self, backend: Backend, limits: SafetyLimits,
                 kept_out: collision.KeepOut = collision.KeepOut(),
                 base: Backend | None = None) -> None:
        """``base``: where the base's pose is read to place ``kept_out``'s boxes (needed
        when there are any)."""
        if kept_out.boxes and base is None:
            raise ValueError("keep-out boxes are placed where the base measures itself: "
                             "the arm needs the base's backend")
        self._backend = backend
        self._limits = limits
        self._kept_out, self._base = kept_out, base
        self.last_stream_lateness: list[float] = []   # per-tick lateness of the last move (s)

    # ------------------------------------------------------------------ reading
    def get_state(self) -> dict[str, Any]:
        """Current arm state: ``q`` (7, rad), ``dq`` (7, rad/s), ``ee_pose`` (16, column-major
        O_T_EE, m), ``ee_wrench`` (fx fy fz N, tx ty tz N·m), ``control_mode``, ``robot_mode``.

        Raises BackendUnavailable when the arm backend is down or its state is stale.
        """
        s = self._backend.state()
        return {"q": list(s["q"]), "dq": list(s["dq"]), "ee_pose": list(s["O_T_EE"]),
                "ee_wrench": list(s["O_F_ext_hat_K"]), "control_mode": s["control_mode"],
                "robot_mode": s["robot_mode"]}

    # ------------------------------------------------------------------ moving
    def move_joints(self, q: Sequence[float], timeout: float | None = None,
                    duration: float | None = None) -> None:
        """Move to joint angles ``q`` (7 values, rad) along a smooth (quintic) joint path.

        ``duration`` (s): how long the motion takes; default: as fast as half the joint
        speed cap allows (at least 0.5 s). ``timeout`` (s, default 10): how long to wait
        for the arm to settle *after* the planned motion. Raises SafetyError (nothing
        moves) for a target outside the joint limits, a path leaving the workspace box or
        coming too close to a kept-out body ("... would hit table"), or a duration that
        needs more than the joint speed cap; ArmError if the arm does not get there.
        """
        self._joint_move(q, timeout, duration, "arm.move_joints")

    def go_home(self, timeout: float | None = None, duration: float | None = None) -> None:
        """Move to HOME_POSITION (joints, rad) as move_joints does."""
        self._joint_move(self.HOME_POSITION, timeout, duration, "arm.go_home")

    def move_to_pose(self, x: float | None = None, y: float | None = None, z: float | None = None,
                     roll: float | None = None, pitch: float | None = None,
                     yaw: float | None = None, timeout: float | None = None,
                     duration: float | None = None) -> None:
        """Move the end effector to a pose in the arm base frame (m, rad) in a straight line.

        Omitted coordinates keep their current value — also each omitted angle keeps the
        current roll, pitch or yaw. Done when position (5 mm) and orientation (0.02 rad)
        are reached and the arm has settled. ``duration``/``timeout`` as in move_joints;
        the default duration keeps to half the cartesian speed caps. Raises SafetyError for
        a target outside the workspace box or out of reach, or a path that comes too close
        to a kept-out body ("... would hit table"); ArmError if not reached.
        """
        current = self._ee_matrix()
        position = [current[i, 3] if v is None else v for i, v in enumerate((x, y, z))]
        rpy = [c if v is None else v for c, v in zip(kin.matrix_to_rpy(current[:3, :3]),
                                                      (roll, pitch, yaw))]
        target = np.eye(4)
        target[:3, 3] = finite(position, "position", 3, ArmError)
        target[:3, :3] = kin.rpy_to_matrix(*finite(rpy, "roll/pitch/yaw", 3, ArmError))
        self._cartesian_move(current, target, timeout, duration, "arm.move_to_pose")

    def move_delta(self, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0, droll: float = 0.0,
                   dpitch: float = 0.0, dyaw: float = 0.0, frame: str = "base",
                   timeout: float | None = None, duration: float | None = None) -> None:
        """Move the end effector relative to where it is (m, rad).

        ``frame="base"``: the translation is along the arm base axes and the rotation is
        about them (applied before the current orientation); ``frame="ee"``: both are in
        the end effector's own axes (e.g. ``dz`` moves along the gripper's approach axis).
        Same checks and errors as move_to_pose.
        """
        if frame not in ("base", "ee"):
            raise ArmError(f"frame must be 'base' or 'ee', got {frame!r}")
        current = self._ee_matrix()
        d = finite([dx, dy, dz, droll, dpitch, dyaw], "delta", 6, ArmError)
        rotation = kin.rpy_to_matrix(*d[3:])
        target = current.copy()
        if frame == "base":
            target[:3, 3] += d[:3]
            target[:3, :3] = rotation @ current[:3, :3]
        else:
            target[:3, 3] += current[:3, :3] @ d[:3]
            target[:3, :3] = current[:3, :3] @ rotation
        self._cartesian_move(current, target, timeout, duration, "arm.move_delta")

    def stop(self) -> None:
        """Stop now: the arm decelerates and holds its pose (control mode goes to idle)."""
        reply = self._backend.request(ArmMsg.STOP)
        if not reply.get("success"):
            raise ArmError(f"the arm did not accept stop: {reply.get('error', reply)}")

    # ---------------------------------------------------------------- internals
    def _ee_matrix(self) -> np.ndarray:
        return kin.matrix_from_column_major(self._backend.state()["O_T_EE"])

    @staticmethod
    def _duration(asked: float | None, natural: float) -> float:
        if asked is None:
            return max(MIN_DURATION, natural)
        if not math.isfinite(asked) or asked <= 0:
            raise ArmError(f"duration must be a positive number of seconds, got {asked!r}")
        return float(asked)

    def _joint_move(self, q: Sequence[float], timeout: float | None, duration: float | None,
                    call: str) -> None:
        target = finite(q, "q", 7, ArmError)
        self._limits.check_joints(target)
        start = np.array(self._backend.state()["q"])
        distance = float(np.max(np.abs(target - start)))
        duration = self._duration(duration, distance / (0.5 * self._limits.joint_speed))
        self._limits.check_joint_speed(QUINTIC_PEAK * distance / duration, duration)
        here = kin.fk(start)[:3, 3]
        for s in np.linspace(0.0, 1.0, 21):
            self._limits.check_ee_position(kin.fk(start + s * (target - start))[:3, 3],
                                           "end effector on the way", now=here)
        self._check_keep_out(call, lambda s, _: start + s * (target - start), duration)
        self._set_mode(ControlMode.JOINT_POSITION)

        def setpoint(s: float) -> dict[str, Any]:
            return {"msg_type": ArmMsg.JOINT_POSITION, "q": (start + s * (target - start)).tolist()}

        def arrived(state: dict[str, Any]) -> bool:
            return float(np.max(np.abs(np.array(state["q"]) - target))) < JOINT_TOLERANCE

        self._stream(setpoint, arrived, duration, timeout,
                     f"joint target {np.round(target, 3).tolist()}")

    def _cartesian_move(self, start: np.ndarray, target: np.ndarray, timeout: float | None,
                        duration: float | None, call: str) -> None:
        self._limits.check_ee_position(target[:3, 3], now=start[:3, 3])
        q_now = np.array(self._backend.state()["q"])
        if kin.ik(target, q_now) is None:
            raise ArmSafetyError(f"pose at {np.round(target[:3, 3], 3).tolist()} m is out of the "
                              f"arm's reach with that orientation; choose a closer pose")
        distance = float(np.linalg.norm(target[:3, 3] - start[:3, 3]))
        rot = kin.rotation_error(target[:3, :3], start[:3, :3])
        angle = float(np.linalg.norm(rot))
        duration = self._duration(duration, max(
            distance / (0.5 * self._limits.cartesian_speed),
            angle / (0.5 * self._limits.cartesian_angular_speed)))
        self._limits.check_cartesian_speed(QUINTIC_PEAK * distance / duration,
                                           QUINTIC_PEAK * angle / duration, duration)
        axis = rot / angle if angle > 1e-12 else np.zeros(3)

        def pose_at(s: float) -> np.ndarray:
            T = np.eye(4)
            T[:3, 3] = start[:3, 3] + s * (target[:3, 3] - start[:3, 3])
            T[:3, :3] = _axis_angle(axis, s * angle) @ start[:3, :3]
            return T

        def q_at(s: float, before: np.ndarray | None) -> np.ndarray:
            """Where the joints are on the straight path, following it from where they are."""
            if before is None:
                return q_now
            T = pose_at(s)
            found = collision.follow(T, before)
            if found is not None:
                return found[0]
            q = kin.ik(T, before)
            if q is None:
                raise ArmSafetyError(f"{call}: the straight path passes out of the arm's reach "
                                     f"at {np.round(T[:3, 3], 3).tolist()} m; go there in steps")
            return q

        self._check_keep_out(call, q_at, duration)
        self._set_mode(ControlMode.CARTESIAN_IMPEDANCE)
        self._backend.request(ArmMsg.SET_GAINS, **CARTESIAN_GAINS)

        def setpoint(s: float) -> dict[str, Any]:
            return {"msg_type": ArmMsg.CARTESIAN_POSE, "pose": kin.column_major(pose_at(s))}

        def arrived(state: dict[str, Any]) -> bool:
            err = kin.pose_error(target, kin.matrix_from_column_major(state["O_T_EE"]))
            return (np.linalg.norm(err[:3]) < POSITION_TOLERANCE
                    and np.linalg.norm(err[3:]) < ORIENTATION_TOLERANCE)

        self._stream(setpoint, arrived, duration, timeout,
                     f"pose at {np.round(target[:3, 3], 3).tolist()} m")

    def _check_keep_out(self, call: str, q_at, duration: float) -> None:
        """Refuse (ArmSafetyError, nothing moves) a path that breaks the keep-out rule.

        ``q_at(s, q_before)``: the joint angles at path parameter ``s`` (0..1). The path is
        checked at the stream's ticks at 50 Hz, and finer where a point of the arm would
        move more than collision.STEP_M between two; the kept-out boxes are placed where
        the base measures itself now (its state is needed only when there are boxes: a
        base that is down raises BaseUnavailable, as any missing state does)."""
        base_pose = self._base.state()["base_pose"] if self._kept_out.boxes else None
        ticks = np.arange(int(math.ceil(duration * STREAM_HZ))) / (duration * STREAM_HZ)
        found = self._kept_out.check_path(self._kept_out.scene(base_pose), q_at,
                                          [*map(quintic, ticks), 1.0])
        if found is not None:
            s, breach = found
            where = "target" if s == 1.0 else f"path, {s:.0%} of the way,"
            raise ArmSafetyError(f"{call}: the {where} {breach}")

    def _set_mode(self, mode: ControlMode) -> None:
        reply = self._backend.request(ArmMsg.SET_CONTROL_MODE, control_mode=int(mode))
        if not reply.get("success"):
            raise ArmError(f"the arm refused control mode {mode.name}: {reply.get('error', reply)}"
                           f"; if it is in reflex, {ARM_RECOVERY}")

    def _stream(self, setpoint, arrived, duration: float, timeout: float | None,
                what: str) -> None:
        """Stream setpoint(s) at 50 Hz for ``duration`` of motion time (a stall slows the
        path, see streaming), then hold the final one until the arm has arrived and
        settled, or ``timeout`` more seconds have passed."""
        settle_for = 10.0 if timeout is None else float(timeout)
        stream = self._backend.stream()
        pacer = Pacer(STREAM_HZ, restart_after=ARM_HOLD_AFTER_S)
        with stop_on_interrupt(self.stop):
            for _ in pacer.ticks():
                t = pacer.motion
                stream.send(setpoint(quintic(t / duration)))
                if t < duration:
                    continue
                state = self._backend.state()
                if in_reflex(state):
                    raise ArmError(f"the arm stopped in a reflex while moving to {what}: "
                                   f"{reflex_reason(state)}; {ARM_RECOVERY}")
                if arrived(state) and max(map(abs, state["dq"])) < SETTLED_SPEED:
                    break
                if t > duration + settle_for:
                    raise ArmError(f"the arm did not reach {what} within {settle_for:g}s after "
                                   f"the {duration:.2f}s motion; it holds where it is")
        self.last_stream_lateness = pacer.lateness


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of ``angle`` about unit ``axis`` (Rodrigues)."""
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
