"""The simulator's world: a table in front of the robot and objects on it.

The kinematic simulator stays the source of motion; the world only adds objects. A grasp
closes on the object between the fingers (its width along the closing axis, from the
scene), a grasped object moves rigidly with the hand, and an opened gripper leaves it where
it is — set down upright on the table when over it, else on the floor. Poses are in the
world (odometry) frame, 4×4. The scene is data (``Scene.load``: a JSON file, or the
default); a dry run's private simulator starts from ``World.snapshot()`` of the live one.
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tidybot_exec.cameras.robot_model import transform

FINGER_REACH_MM = 85.0          # the 2F-85's stroke: wider objects do not fit
PAD_HALF_LENGTH = 0.025         # m along the approach axis (hand z) the pads cover, each side
PAD_HALF_DEPTH = 0.02           # m across them (hand x)


@dataclass
class Body:
    """A box: full extents ``size`` (m), colour ``rgba``, pose in the world frame."""

    name: str
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    pose: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": list(self.size), "rgba": list(self.rgba),
                "pose": self.pose.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Body":
        return cls(str(d["name"]), tuple(map(float, d["size"])), tuple(map(float, d["rgba"])),
                   np.array(d["pose"], dtype=float).reshape(4, 4))


@dataclass
class Scene:
    """What stands in front of the robot: one table and the objects on it."""

    table: Body
    objects: list[Body] = field(default_factory=list)
    held: str = ""                                   # a snapshot's held object
    held_in_hand: list[list[float]] | None = None    # its pose in the hand frame

    @classmethod
    def default(cls) -> "Scene":
        """A 0.45 m high table 0.45..1.05 m in front of the base, a red 5 cm cube and a
        green block on it, within the arm's reach from the base at the origin (the cube at
        (0.5, 0, 0.075) in the arm's base frame)."""
        return cls.from_dict({
            "table": {"center": [0.75, 0.0], "size": [0.6, 0.8], "height": 0.45,
                      "rgba": [0.55, 0.4, 0.25, 1.0]},
            "objects": [
                {"name": "cube", "size": [0.05, 0.05, 0.05], "rgba": [0.85, 0.1, 0.1, 1.0],
                 "position": [0.6, 0.0]},
                {"name": "block", "size": [0.04, 0.12, 0.06], "rgba": [0.1, 0.6, 0.2, 1.0],
                 "position": [0.62, -0.25], "yaw": 0.3},
            ]})

    @classmethod
    def load(cls, path: str | Path) -> "Scene":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        """The scene file's form (docs/cameras.md): objects stand on the table at
        ``position`` [x, y] (or [x, y, z] for their centre) turned by ``yaw``; a snapshot's
        objects carry a full ``pose``."""
        t = data["table"]
        cx, cy = map(float, t["center"])
        sx, sy = map(float, t["size"])
        height = float(t["height"])
        table = Body("table", (sx, sy, height), tuple(t.get("rgba", (0.55, 0.4, 0.25, 1.0))),
                     transform((cx, cy, height / 2)))
        objects = []
        for o in data.get("objects", []):
            size = tuple(map(float, o["size"]))
            if len(size) != 3 or min(size) <= 0:
                raise ValueError(f"object {o.get('name')!r}: size must be 3 positive extents")
            if "pose" in o:
                objects.append(Body.from_dict(o))
                continue
            p = list(map(float, o["position"]))
            z = p[2] if len(p) == 3 else height + size[2] / 2
            objects.append(Body(str(o["name"]), size, tuple(o.get("rgba", (0.8, 0.8, 0.8, 1))),
                                transform((p[0], p[1], z), (0, 0, float(o.get("yaw", 0.0))))))
        names = [o.name for o in objects]
        if len(set(names)) != len(names) or "table" in names:
            raise ValueError("object names must be unique and not 'table'")
        return cls(table, objects, str(data.get("held", "")), data.get("held_in_hand"))

    def to_dict(self) -> dict[str, Any]:
        t = self.table
        return {"table": {"center": t.pose[:2, 3].tolist(), "size": list(t.size[:2]),
                          "height": t.size[2], "rgba": list(t.rgba)},
                "objects": [o.to_dict() for o in self.objects], "held": self.held,
                "held_in_hand": self.held_in_hand}


class World:
    """The scene's objects as the robot moves them. ``hand_pose`` gives the gripper's TCP
    frame in the world (its y axis is the fingers' closing axis); it is called without
    this world's lock held, so it may take the arm's and the base's."""

    def __init__(self, scene: Scene, hand_pose: Callable[[], np.ndarray]) -> None:
        self.table = scene.table
        self._objects = {o.name: o for o in scene.objects}
        self._hand_pose = hand_pose
        self._lock = threading.Lock()
        self._candidate = ""
        self._held, self._in_hand = "", np.eye(4)
        if scene.held in self._objects and scene.held_in_hand is not None:
            self._held, self._in_hand = scene.held, np.array(scene.held_in_hand).reshape(4, 4)

    # ------------------------------------------------------------ the gripper's hooks
    def between_fingers(self, opening_mm: float = FINGER_REACH_MM) -> float | None:
        """Width in mm (along the closing axis) of the object between the fingers, open by
        ``opening_mm``, which a closing grasp will stop on; None when none fits in there."""
        hand = self._hand_pose()
        inv = np.linalg.inv(hand)
        best: tuple[float, str, float] | None = None
        with self._lock:
            for o in self._objects.values():
                if o.name == self._held:
                    continue
                local = inv @ o.pose
                x, y, z = local[:3, 3]
                # the object's half extent along each hand axis
                half = 0.5 * np.abs(local[:3, :3]) @ np.asarray(o.size)
                width_mm = float(2000.0 * half[1])
                if (abs(x) <= PAD_HALF_DEPTH + half[0] and abs(z) <= PAD_HALF_LENGTH + half[2]
                        and abs(y) + half[1] <= opening_mm / 2000.0
                        and width_mm < opening_mm):
                    d = math.hypot(x, z)
                    if best is None or d < best[0]:
                        best = (d, o.name, width_mm)
            self._candidate = best[1] if best else ""
        return best[2] if best else None

    def grasped(self) -> None:
        """The fingers stopped on the candidate: it moves with the hand from now on."""
        hand = self._hand_pose()
        with self._lock:
            if self._candidate in self._objects:
                self._held = self._candidate
                self._in_hand = np.linalg.inv(hand) @ self._objects[self._held].pose

    def released(self) -> None:
        """The fingers opened: the held object stays, set down upright below where it is."""
        hand = self._hand_pose()
        with self._lock:
            if not self._held:
                return
            o = self._objects[self._held]
            pose = hand @ self._in_hand
            x, y = pose[0, 3], pose[1, 3]
            half_z = 0.5 * o.size[2]
            on_table = self._over_table(x, y) and pose[2, 3] >= self.table.size[2]
            yaw = math.atan2(pose[1, 0], pose[0, 0])
            o.pose = transform((x, y, self.table.size[2] + half_z if on_table else half_z),
                               (0, 0, yaw))
            self._held = ""

    def _over_table(self, x: float, y: float) -> bool:
        local = np.linalg.inv(self.table.pose) @ np.array([x, y, 0.0, 1.0])
        return abs(local[0]) <= self.table.size[0] / 2 and abs(local[1]) <= self.table.size[1] / 2

    # --------------------------------------------------------------------- reading
    @property
    def held(self) -> str:
        return self._held

    def bodies(self) -> list[Body]:
        """The table and every object where it is now (a held one where the hand is)."""
        hand = self._hand_pose()
        with self._lock:
            return self._bodies(hand)

    def _bodies(self, hand: np.ndarray) -> list[Body]:
        out = [self.table]
        for o in self._objects.values():
            pose = hand @ self._in_hand if o.name == self._held else o.pose
            out.append(Body(o.name, o.size, o.rgba, pose.copy()))
        return out

    def snapshot(self) -> dict[str, Any]:
        """This world as a scene (Scene.from_dict), read at one instant: a dry run's
        private world starts here."""
        hand = self._hand_pose()
        with self._lock:
            bodies, held, in_hand = self._bodies(hand), self._held, self._in_hand.tolist()
        return Scene(bodies[0], bodies[1:], held, in_hand if held else None).to_dict()
