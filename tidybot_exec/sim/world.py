"""The simulator's world: a table in front of the robot and objects on it, with physics.

The scene is data (``Scene.load``: a JSON file, or the default; a dry run's private
simulator starts from ``World.snapshot()`` of the live one). ``World`` runs it in MuJoCo
(physics.py) in its own thread, at a fixed step in batches: objects fall, rest, slide and
are pushed by the robot, whose joints, base and fingers come from the simulated servers.
A grasp is by contact: the closing fingers stop on an object both pads touch from the
sides (its extent between the pads is where they stop) and it is welded to the hand until
the gripper opens; it then falls and comes to rest. An arm link touching the table, the
floor or the robot's own base or mast is a collision: the arm enters its reflex
(arm.SimArm, recovered by restarting the arm server) and the collision is logged in the
snapshot. Poses are in the world (odometry) frame, 4×4.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from tidybot_sdk import collision as col

from tidybot_exec.cameras.robot_model import transform

from .physics import DT_S, Collision, Engine, Pose, StaticContacts

PERIOD_S = 0.005           # a batch of physics steps this often while anything moves
IDLE_PERIOD_S = 0.02       # everything at rest and the robot still: only watch the robot
MAX_STEPS = 25             # a late batch catches up at most this much (50 ms), then drops time
SETTLED_S = 0.3            # at rest this long (physics time): stop stepping until woken
COLLISION_LOG = 100        # the snapshot keeps the last this many collisions
DEFAULT_MASS_KG = 0.1
DEFAULT_FRICTION = 1.0


@dataclass
class Body:
    """A box: full extents ``size`` (m), colour ``rgba``, pose in the world frame; an
    object's ``mass`` (kg) and sliding ``friction`` coefficient."""

    name: str
    size: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    pose: np.ndarray
    mass: float = DEFAULT_MASS_KG
    friction: float = DEFAULT_FRICTION

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": list(self.size), "rgba": list(self.rgba),
                "pose": self.pose.tolist(), "mass": self.mass, "friction": self.friction}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Body":
        return cls(str(d["name"]), tuple(map(float, d["size"])), tuple(map(float, d["rgba"])),
                   np.array(d["pose"], dtype=float).reshape(4, 4), *_physical(d))


def _physical(o: dict[str, Any]) -> tuple[float, float]:
    mass = float(o.get("mass", DEFAULT_MASS_KG))
    friction = float(o.get("friction", DEFAULT_FRICTION))
    if not (mass > 0 and friction >= 0 and math.isfinite(mass) and math.isfinite(friction)):
        raise ValueError(f"object {o.get('name')!r}: mass must be > 0 kg and friction >= 0")
    return mass, friction


@dataclass
class Scene:
    """What stands in front of the robot: one table and the objects on it.

    The scene file (JSON; docs/cameras.md): ``table``: ``center`` [x, y], ``size`` [sx, sy],
    ``height``, optional ``rgba``; ``objects``: each a box with ``name``, ``size`` [sx, sy,
    sz], ``rgba``, standing on the table at ``position`` [x, y] (or [x, y, z] for its
    centre) turned by ``yaw``, or at a full 4×4 ``pose`` (a snapshot's); optional ``mass``
    (kg, default 0.1) and ``friction`` (sliding coefficient, default 1.0: a contact of the
    object uses the object's). A snapshot also has ``held``/``held_in_hand`` (what the
    hand holds, its pose in the hand frame) and ``collisions`` (ignored when loaded).
    """

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
        """The scene file's form (the class docstring); a snapshot loads back."""
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
                                transform((p[0], p[1], z), (0, 0, float(o.get("yaw", 0.0)))),
                                *_physical(o)))
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

    def table_box(self) -> col.Box:
        """The table as a kept-out box in the odometry frame (the guard's keep_out:=auto)."""
        T = self.table.pose
        return col.Box("table", tuple(T[:3, 3].tolist()), self.table.size,
                       math.atan2(T[1, 0], T[0, 0]))


class Arm(Protocol):
    """What the world asks of the arm (arm.SimArm): its reflex, and the forces it feels."""

    def in_reflex(self) -> bool: ...
    def collide(self, why: str, q: np.ndarray) -> bool: ...
    def feel(self, wrench: np.ndarray) -> None: ...


class World:
    """The scene's objects as physics and the robot move them. ``robot_pose`` reads the
    robot (each server under its own lock; never called with this world's lock held);
    ``arm`` takes collisions and contact forces. ``start()`` runs the physics."""

    def __init__(self, scene: Scene, robot_pose: Callable[[], Pose], arm: Arm | None = None,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.table = scene.table
        self._scene = scene
        self._robot_pose, self._arm, self._log = robot_pose, arm, log
        self._lock = threading.Lock()
        self._objects = {o.name: o for o in scene.objects}
        self._poses = {o.name: o.pose.copy() for o in scene.objects}
        self._hand: np.ndarray | None = None      # the hand (EE) when _poses were read
        self._held, self._in_hand = "", np.eye(4)
        if scene.held in self._objects and scene.held_in_hand is not None:
            self._held, self._in_hand = scene.held, np.array(scene.held_in_hand).reshape(4, 4)
        self._want: str | None = None             # for the physics: hold this ("": let go)
        self._candidate = ""                      # what the pads pinch now
        self._touches: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._collisions: deque[Collision] = deque(maxlen=COLLISION_LOG)
        self._static = StaticContacts(scene.table_box())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""                           # why there is no physics ("" while there is)
        self.ready = threading.Event()            # set once the physics runs (or failed to)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Run the physics (once: nothing after ``stop``)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="sim-physics", daemon=True)
            self._thread.start()

    def stop(self) -> bool:
        """Stop the physics; a thread still importing MuJoCo (a dry run whose code ended
        at once) is not waited for: it ends as soon as it could start. Whether the physics
        thread has ended."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5 if self.ready.is_set() else 0)
        return thread is None or not thread.is_alive()

    # ------------------------------------------------------------ the gripper's hooks
    def pinched(self, opening_mm: float) -> float | None:
        """Width in mm, along the closing axis, of an object both pads touch from the sides
        now (the closing fingers stop there), or None. ``opening_mm``: how far apart the
        fingers are; of several objects, the one nearest that width."""
        with self._lock:
            both = (self._touches[0] & self._touches[1]) - {self._held}
            if not both or self._hand is None:
                return None
            inv = np.linalg.inv(self._hand)
            widths = {}
            for name in both:
                local = inv @ self._poses[name]
                widths[name] = 1000.0 * float(np.abs(local[1, :3]) @ np.asarray(
                    self._objects[name].size))
            self._candidate = min(widths, key=lambda n: abs(widths[n] - opening_mm))
            return widths[self._candidate]

    def grasped(self) -> None:
        """The fingers stopped on what they pinch: it is welded to the hand from now on."""
        with self._lock:
            if self._candidate and self._hand is not None:
                self._held = self._want = self._candidate
                self._in_hand = np.linalg.inv(self._hand) @ self._poses[self._held]

    def released(self) -> None:
        """The fingers opened: what they held is let go (it falls)."""
        with self._lock:
            if self._held:
                self._held, self._want = "", ""

    # --------------------------------------------------------------------- reading
    @property
    def held(self) -> str:
        return self._held

    def bodies(self) -> list[Body]:
        """The table and every object where it is now."""
        with self._lock:
            return self._bodies()

    def _bodies(self) -> list[Body]:
        return [self.table] + [Body(o.name, o.size, o.rgba, self._poses[o.name].copy(), o.mass,
                                    o.friction) for o in self._objects.values()]

    def collisions(self) -> list[Collision]:
        with self._lock:
            return list(self._collisions)

    def snapshot(self) -> dict[str, Any]:
        """This world as a scene (Scene.from_dict), read at one instant: a dry run's
        private world starts here. ``collisions``: the log, oldest first, each
        {link, body, depth (m), at (this process's time.monotonic())}."""
        with self._lock:
            bodies, held = self._bodies(), self._held
            in_hand = (np.linalg.inv(self._hand) @ self._poses[held] if held and
                       self._hand is not None else self._in_hand)
            collisions = [c.to_dict() for c in self._collisions]
        scene = Scene(bodies[0], bodies[1:], held, in_hand.tolist() if held else None).to_dict()
        return {**scene, "collisions": collisions}

    # --------------------------------------------------------------------- physics
    def _run(self) -> None:
        try:
            engine: Engine | None = Engine(self._scene, self._robot_pose())
        except Exception as exc:  # noqa: BLE001 - no MuJoCo: objects stay, collisions work
            engine = None
            self.error = f"physics unavailable ({type(exc).__name__}: {exc})"
            self._log(f"tidybot-sim: {self.error}")
        self.ready.set()
        try:
            self._loop(engine)
        except Exception as exc:  # noqa: BLE001 - a bug: say so; the servers go on
            self.error = f"physics stopped ({type(exc).__name__}: {exc})"
            self._log(f"tidybot-sim: {self.error}")
            raise

    def _loop(self, engine: Engine | None) -> None:
        """Every PERIOD_S: the arm against the static world, then the physics for the time
        that passed (with the robot moved there), its reading published; asleep, only
        the robot is watched every IDLE_PERIOD_S."""
        last, owed, settled, before = time.monotonic(), 0.0, 0.0, None
        period = PERIOD_S
        while not self._stop.wait(period):
            now = time.monotonic()
            pose = self._robot_pose()
            self._check_static(pose, now)
            with self._lock:
                want, self._want = self._want, None
            moved = before is None or not (np.array_equal(pose.q, before.q) and np.array_equal(
                pose.base, before.base) and pose.gripper == before.gripper)
            before = pose
            if engine is None or not (moved or want is not None or settled < SETTLED_S):
                last, period = now, IDLE_PERIOD_S
                continue
            owed += now - last
            last, period = now, PERIOD_S
            steps = min(int(owed / DT_S), MAX_STEPS)
            owed = owed - steps * DT_S if steps < MAX_STEPS else 0.0
            if want:
                engine.hold(want)
            elif want is not None:
                engine.let_go()
            engine.advance(steps, pose)
            reading = engine.read()
            settled = settled + steps * DT_S if reading.at_rest and not moved else 0.0
            with self._lock:
                self._poses, self._hand = reading.poses, reading.hand
                self._touches = reading.touches
            if self._arm is not None:
                R = col.arm_base_in_odom(pose.base)[:3, :3]
                self._arm.feel(np.concatenate([R.T @ reading.wrench[:3],
                                               R.T @ reading.wrench[3:]]))

    def _check_static(self, pose: Pose, now: float) -> None:
        """A collision of the arm with the static world: the arm's reflex, and the log."""
        if self._arm is None:
            return
        hits, stop = self._static.check(np.asarray(pose.q), np.asarray(pose.base),
                                        self._arm.in_reflex(), now)
        if hits and self._arm.collide(hits[0].why(), stop):
            with self._lock:
                self._collisions.extend(hits)
            for hit in hits:
                self._log(f"tidybot-sim: {hit.why()}")
