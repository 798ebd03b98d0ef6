"""Simulated Franka Panda behind the franka_server protocol (docs/protocols.md, "Arm").

A 1 kHz loop integrates the joints within the Panda's position, velocity and acceleration
limits. Joint position, joint velocity, cartesian pose/impedance and cartesian velocity
targets arrive on the command stream (or REP); cartesian targets go through the same IK
the SDK ships. When the stream is silent for 100 ms the arm holds where it is.

A command that would break a joint limit is a reflex, and as on the real robot the server
then stops publishing its state (one last state says why, in ``last_error``) and refuses
everything but STOP until it is restarted: the real arm is recovered outside the protocol
(``franka_server.recover``, then a new server), here by restarting the simulated server
(the control socket's ``restart``, docs/protocols.md). The world's physics (world.py) makes
a collision of an arm link with the table, the floor or the robot's own base or mast such
a reflex too (``collide``), and feeds the contact forces on the hand and fingers into the
external wrench (``feel``). The state has the real server's fields; torques are not
modelled beyond the external ones (``tau_J`` = ``tau_ext_hat_filtered`` = Jᵀ·the external
wrench: contact plus injected; no gravity).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import zmq

from tidybot_sdk import kinematics as kin
from tidybot_sdk.protocol import (ARM_HOLD_AFTER_S, ARM_STREAM_TYPES, ArmMsg, ControlMode,
                                  ProtocolError, RobotMode, decode, parse_command)

from .motion import brake, track_position, track_velocity
from .server import BackendServer

_MOTION_MODES = {
    ArmMsg.JOINT_POSITION: (ControlMode.JOINT_POSITION,),
    ArmMsg.JOINT_VELOCITY: (ControlMode.JOINT_VELOCITY,),
    ArmMsg.CARTESIAN_POSE: (ControlMode.CARTESIAN_POSE, ControlMode.CARTESIAN_IMPEDANCE),
    ArmMsg.CARTESIAN_VELOCITY: (ControlMode.CARTESIAN_VELOCITY,),
}


class SimArm(BackendServer):
    name = "arm"
    msg_types = ArmMsg

    def __init__(self, cmd_addr: str, state_addr: str, stream_addr: str, *,
                 state_rate_hz: float = 100.0, q0=kin.HOME_Q) -> None:
        super().__init__(cmd_addr, state_addr, state_rate_hz=state_rate_hz, tick_hz=1000.0)
        self.stream_addr = stream_addr
        self.q = np.array(q0, dtype=float)
        self.dq = np.zeros(7)
        self.q_target = self.q.copy()
        self.dq_target = np.zeros(7)
        self.twist = np.zeros(6)
        self.mode = ControlMode.IDLE
        self.last_command = 0.0           # monotonic time of the last motion command
        self.holding = True               # holding the current pose (idle, stopped or silent)
        self.reflex = ""                  # why the arm is in reflex; "" when it is not
        self._reflex_told = False         # the one state after a reflex has been published
        self._started = time.monotonic()  # robot_time: the robot's own clock (not reset by a restart)
        self.wrench = np.zeros(6)         # injected external wrench (tests, control socket)
        self.contact_wrench = np.zeros(6)  # the world's contact forces on the hand and fingers
        self.gains: dict[str, list[float]] = {}
        self._kinematics_key = b""
        self._kinematics_now: tuple[list[float], np.ndarray, list[float]] = ([], np.zeros(0), [])

    # ----------------------------------------------------------------- commands
    def open_extra_sockets(self) -> list[zmq.Socket]:
        return [self._bind(zmq.SUB, self.stream_addr, CONFLATE=1, SUBSCRIBE=b"")]

    def on_extra_message(self, sock: zmq.Socket, data: bytes) -> None:
        try:
            msg_type, fields = parse_command(decode(data), ArmMsg)
        except ProtocolError:
            self.received["invalid_stream"] += 1
            return
        self.received["stream_" + msg_type.name] += 1
        if msg_type in ARM_STREAM_TYPES:
            with self.lock:
                self._motion(msg_type, fields)

    def start(self) -> None:
        """A (re)started arm server: a reflex is over, the arm idles where it is."""
        with self.lock:
            self.reflex, self._reflex_told = "", False
            self._hold(ControlMode.IDLE)
        super().start()

    def publishing(self) -> bool:
        """After a reflex only one more state goes out (it carries ``last_error``)."""
        if not self.reflex:
            return True
        told, self._reflex_told = self._reflex_told, True
        return not told

    def handle(self, msg_type: ArmMsg, fields: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self.reflex and msg_type == ArmMsg.GET_STATE:
                raise ProtocolError(self._reflex_text())
            if msg_type == ArmMsg.GET_STATE:
                return self.state()
            ok = True
            if msg_type in ARM_STREAM_TYPES:
                ok = self._motion(msg_type, fields)
            elif msg_type == ArmMsg.SET_CONTROL_MODE:
                self._set_mode(fields["control_mode"])
            elif msg_type == ArmMsg.SET_GAINS:
                self.gains.update(fields)
            elif msg_type == ArmMsg.STOP:
                self._hold(ControlMode.IDLE)
            return {"msg_type": int(msg_type), "success": ok}

    def _reflex_text(self) -> str:
        return f"arm is in reflex ({self.reflex}); the arm server must be restarted"

    def _set_mode(self, mode: int) -> None:
        try:
            mode = ControlMode(mode)
        except ValueError:
            raise ProtocolError(f"unknown control_mode {mode}") from None
        if mode == ControlMode.TORQUE:
            raise ProtocolError("torque control (mode 3) is not simulated")
        if self.reflex:
            raise ProtocolError(self._reflex_text())
        self._hold(mode)

    def _hold(self, mode: ControlMode) -> None:
        """Switch mode and hold, until a new target arrives, the pose where the arm comes to
        rest braking at its full deceleration (``step`` brakes, only ever slower): a real
        arm's stop brakes along its path. (A hold of the pose at this instant would be
        passed and then driven back to, a reversal no real arm makes.)"""
        self.mode = mode
        self.holding = True
        self.q_target = np.clip(self.q + self.dq * np.abs(self.dq) / (2.0 * kin.DDQ_MAX),
                                kin.Q_MIN, kin.Q_MAX)
        self.dq_target = np.zeros(7)
        self.twist = np.zeros(6)

    def _motion(self, msg_type: ArmMsg, fields: dict[str, Any]) -> bool:
        """Apply a motion target; False when the current mode ignores it."""
        if self.reflex or self.mode not in _MOTION_MODES[msg_type]:
            self.received["ignored"] += 1
            return False
        if msg_type == ArmMsg.JOINT_POSITION:
            q = np.array(fields["q"])
            if np.any(q < kin.Q_MIN) or np.any(q > kin.Q_MAX):
                return self._enter_reflex("joint position limit violation in the commanded target")
            self.q_target = q
        elif msg_type == ArmMsg.JOINT_VELOCITY:
            dq = np.array(fields["dq"])
            if np.any(np.abs(dq) > kin.DQ_MAX):
                return self._enter_reflex("joint velocity limit violation in the commanded target")
            self.dq_target = dq
        elif msg_type == ArmMsg.CARTESIAN_POSE:
            q = kin.ik(kin.matrix_from_column_major(fields["pose"]), self.q_target, restarts=0)
            if q is None:
                return self._enter_reflex("cartesian target out of reach")
            self.q_target = q
        else:
            self.twist = np.array(fields["twist"])
        self.holding = False
        self.last_command = time.monotonic()
        return True

    # ------------------------------------------------------------------ the world
    def in_reflex(self) -> bool:
        with self.lock:
            return bool(self.reflex)

    def collide(self, why: str, q: np.ndarray) -> bool:
        """A collision (world.py) where the joints were ``q``: the arm stops there in a
        reflex, unless it is in one already; True if it entered it."""
        with self.lock:
            if self.reflex:
                return False
            self.q = np.array(q, dtype=float)
            self._enter_reflex(why)
            return True

    def feel(self, wrench: np.ndarray) -> None:
        """The contact wrench on the hand and fingers (arm base frame, about the EE)."""
        with self.lock:
            self.contact_wrench = wrench

    def _enter_reflex(self, why: str) -> bool:
        self.reflex = why
        self.dq[:] = 0.0
        self._hold(self.mode)
        return False

    # ------------------------------------------------------------------- physics
    def step(self, dt: float) -> None:
        if dt <= 0.0:
            return
        if not self.holding and time.monotonic() - self.last_command > ARM_HOLD_AFTER_S:
            self._hold(self.mode)        # stream went silent: hold where we are
        if self.reflex:
            return
        if self.mode == ControlMode.JOINT_VELOCITY and not self.holding:
            target = self.dq_target
        elif self.mode == ControlMode.CARTESIAN_VELOCITY and not self.holding:
            J = kin.jacobian(self.q)
            target = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), self.twist)
        else:
            if self.holding and self.dq.any():     # a stop: brake to rest, then hold there
                self.q, self.dq = brake(self.q, self.dq, kin.DDQ_MAX, dt)
                if not self.dq.any():
                    self.q_target = self.q.copy()
                return
            if not self.dq.any() and np.array_equal(self.q, self.q_target):
                return                   # at rest on the target (the idle arm's 1 kHz tick)
            self.q, self.dq = track_position(self.q, self.dq, self.q_target, kin.DQ_MAX,
                                             kin.DDQ_MAX, dt)
            return
        q, dq = track_velocity(self.q, self.dq, np.clip(target, -kin.DQ_MAX, kin.DQ_MAX),
                               kin.DDQ_MAX, dt)
        if np.any(q < kin.Q_MIN) or np.any(q > kin.Q_MAX):
            self._enter_reflex("joint position limit reached while moving")
            return
        self.q, self.dq = q, dq

    def _kinematics(self) -> tuple[list[float], np.ndarray, list[float]]:
        """O_T_EE, the Jacobian and O_T_EE_d, computed again only when the joints or the
        target changed (most of a state's cost, published at 100 Hz by a resting arm)."""
        key = self.q.tobytes() + self.q_target.tobytes()
        if key != self._kinematics_key:
            self._kinematics_key = key
            self._kinematics_now = (kin.column_major(kin.fk(self.q)), kin.jacobian(self.q),
                                    kin.column_major(kin.fk(self.q_target)))
        return self._kinematics_now

    def resting(self) -> bool:
        return self.holding and not self.dq.any() and np.array_equal(self.q, self.q_target)

    def state(self) -> dict[str, Any]:
        moving = bool(np.max(np.abs(self.dq)) > 1e-4)
        pose, jacobian, target_pose = self._kinematics()
        external = self.wrench + self.contact_wrench
        wrench, tau_ext = external.tolist(), (jacobian.T @ external).tolist()
        return {
            "q": self.q.tolist(), "dq": self.dq.tolist(),
            "q_d": self.q_target.tolist(), "dq_d": self.dq_target.tolist(),
            "O_T_EE": pose, "O_T_EE_d": target_pose,
            "O_F_ext_hat_K": wrench, "K_F_ext_hat_K": wrench,
            "tau_J": tau_ext, "tau_ext_hat_filtered": tau_ext,
            # libfranka's elbow: joint 3's angle and the flip of joint 4 (always negative here)
            "elbow": [float(self.q[2]), -1.0 if self.q[3] < 0 else 1.0],
            "control_mode": int(self.mode),
            "robot_mode": int(RobotMode.REFLEX if self.reflex else
                              RobotMode.MOVE if moving or not self.holding else RobotMode.IDLE),
            "auto_hold_active": self.holding and self.mode != ControlMode.IDLE,
            "q_target": self.q_target.tolist(), "pose_target": target_pose,
            "last_error": self.reflex,
            "robot_time": time.monotonic() - self._started,
            "timestamp": time.time(),
        }
