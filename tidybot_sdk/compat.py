"""The predecessor's raw backend objects, for scripts written against it.

The predecessor left ``franka_backend``, ``base_backend`` and ``gripper_backend`` in the
code's globals; scripts call them directly (``franka_backend.send_joint_position(q)``). Here
they are compatibility objects with the same calls, over the same connections as the SDK:
every command goes through the node's safety guard, and each is first checked against the
limits here so that a command outside them raises a SafetyError of its part (an ArmError
too, for ``franka_backend``) that says what to use instead — never a NameError, never a
silent jump. Deliberate differences (docs/sdk.md): a missing or stale state raises instead
of reading as ``{}`` or zeros, and commands that would restart a controller are refused.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import kinematics as kin
from .backend import Backend
from .errors import ArmError, ArmSafetyError, BaseSafetyError
from .gripper_api import DEFAULT_FORCE, GripperAPI
from .limits import SafetyLimits
from .protocol import ArmMsg, BaseMsg

if TYPE_CHECKING:
    from . import Robot

STREAM_PERIOD_S = 0.02        # the predecessor streamed targets at 50 Hz


class FrankaBackendCompat:
    """``franka_backend``: raw arm commands, each checked, then sent through the guard."""

    def __init__(self, backend: Backend, limits: SafetyLimits) -> None:
        self._backend, self._limits = backend, limits

    def get_state(self) -> dict[str, Any]:
        s = self._backend.state()
        return {"q": list(s["q"]), "dq": list(s["dq"]), "ee_pose": list(s["O_T_EE"]),
                "ee_wrench": list(s["O_F_ext_hat_K"]), "control_mode": s["control_mode"]}

    def set_control_mode(self, mode: int) -> bool:
        return bool(self._backend.request(ArmMsg.SET_CONTROL_MODE,
                                          control_mode=int(mode)).get("success", True))

    def set_gains(self, **gains: Sequence[float]) -> bool:
        fields = {k: [float(v) for v in values] for k, values in gains.items()}
        return bool(self._backend.request(ArmMsg.SET_GAINS, **fields).get("success", True))

    def emergency_stop(self) -> bool:
        return bool(self._backend.request(ArmMsg.STOP).get("success", True))

    def send_joint_position(self, q: Sequence[float], blocking: bool = False) -> bool:
        target = _vector(q, 7, "send_joint_position: q")
        self._limits.check_joints(target)
        step = float(np.max(np.abs(target - np.asarray(self._backend.state()["q"]))))
        self._check_step("send_joint_position", step / STREAM_PERIOD_S, self._limits.joint_speed,
                         "rad", "arm.move_joints(q)")
        self._backend.stream().send({"msg_type": int(ArmMsg.JOINT_POSITION),
                                     "q": target.tolist()})
        return True

    def send_cartesian_pose(self, pose: Sequence[float], blocking: bool = False) -> bool:
        target = _vector(pose, 16, "send_cartesian_pose: pose")
        position = target[12:15]
        self._limits.check_ee_position(position)
        now = kin.matrix_from_column_major(self._backend.state()["O_T_EE"])
        step = float(np.linalg.norm(position - now[:3, 3]))
        self._check_step("send_cartesian_pose", step / STREAM_PERIOD_S,
                         self._limits.cartesian_speed, "m", "arm.move_to_pose(x, y, z, ...)")
        self._backend.stream().send({"msg_type": int(ArmMsg.CARTESIAN_POSE),
                                     "pose": target.tolist()})
        return True

    def send_joint_velocity(self, dq: Sequence[float], blocking: bool = True) -> bool:
        velocity = _vector(dq, 7, "send_joint_velocity: dq")
        self._limits.check_joint_speed(float(np.max(np.abs(velocity))), STREAM_PERIOD_S)
        self._backend.stream().send({"msg_type": int(ArmMsg.JOINT_VELOCITY),
                                     "dq": velocity.tolist()})
        return True

    def send_cartesian_velocity(self, twist: Sequence[float], blocking: bool = True) -> bool:
        v = _vector(twist, 6, "send_cartesian_velocity: twist")
        self._limits.check_cartesian_speed(float(np.linalg.norm(v[:3])),
                                           float(np.linalg.norm(v[3:])), STREAM_PERIOD_S)
        self._backend.stream().send({"msg_type": int(ArmMsg.CARTESIAN_VELOCITY),
                                     "twist": v.tolist()})
        return True

    @staticmethod
    def _check_step(call: str, speed: float, cap: float, unit: str, instead: str) -> None:
        if speed > cap + 1e-9:
            raise ArmSafetyError(
                f"franka_backend.{call}: this target is {speed * STREAM_PERIOD_S:.3f} {unit} "
                f"from where the arm is; sent as one streamed target that is {speed:.2f} "
                f"{unit}/s, above the cap {cap:g} {unit}/s. Use {instead} (interpolated within "
                f"the limits), or stream targets at most {cap * STREAM_PERIOD_S:.4f} {unit} "
                f"apart every {STREAM_PERIOD_S * 1000:.0f} ms")


class BaseBackendCompat:
    """``base_backend``: raw base commands, each checked, then sent through the guard."""

    def __init__(self, backend: Backend, limits: SafetyLimits) -> None:
        self._backend, self._limits = backend, limits

    def get_state(self) -> dict[str, Any]:
        s = self._backend.state()
        return {"base_pose": list(s["base_pose"]), "base_velocity": list(s["base_velocity"])}

    def ensure_initialized(self) -> bool:
        return True

    def execute_action(self, action: dict[str, Any]) -> None:
        x, y, theta = (float(v) for v in action["base_pose"])
        self._limits.check_base_position(x, y)
        self._backend.request(BaseMsg.EXECUTE_ACTION, base_pose=[x, y, theta])

    def set_target_velocity(self, velocity: Sequence[float], frame: str = "global") -> None:
        vx, vy, wz = (float(v) for v in velocity)
        self._limits.check_base_velocity(vx, vy, wz)
        self._backend.request(BaseMsg.SET_TARGET_VELOCITY, velocity=[vx, vy, wz], frame=frame)

    def stop(self) -> None:
        self._backend.request(BaseMsg.STOP)

    def reset(self) -> None:
        raise BaseSafetyError("base_backend.reset() restarts the base controller and moves the "
                              "odometry origin; submitted code may not. Use base.move_to_pose "
                              "or base.move_delta")


class GripperBackendCompat:
    """``gripper_backend``: the gripper client's calls, through the SDK's gripper (limits
    and waiting included; the default force is the SDK's, not the predecessor's 255)."""

    def __init__(self, backend: Backend, gripper: GripperAPI) -> None:
        self._backend, self._gripper = backend, gripper

    def get_state(self) -> dict[str, Any]:
        return dict(self._backend.state())

    def activate(self, reset_first: bool = True) -> bool:
        self._gripper.activate(reset_first=reset_first)
        return True

    def calibrate(self, open_mm: float = 85.0, close_mm: float = 0.0) -> bool:
        self._gripper.calibrate(open_mm, close_mm)
        return True

    def move(self, position: int, speed: int = 255, force: int = DEFAULT_FORCE) -> bool:
        self._gripper.move(position=position, speed=speed, force=force)
        return True

    def open(self, speed: int = 255, force: int = DEFAULT_FORCE) -> bool:
        self._gripper.open(speed=speed, force=force)
        return True

    def close(self, speed: int = 255, force: int = DEFAULT_FORCE) -> bool:
        self._gripper.close(speed=speed, force=force)
        return True

    def stop(self) -> bool:
        self._gripper.stop()
        return True


def _vector(values: Sequence[float], n: int, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise ArmError(f"{what} must be {n} finite numbers, got {list(values)!r}")
    return v


def predecessor_globals(robot: "Robot") -> dict[str, Any]:
    """What the predecessor put in the code's globals besides the SDK objects."""
    limits = robot.config.limits
    return {"franka_backend": FrankaBackendCompat(robot.backend("arm"), limits),
            "base_backend": BaseBackendCompat(robot.backend("base"), limits),
            "gripper_backend": GripperBackendCompat(robot.backend("gripper"), robot.gripper)}
