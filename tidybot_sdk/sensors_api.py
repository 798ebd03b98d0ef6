"""``sensors``: read-only views of the arm, base and gripper state, and the cameras.

Every getter reads the newest state message; when a backend is down or its state is stale
it raises SensorUnavailable (a SensorError and a BackendUnavailable) — a reading is never
made up (no zeros for missing data). Camera frames come from the node through the code's
guard (the sandbox has no network), never older than the node's staleness limit, within
a per-execution byte budget.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import kinematics as kin
from .backend import Backend
from .errors import BackendUnavailable, SensorError, SensorUnavailable
from .node_channel import NodeChannel
from .protocol import NodeMsg

CAMERA_TIMEOUT_S = 10.0          # the node waits a few seconds for a fresh frame itself


class SensorAPI:
    """Sensors, as submitted code sees them (``from tidybot_sdk import sensors``)."""

    def __init__(self, arm: Backend, base: Backend, gripper: Backend,
                 node: NodeChannel | None = None) -> None:
        self._arm, self._base, self._gripper = arm, base, gripper
        self._node = node or NodeChannel("")

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

    # ------------------------------------------------------------ cameras
    def list_cameras(self) -> list[str]:
        """The names of the robot's cameras (e.g. ``["wrist", "base"]``)."""
        return list(self._camera({"msg_type": int(NodeMsg.CAMERAS)})["cameras"])

    def get_image(self, camera: str) -> np.ndarray:
        """The newest colour image of ``camera``: numpy uint8 (H, W, 3), RGB."""
        reply = self._frame(camera, "color")
        return np.frombuffer(reply["data"], np.uint8).reshape(
            reply["height"], reply["width"], 3).copy()          # the code's own, writable

    def get_depth(self, camera: str) -> np.ndarray:
        """The newest depth image of ``camera``, aligned to its colour image: numpy float32
        (H, W) in metres, nan where there is no reading."""
        reply = self._frame(camera, "depth")
        mm = np.frombuffer(reply["data"], np.uint16).reshape(reply["height"], reply["width"])
        depth = mm.astype(np.float32) / 1000.0
        depth[mm == 0] = np.nan
        return depth

    def get_camera_info(self, camera: str) -> dict[str, Any]:
        """Pinhole intrinsics of ``camera``'s colour image and where it was: ``fx, fy, cx, cy``
        (pixels; the principal point also as ``ppx, ppy``, RealSense's names, which the
        TidyBot camera server uses), ``width, height``, ``frame_id``, ``T_base_camera``
        (4x4 numpy: the optical frame — z forward, x right, y down — in the arm's base
        frame, where the camera was when the newest frame was taken; None for a camera
        whose mount the node does not know) and ``stamp`` (when that frame was taken, epoch
        seconds). Raises SensorUnavailable when the camera's source gives no intrinsics."""
        reply = self._frame(camera, "info")
        k = reply.get("intrinsics") or {}
        missing = [name for name in ("fx", "fy", "cx", "cy") if not k.get(name)]
        if missing:               # never made-up zeros
            raise SensorUnavailable(f"camera {camera!r}: its source gave no intrinsics "
                                    f"({', '.join(missing)} missing)")
        T = reply.get("T_base_camera")
        return {"fx": float(k["fx"]), "fy": float(k["fy"]),
                "cx": float(k["cx"]), "cy": float(k["cy"]),
                "ppx": float(k["cx"]), "ppy": float(k["cy"]),
                "width": int(reply["width"]), "height": int(reply["height"]),
                "frame_id": str(reply["frame_id"]), "stamp": float(reply["stamp"]),
                "T_base_camera": None if T is None else np.array(T, dtype=float).reshape(4, 4)}

    def _frame(self, camera: str, stream: str) -> dict[str, Any]:
        if not isinstance(camera, str) or not camera:
            raise SensorError(f"camera must be a camera's name (sensors.list_cameras()), "
                              f"got {camera!r}")
        return self._camera({"msg_type": int(NodeMsg.CAMERA_FRAME), "camera": camera,
                             "stream": stream})

    def _camera(self, msg: dict[str, Any]) -> dict[str, Any]:
        reply = self._node.request(msg, CAMERA_TIMEOUT_S, SensorUnavailable, "the cameras")
        if "error" in reply:
            raise (SensorUnavailable if reply.get("unavailable") else SensorError)(reply["error"])
        return reply
