"""``sensors``: read-only views of the arm, base and gripper state.

Every getter reads the newest state message; when a backend is down or its state is stale
it raises SensorUnavailable (a SensorError and a BackendUnavailable) — a reading is never
made up (no zeros for missing data).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import kinematics as kin
from .backend import Backend
from .errors import BackendUnavailable, SensorError, SensorUnavailable


class SensorAPI:
    """Sensors, as submitted code sees them (``from tidybot_sdk import sensors``)."""

    def __init__(self, arm: Backend, base: Backend, gripper: Backend) -> None:
        self._arm, self._base, self._gripper = arm, base, gripper

    @staticmethod
    def _read(backend: Backend) -> dict[str, Any]:
        try:
            return backend.state()
        except BackendUnavailable as exc:
            raise SensorUnavailable(str(exc)) from None

    # ---------------------------------------------------------------- arm
    def get_arm_joints(self) -> list[float]:
        """Joint angles q1..q7 in rad."""
        return list(self._read(self._arm)["q"])

    def get_arm_velocities(self) -> list[float]:
        """Joint velocities in rad/s."""
        return list(self._read(self._arm)["dq"])

    def get_ee_pose(self) -> list[float]:
        """End-effector pose O_T_EE as 16 floats, column-major (arm base frame, m)."""
        return list(self._read(self._arm)["O_T_EE"])

    def get_ee_matrix(self) -> np.ndarray:
        """End-effector pose as a 4x4 numpy matrix (arm base frame, m)."""
        return kin.matrix_from_column_major(self._read(self._arm)["O_T_EE"])

    def get_ee_position(self) -> tuple[float, float, float]:
        """End-effector position (x, y, z) in m, arm base frame."""
        pose = self._read(self._arm)["O_T_EE"]
        return float(pose[12]), float(pose[13]), float(pose[14])

    def get_ee_rpy(self) -> tuple[float, float, float]:
        """End-effector orientation (roll, pitch, yaw) in rad, R = Rz(yaw) Ry(pitch) Rx(roll)."""
        return kin.matrix_to_rpy(self.get_ee_matrix()[:3, :3])

    def get_ee_xyzrpy(self) -> tuple[float, ...]:
        """(x, y, z, roll, pitch, yaw) of the end effector in m and rad, from one reading."""
        T = self.get_ee_matrix()
        return (*(float(v) for v in T[:3, 3]), *kin.matrix_to_rpy(T[:3, :3]))

    def get_ee_wrench(self) -> list[float]:
        """Estimated external wrench [fx, fy, fz (N), tx, ty, tz (N·m)], arm base frame."""
        return list(self._read(self._arm)["O_F_ext_hat_K"])

    # --------------------------------------------------------------- base
    def get_base_pose(self) -> tuple[float, float, float]:
        """Base pose (x, y in m, theta in rad) in the odometry frame."""
        x, y, theta = self._read(self._base)["base_pose"]
        return float(x), float(y), float(theta)

    def get_base_velocity(self) -> tuple[float, float, float]:
        """Base velocity (vx, vy in m/s, wz in rad/s) in the odometry frame."""
        vx, vy, wz = self._read(self._base)["base_velocity"]
        return float(vx), float(vy), float(wz)

    # ------------------------------------------------------------ gripper
    def get_gripper_position(self) -> int:
        """Finger position byte: 0 open .. 255 closed."""
        return int(self._read(self._gripper)["position"])

    def get_gripper_width(self) -> float:
        """Opening between the fingers in m (from the calibration).

        Raises SensorError when the gripper is not calibrated."""
        state = self._read(self._gripper)
        if not state.get("is_calibrated"):
            raise SensorError("gripper width is unknown until gripper.calibrate() is called; "
                              "use sensors.get_gripper_position() (0..255) instead")
        return float(state["position_mm"]) / 1000.0

    def is_gripper_holding(self) -> bool:
        """True when the fingers stopped on an object."""
        return bool(self._read(self._gripper)["object_detected"])

    def get_all_state(self) -> dict[str, Any]:
        """``{"arm": ..., "base": ..., "gripper": ...}``: each part's newest state message."""
        return {"arm": dict(self._read(self._arm)), "base": dict(self._read(self._base)),
                "gripper": dict(self._read(self._gripper))}
