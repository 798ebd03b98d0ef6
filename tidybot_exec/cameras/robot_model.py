"""The robot's geometry from the project's own URDF, and where its cameras sit on it.

One source for two users: the simulator builds its rendered robot from these links and
places its cameras by these mounts, and the node computes a frame's ``T_base_camera``
(the optical frame in the arm's base frame) from the same mounts and the measured joints —
so what the SDK says about a camera is what the simulator rendered.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from tidybot_sdk import kinematics as kin

ROOT_LINK = "base_link"
ARM_BASE_LINK = "panda_link0"
HAND_LINK = "panda_hand"
FINGER_JOINT = "finger_joint"
FINGER_MAX = 0.8            # finger_joint at a closed gripper (position 255), as joint_states


def transform(xyz: tuple[float, ...] = (0, 0, 0), rpy: tuple[float, ...] = (0, 0, 0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = kin.rpy_to_matrix(*rpy)
    T[:3, 3] = xyz
    return T


def _floats(text: str | None, n: int = 3) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split()) if text else (0.0,) * n


@dataclass(frozen=True)
class Visual:
    """One primitive shape of a link: ``kind`` box (size = full extents) or cylinder
    (size = radius, length), at ``origin`` in the link's frame."""

    kind: str
    size: tuple[float, ...]
    origin: np.ndarray
    rgba: tuple[float, ...]


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str                      # revolute | fixed
    parent: str
    child: str
    origin: np.ndarray
    axis: tuple[float, ...] = (0.0, 0.0, 1.0)


@dataclass
class RobotModel:
    """The URDF's tree: links (with their visuals) and joints, from the root down."""

    joints: list[Joint]
    visuals: dict[str, list[Visual]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "RobotModel":
        root = ET.fromstring(text)
        colours = {m.get("name"): _floats(m.find("color").get("rgba"), 4)
                   for m in root.iter("material") if m.find("color") is not None}
        visuals: dict[str, list[Visual]] = {}
        for link in root.findall("link"):
            for v in link.findall("visual"):
                o, g = v.find("origin"), v.find("geometry")[0]
                origin = transform(_floats(o.get("xyz")), _floats(o.get("rpy"))) if o is not None \
                    else np.eye(4)
                m = v.find("material")
                rgba = colours.get(m.get("name"), (0.7, 0.7, 0.7, 1.0)) if m is not None else (
                    0.7, 0.7, 0.7, 1.0)
                size = _floats(g.get("size")) if g.tag == "box" else (
                    float(g.get("radius")), float(g.get("length")))
                visuals.setdefault(link.get("name"), []).append(Visual(g.tag, size, origin, rgba))
        joints = []
        for j in root.findall("joint"):
            o, a = j.find("origin"), j.find("axis")
            joints.append(Joint(j.get("name"), j.get("type"), j.find("parent").get("link"),
                                j.find("child").get("link"),
                                transform(_floats(o.get("xyz")), _floats(o.get("rpy")))
                                if o is not None else np.eye(4),
                                _floats(a.get("xyz")) if a is not None else (0.0, 0.0, 1.0)))
        return cls(cls._ordered(joints), visuals)

    @staticmethod
    def _ordered(joints: list[Joint]) -> list[Joint]:
        """Parents before children, so one pass computes every pose."""
        done, ordered, todo = {ROOT_LINK}, [], list(joints)
        while todo:
            ready = [j for j in todo if j.parent in done]
            if not ready:
                raise ValueError(f"URDF joints not connected to {ROOT_LINK}: "
                                 f"{[j.name for j in todo]}")
            for j in ready:
                ordered.append(j)
                done.add(j.child)
                todo.remove(j)
        return ordered

    def link_poses(self, positions: Mapping[str, float]) -> dict[str, np.ndarray]:
        """Every link's pose in the root (base_link) frame, for joint ``positions`` by name
        (missing joints at 0)."""
        poses = {ROOT_LINK: np.eye(4)}
        for j in self.joints:
            T = poses[j.parent] @ j.origin
            if j.kind == "revolute":
                T = T @ _rotation(j.axis, positions.get(j.name, 0.0))
            poses[j.child] = T
        return poses


def _rotation(axis: tuple[float, ...], angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    T = np.eye(4)
    T[:3, :3] = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    return T


def urdf_path() -> Path:
    """urdf/tidybot.urdf of this checkout, else of this module's install prefix (a colcon
    install's: …/lib/pythonX.Y/site-packages/tidybot_exec/cameras is five levels below it),
    else wherever the ament index says the package is, else the venv's."""
    here = Path(__file__).resolve()
    share = Path("share") / "tidybot_exec" / "urdf" / "tidybot.urdf"
    candidates = [here.parents[2] / "urdf" / "tidybot.urdf",
                  here.parents[min(5, len(here.parents) - 1)] / share]
    try:
        from ament_index_python.packages import get_package_share_directory  # noqa: PLC0415
        candidates.append(Path(get_package_share_directory("tidybot_exec")) / "urdf" / "tidybot.urdf")
    except Exception:  # noqa: BLE001 - not a ROS install, or the package is not indexed
        pass
    candidates.append(Path(sys.prefix) / share)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"urdf/tidybot.urdf not found (looked in {', '.join(map(str, candidates))})")


@lru_cache(maxsize=1)
def robot_model() -> RobotModel:
    return RobotModel.parse(urdf_path().read_text())


def joint_positions(q, gripper_position: float = 0.0) -> dict[str, float]:
    """URDF joint positions for arm joints ``q`` and a gripper position byte (0 open)."""
    positions = {f"panda_joint{i + 1}": float(v) for i, v in enumerate(q)}
    positions[FINGER_JOINT] = FINGER_MAX * float(gripper_position) / 255.0
    return positions


# ------------------------------------------------------------------------------ cameras
def look_at(eye: tuple[float, ...], target: tuple[float, ...],
            up: tuple[float, ...] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """An optical frame (z forward, x right, y down) at ``eye`` looking at ``target``."""
    z = np.subtract(target, eye).astype(float)
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:               # looking along ``up``: any right will do
        x = np.cross(z, (1.0, 0.0, 0.0) if abs(z[0]) < 0.9 else (0.0, 1.0, 0.0))
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, np.cross(z, x), z])
    T[:3, 3] = eye
    return T


@dataclass(frozen=True)
class CameraMount:
    """A camera rigidly on ``link``: its optical frame in that link's frame, and its
    vertical field of view (what a RealSense of that place has)."""

    name: str
    link: str
    optical: np.ndarray
    fovy_deg: float

    def optical_in_arm_base(self, q, gripper_position: float = 0.0) -> np.ndarray:
        """T_base_camera: the optical frame in the arm's base frame (panda_link0) at ``q``."""
        poses = robot_model().link_poses(joint_positions(q, gripper_position))
        return np.linalg.inv(poses[ARM_BASE_LINK]) @ poses[self.link] @ self.optical


# wrist: a D405 on the hand, beside the fingers, looking along the approach axis (hand +z);
# base: a D435 on a mast at the base's right side, looking down at the table in front
# (from the side, so that the arm at home does not hide the table).
MOUNTS: dict[str, CameraMount] = {
    "wrist": CameraMount("wrist", HAND_LINK, look_at((0.06, 0.0, 0.03), (0.0, 0.0, 0.5),
                                                     up=(1.0, 0.0, 0.0)), 58.0),
    "base": CameraMount("base", ROOT_LINK, look_at((0.1, -0.4, 1.1), (0.65, 0.05, 0.45)), 58.0),
}


def intrinsics(width: int, height: int, fovy_deg: float) -> dict[str, float]:
    """Pinhole intrinsics of a camera with square pixels and a vertical field of view."""
    fy = 0.5 * height / np.tan(np.radians(fovy_deg) / 2.0)
    return {"fx": float(fy), "fy": float(fy), "cx": width / 2.0, "cy": height / 2.0,
            "width": int(width), "height": int(height)}
