"""The arm's collision geometry and its distance to kept-out boxes (pure numpy).

One model serves three places: the SDK's path check, the guard's check of every target,
and the simulator's contact with the static world. It is the URDF's collision geometry
(urdf/tidybot.urdf, ``<collision>`` elements; test_keep_out checks that the two agree):
each arm link, the hand and the two fingers are capsules (a segment swept by a radius),
given in the frames of ``kinematics.frames``; the mobile base and the camera mast are boxes
fixed to the base.

Distances are computed on points sampled along each capsule's segment every
``SPACING_M``; a point's distance to a box is exact, and a segment may come closer than
its nearest sample by at most half the spacing, so that much is taken off: the distance
reported is never more than the true one.

Frames: kept-out boxes are given in the odometry frame (where the base measures its pose,
the simulator's world frame) and placed where the base measures itself at each check; the
arm's base (panda_link0) sits ``ARM_BASE_IN_BASE`` above and ahead of the base's origin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from . import kinematics as kin

SPACING_M = 0.005
ARM_BASE_IN_BASE = (0.1, 0.0, 0.4)     # panda_link0 in base_link (URDF joint base_to_arm)
FINGER_OPEN_M = 0.085                   # the 2F-85's stroke: the fingers stand fully open


@dataclass(frozen=True)
class Capsule:
    """A segment ``a``→``b`` (m) in frame ``frame`` of ``kinematics.frames`` (0..6: panda
    links 1..7, 7: the flange, 8: the end effector), swept by ``radius``."""

    link: str
    frame: int
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float


def _hand(a: Sequence[float], b: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Points given in the hand frame (panda_hand: the flange turned -45° about z, as the
    end effector but at the flange) expressed in the end-effector frame (frame 8)."""
    off = kin.F_T_EE[2, 3]
    return (a[0], a[1], a[2] - off), (b[0], b[1], b[2] - off)


_FINGER_Y = FINGER_OPEN_M / 2 + 0.01
CAPSULES: tuple[Capsule, ...] = (
    Capsule("panda_link1", 0, (0.0, 0.0, -0.19), (0.0, 0.0, 0.0), 0.07),
    Capsule("panda_link2", 1, (0.0, 0.0, 0.0), (0.0, -0.316, 0.0), 0.065),
    Capsule("panda_link3", 2, (0.0, 0.0, 0.0), (0.0825, 0.0, 0.0), 0.06),
    Capsule("panda_link4", 3, (0.0, 0.0, 0.0), (-0.0825, 0.384, 0.0), 0.06),
    Capsule("panda_link6", 5, (0.0, 0.0, 0.0), (0.088, 0.0, 0.0), 0.06),
    Capsule("panda_link7", 6, (0.0, 0.0, 0.0), (0.0, 0.0, 0.107), 0.055),
    Capsule("panda_hand", 8, *_hand((0.0, -0.075, 0.035), (0.0, 0.075, 0.035)), 0.035),
    Capsule("left_finger", 8, *_hand((0.0, _FINGER_Y, 0.066), (0.0, _FINGER_Y, 0.0934)), 0.01),
    Capsule("right_finger", 8, *_hand((0.0, -_FINGER_Y, 0.066), (0.0, -_FINGER_Y, 0.0934)), 0.01),
)


@dataclass(frozen=True)
class Box:
    """A box of full extents ``size`` (m) centred at ``center``, turned by ``yaw`` about z."""

    name: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Box":
        """``{name, center: [x,y,z], size: [sx,sy,sz], yaw}``; ValueError names what is wrong."""
        try:
            name = str(d["name"])
            center = tuple(float(v) for v in d["center"])
            size = tuple(float(v) for v in d["size"])
            yaw = float(d.get("yaw", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"keep-out box {d!r}: needs name, center [x, y, z], size "
                             f"[sx, sy, sz] and an optional yaw ({exc})") from None
        if not name or len(center) != 3 or len(size) != 3 or min(size) <= 0 or not all(
                map(math.isfinite, (*center, *size, yaw))):
            raise ValueError(f"keep-out box {d!r}: needs a name, 3 finite centre coordinates "
                             f"and 3 positive extents")
        return cls(name, center, size, yaw)   # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "center": list(self.center), "size": list(self.size),
                "yaw": self.yaw}


# Always kept out, fixed to the base (base_link frame): the base itself and the mast that
# carries the base camera at its right side.
ROBOT_BOXES: tuple[Box, ...] = (
    Box("the robot's base", (0.0, 0.0, 0.2), (0.5, 0.5, 0.4)),
    Box("the camera mast", (0.1, -0.22, 0.75), (0.04, 0.04, 0.7)),
)
FLOOR = "the floor"


@dataclass(frozen=True)
class Contact:
    """The closest approach: ``link`` to ``body``, ``distance`` (m) between their surfaces
    (negative: that deep inside)."""

    link: str
    body: str
    distance: float


def _samples() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every capsule's sample points in its frame (homogeneous, 4×N), with each point's
    frame index, radius and capsule index."""
    points, frames, radii, which = [], [], [], []
    for i, c in enumerate(CAPSULES):
        a, b = np.asarray(c.a), np.asarray(c.b)
        n = max(2, int(math.ceil(np.linalg.norm(b - a) / SPACING_M)) + 1)
        for s in np.linspace(0.0, 1.0, n):
            points.append([*(a + s * (b - a)), 1.0])
            frames.append(c.frame)
            radii.append(c.radius)
            which.append(i)
    return np.array(points).T, np.array(frames), np.array(radii), np.array(which)


_POINTS, _FRAMES, _RADII, _WHICH = _samples()
_FRAME_SLICES = [np.flatnonzero(_FRAMES == f) for f in range(9)]


def arm_points(q: Sequence[float]) -> np.ndarray:
    """The sample points (N×3) in the arm's base frame at joint angles ``q``."""
    frames = kin.frames(np.asarray(q, dtype=float))
    out = np.empty((_POINTS.shape[1], 3))
    for f, idx in enumerate(_FRAME_SLICES):
        if idx.size:
            out[idx] = (frames[f] @ _POINTS[:, idx])[:3].T
    return out


def arm_base_in_odom(base_pose: Sequence[float]) -> np.ndarray:
    """4×4 pose of the arm's base in the odometry frame, the base at (x, y, θ)."""
    x, y, theta = (float(v) for v in base_pose)
    c, s = math.cos(theta), math.sin(theta)
    ax, ay, az = ARM_BASE_IN_BASE
    return np.array([[c, -s, 0.0, x + c * ax - s * ay], [s, c, 0.0, y + s * ax + c * ay],
                     [0.0, 0.0, 1.0, az], [0.0, 0.0, 0.0, 1.0]])


def _box_distances(points: np.ndarray, box: Box, placed: np.ndarray) -> np.ndarray:
    """Signed distance of each point (N×3, arm base frame) to ``box`` whose frame is
    ``placed`` (4×4 in the arm base frame)."""
    local = (points - placed[:3, 3]) @ placed[:3, :3]
    excess = np.abs(local) - 0.5 * np.asarray(box.size)
    outside = np.linalg.norm(np.maximum(excess, 0.0), axis=1)
    inside = np.minimum(np.max(excess, axis=1), 0.0)
    return outside + inside


def _box_frame(box: Box, frame: np.ndarray) -> np.ndarray:
    """``box``'s frame in the arm base frame; ``frame``: the pose, in the arm base frame, of
    the frame the box is given in (the odometry frame, or the base's for the robot's own)."""
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    T = np.array([[c, -s, 0.0, box.center[0]], [s, c, 0.0, box.center[1]],
                  [0.0, 0.0, 1.0, box.center[2]], [0.0, 0.0, 0.0, 1.0]])
    return frame @ T


_BASE_IN_ARM = np.linalg.inv(arm_base_in_odom((0.0, 0.0, 0.0)))


def _clearances(q: Sequence[float], base_pose: Sequence[float],
                boxes: Iterable[Box]) -> list[tuple[str, np.ndarray]]:
    """Per body (the robot's own boxes, ``boxes``, the floor): each sample point's
    conservative clearance (m, negative inside) to it."""
    points = arm_points(q)
    odom_in_arm = np.linalg.inv(arm_base_in_odom(base_pose))
    named = [(b, _BASE_IN_ARM) for b in ROBOT_BOXES] + [(b, odom_in_arm) for b in boxes]
    out = [(b.name, _box_distances(points, b, _box_frame(b, frame))) for b, frame in named]
    out.append((FLOOR, points[:, 2] + ARM_BASE_IN_BASE[2]))          # odometry z = 0
    return [(name, d - _RADII - SPACING_M / 2) for name, d in out]


def nearest(q: Sequence[float], base_pose: Sequence[float], boxes: Iterable[Box] = ()) -> Contact:
    """The closest approach of the arm at ``q`` (the base at ``base_pose`` in the odometry
    frame) to the floor, the robot's own base and mast, and ``boxes`` (odometry frame)."""
    best: Contact | None = None
    for name, d in _clearances(q, base_pose, boxes):
        i = int(np.argmin(d))
        if best is None or d[i] < best.distance:
            best = Contact(CAPSULES[_WHICH[i]].link, name, float(d[i]))
    assert best is not None
    return best


def contacts(q: Sequence[float], base_pose: Sequence[float], boxes: Iterable[Box] = (),
             within: float = 0.0) -> list[Contact]:
    """Every (link, body) pair closer than ``within`` (m), each at its closest, closest first."""
    found: list[Contact] = []
    for name, d in _clearances(q, base_pose, boxes):
        for i, capsule in enumerate(CAPSULES):
            mine = d[_WHICH == i]
            if mine.min() < within:
                found.append(Contact(capsule.link, name, float(mine.min())))
    return sorted(found, key=lambda c: c.distance)
