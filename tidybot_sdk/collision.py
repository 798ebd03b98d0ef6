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

``Scene``: the bodies placed for one base pose, every box tested in one vectorised pass
(~70 µs for the arm at one configuration, its frames included). ``KeepOut``: the rule
(margin, and the escape of an arm already too close) and the path check the SDK runs
before a motion; the guard applies the same rule to each target. ``follow``: the joint
angles that reach a streamed cartesian target from the last one's, for the checks.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import kinematics as kin

SPACING_M = 0.005
MARGIN_M = 0.01                         # keep_out_margin_m's default
ESCAPE_TOLERANCE_M = 0.001              # a measured state's noise, in the escape rule
STEP_M = 0.01                           # a path is checked where no point moved more since
MIN_STEP_S = 1e-4                       # ... down to this much of it (an IK jump, not a motion)
FOLLOW_TOLERANCE = (3e-4, 3e-3)         # m, rad: IK for a clearance (0.3 mm at the fingertips)
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

    def __post_init__(self) -> None:        # (lists given: kept as tuples, so it hashes)
        object.__setattr__(self, "center", tuple(map(float, self.center)))
        object.__setattr__(self, "size", tuple(map(float, self.size)))
        object.__setattr__(self, "yaw", float(self.yaw))

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


# Always kept out, fixed to the base (base_link frame): the base itself and the mast at its
# rear right corner that carries the base camera (out of the way of the elbow, which
# sweeps ~0.3 m around the arm's axis when joint 1 turns).
ROBOT_BOXES: tuple[Box, ...] = (
    Box("the robot's base", (0.0, 0.0, 0.2), (0.5, 0.5, 0.4)),
    Box("the camera mast", (-0.22, -0.22, 0.75), (0.04, 0.04, 0.7)),
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
_POINTS3 = np.ascontiguousarray(_POINTS[:3].T)             # N×3, each in its own frame
_PAD = _RADII + SPACING_M / 2          # taken off a point's distance: its radius, the sampling
_STARTS = np.flatnonzero(np.diff(_WHICH, prepend=-1))      # each capsule's first point


def points_at(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The sample points (N×3) in the arm's base frame, ``frames`` from kinematics.frames."""
    F = np.array(frames)[_FRAMES]                                   # N×4×4
    return np.einsum("nij,nj->ni", F[:, :3, :3], _POINTS3) + F[:, :3, 3]


def arm_points(q: Sequence[float]) -> np.ndarray:
    """The sample points (N×3) in the arm's base frame at joint angles ``q``."""
    return points_at(kin.frames(np.asarray(q, dtype=float)))


def arm_base_in_odom(base_pose: Sequence[float]) -> np.ndarray:
    """4×4 pose of the arm's base in the odometry frame, the base at (x, y, θ)."""
    x, y, theta = (float(v) for v in base_pose)
    c, s = math.cos(theta), math.sin(theta)
    ax, ay, az = ARM_BASE_IN_BASE
    return np.array([[c, -s, 0.0, x + c * ax - s * ay], [s, c, 0.0, y + s * ax + c * ay],
                     [0.0, 0.0, 1.0, az], [0.0, 0.0, 0.0, 1.0]])


def _box_frame(box: Box, frame: np.ndarray) -> np.ndarray:
    """``box``'s frame in the arm base frame; ``frame``: the pose, in the arm base frame, of
    the frame the box is given in (the odometry frame, or the base's for the robot's own)."""
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    T = np.array([[c, -s, 0.0, box.center[0]], [s, c, 0.0, box.center[1]],
                  [0.0, 0.0, 1.0, box.center[2]], [0.0, 0.0, 0.0, 1.0]])
    return frame @ T


_BASE_IN_ARM = np.linalg.inv(arm_base_in_odom((0.0, 0.0, 0.0)))


class Scene:
    """The bodies kept out — the robot's base and mast, ``boxes`` (odometry frame) placed
    for the base at ``base_pose``, and the floor — ready for many checks: every box is
    tested in one vectorised pass (a box's axes side by side in one matrix)."""

    def __init__(self, base_pose: Sequence[float] | None, boxes: Iterable[Box] = ()) -> None:
        boxes = tuple(boxes)
        if boxes and base_pose is None:
            raise ValueError("kept-out boxes are placed where the base is: give its pose")
        placed = [_box_frame(b, _BASE_IN_ARM) for b in ROBOT_BOXES]
        if boxes:
            odom_in_arm = np.linalg.inv(arm_base_in_odom(base_pose))     # type: ignore[arg-type]
            placed += [_box_frame(b, odom_in_arm) for b in boxes]
        every = (*ROBOT_BOXES, *boxes)
        self.bodies: tuple[str, ...] = (*(b.name for b in every), FLOOR)
        self._rotations = np.concatenate([P[:3, :3] for P in placed], axis=1)     # 3×3B
        self._offsets = np.concatenate([P[:3, 3] @ P[:3, :3] for P in placed])   # 3B
        self._half = 0.5 * np.concatenate([b.size for b in every])
        self._floor_z = -ARM_BASE_IN_BASE[2]          # the floor (odometry z = 0), arm frame

    def distances(self, points: np.ndarray) -> np.ndarray:
        """Each sample point's conservative clearance (m, negative inside) to each body:
        N × len(bodies)."""
        n, boxes = len(points), len(self.bodies) - 1
        excess = (np.abs(points @ self._rotations - self._offsets) - self._half).reshape(n, boxes, 3)
        outside = np.maximum(excess, 0.0)
        # (max over an axis of 3 is a slow reduction at this size: pairwise maxima instead)
        deepest = np.maximum(np.maximum(excess[..., 0], excess[..., 1]), excess[..., 2])
        out = np.empty((n, boxes + 1))
        out[:, :boxes] = (np.sqrt(np.einsum("nbk,nbk->nb", outside, outside))
                          + np.minimum(deepest, 0.0))
        out[:, boxes] = points[:, 2] - self._floor_z
        return out - _PAD[:, None]

    def clearance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per body: the arm's clearance to it (m) and the index of the capsule closest."""
        d = self.distances(points)
        i = d.argmin(axis=0)
        return d[i, np.arange(d.shape[1])], _WHICH[i]

    def nearest(self, q: Sequence[float]) -> Contact:
        clear, which = self.clearance(arm_points(q))
        b = int(np.argmin(clear))
        return Contact(CAPSULES[which[b]].link, self.bodies[b], float(clear[b]))

    def contacts(self, q: Sequence[float], within: float = 0.0) -> list[Contact]:
        per_capsule = np.minimum.reduceat(self.distances(arm_points(q)), _STARTS, axis=0)
        found = [Contact(CAPSULES[i].link, self.bodies[b], float(per_capsule[i, b]))
                 for i, b in zip(*np.nonzero(per_capsule < within))]
        return sorted(found, key=lambda c: c.distance)


def nearest(q: Sequence[float], base_pose: Sequence[float], boxes: Iterable[Box] = ()) -> Contact:
    """The closest approach of the arm at ``q`` (the base at ``base_pose`` in the odometry
    frame) to the floor, the robot's own base and mast, and ``boxes`` (odometry frame)."""
    return Scene(base_pose, boxes).nearest(q)


def contacts(q: Sequence[float], base_pose: Sequence[float], boxes: Iterable[Box] = (),
             within: float = 0.0) -> list[Contact]:
    """Every (link, body) pair closer than ``within`` (m), each at its closest, closest first."""
    return Scene(base_pose, boxes).contacts(q, within)


# ------------------------------------------------------------------ the keep-out rule
@dataclass(frozen=True)
class Breach:
    """Why an arm configuration is refused: ``contact`` is closer than the margin allows;
    ``now`` is the clearance to that body the arm has where it is, when it is already
    inside the margin (then only moving away is allowed), else None."""

    contact: Contact
    margin: float
    now: float | None = None

    def __str__(self) -> str:
        c = self.contact
        depth = f"{-c.distance:.3f} m into it" if c.distance < 0 else f"{c.distance:.3f} m from it"
        if self.now is None:
            return (f"would bring {c.link} within {self.margin:.3f} m of {c.body} ({depth}); "
                    f"would hit {c.body}")
        return (f"would bring {c.link} closer to {c.body} ({depth}) than the {self.now:.3f} m it is "
                f"at, inside the {self.margin:.3f} m margin (only moving away from it is "
                f"allowed); would hit {c.body}")


@dataclass(frozen=True)
class KeepOut:
    """The rule both the SDK's path check and the guard apply: the arm's collision geometry
    stays ``margin`` (m) away from the floor, the robot's base and mast, and ``boxes``
    (odometry frame, placed where the base measures itself).

    Escape: a body the arm is already closer to than the margin (it came to rest there,
    was pushed or placed there) may be approached no closer, so a motion may free it.
    Along a path the reference is the most clearance the path has had so far (capped at
    the margin), so a path inside the margin may only move away; the guard, which sees
    targets one at a time, takes the clearance where the arm is measured now, which along
    such a path is never more than the path's. ESCAPE_TOLERANCE_M absorbs the noise of a
    measured state."""

    boxes: tuple[Box, ...] = ()
    margin: float = MARGIN_M

    def scene(self, base_pose: Sequence[float] | None) -> Scene:
        """The bodies placed for the base at ``base_pose`` (None: no boxes to place)."""
        return _scene(self.boxes, None if base_pose is None or not self.boxes
                      else tuple(map(float, base_pose)))

    def breach(self, scene: Scene, clear: np.ndarray, which: np.ndarray,
               reference: np.ndarray | None = None) -> Breach | None:
        """The worst body whose clearance ``clear`` (with ``which`` capsule has it, from
        Scene.clearance) breaks the rule; ``reference``: per body, the clearance to compare
        with when it is inside the margin (None: nowhere inside)."""
        floor = np.full(len(clear), self.margin)
        if reference is not None:
            inside = reference < self.margin
            floor[inside] = reference[inside] - ESCAPE_TOLERANCE_M
        short = clear - floor
        b = int(np.argmin(short))
        if short[b] >= 0.0:
            return None
        now = None if reference is None or reference[b] >= self.margin else float(reference[b])
        return Breach(Contact(CAPSULES[which[b]].link, scene.bodies[b], float(clear[b])),
                      self.margin, now)

    def check(self, scene: Scene, frames: Sequence[np.ndarray],
              measured: Callable[[], np.ndarray] | None = None) -> Breach | None:
        """The breach of the arm at ``frames`` (kinematics.frames), or None. ``measured``
        gives the joint angles where the arm is, asked only when a body is within the
        margin (the escape rule's reference)."""
        clear, which = scene.clearance(points_at(frames))
        if clear.min() >= self.margin or measured is None:
            return self.breach(scene, clear, which)
        now, _ = scene.clearance(arm_points(measured()))
        return self.breach(scene, clear, which, now)

    def check_path(self, scene: Scene, q_at: Callable[[float, np.ndarray | None], np.ndarray],
                   s_values: Sequence[float]) -> tuple[float, Breach] | None:
        """The deepest breach along a path, as (its path parameter, the breach), or None.

        ``q_at(s, q_before)`` gives the joint angles at path parameter ``s`` (``q_before``:
        those of the sample before, a seed for IK; None for the first). The path is
        checked at ``s_values`` (increasing, from where the arm is), and between two of
        them wherever some point of the arm would move more than STEP_M (halving the
        interval): no point of the arm moves farther between two samples."""
        s_values = list(s_values)
        at = {s_values[0]: q_at(s_values[0], None)}
        prev_s, prev_points = s_values[0], arm_points(at[s_values[0]])
        most, _ = scene.clearance(prev_points)          # the escape rule's reference
        todo = s_values[:0:-1]                          # a stack, the next sample on top
        worst: tuple[float, Breach] | None = None
        while todo:
            s = todo.pop()
            if s not in at:
                at[s] = q_at(s, at[prev_s])
            points = arm_points(at[s])
            moved = points - prev_points
            if s - prev_s > MIN_STEP_S and np.einsum("ij,ij->i", moved, moved).max() > STEP_M ** 2:
                todo += [s, (prev_s + s) / 2]           # look between first
                continue
            clear, which = scene.clearance(points)
            breach = self.breach(scene, clear, which, most)
            if breach is not None and (worst is None or breach.contact.distance
                                       <= worst[1].contact.distance + 1e-4):
                worst = s, breach           # (of a near tie the later: the target over its tick)
            most = np.maximum(most, clear)
            prev_s, prev_points = s, points
        return worst


@functools.lru_cache(maxsize=4)
def _scene(boxes: tuple[Box, ...], base_pose: tuple[float, ...] | None) -> Scene:
    """(A base at rest measures the same pose target after target: placed once.)"""
    return Scene(base_pose, boxes)


def follow(T_target: np.ndarray, q_seed: Sequence[float],
           seed_frames: list[np.ndarray] | None = None, max_iter: int = 20
           ) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Joint angles near ``q_seed`` (``seed_frames``: theirs, when known) that reach
    ``T_target`` within FOLLOW_TOLERANCE, with their frames, or None: the arm following a
    streamed cartesian target (damped least squares from the last target's joint angles,
    as kinematics.ik with restarts=0 does in the simulator, but only to the precision a
    clearance needs: a 50 Hz step takes one iteration)."""
    q = np.clip(np.asarray(q_seed, dtype=float), kin.Q_MIN, kin.Q_MAX)
    frames = kin.frames(q) if seed_frames is None else seed_frames
    for _ in range(max_iter):
        err = kin.pose_error(T_target, frames[-1])
        if (np.linalg.norm(err[:3]) < FOLLOW_TOLERANCE[0]
                and np.linalg.norm(err[3:]) < FOLLOW_TOLERANCE[1]):
            return q, frames
        J = kin.frames_jacobian(frames)
        step = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), err)
        q = np.clip(q + step / max(1.0, np.max(np.abs(step)) / 0.3), kin.Q_MIN, kin.Q_MAX)
        frames = kin.frames(q)
    return None
