"""The simulator's physics: MuJoCo with gravity, contact and friction (DESIGN §12.2).

``Engine`` is the MuJoCo model of one scene. The table and the floor are static; the
objects are free bodies (mass, friction from the scene). The robot is kinematic: its
collision geometry — tidybot_sdk.collision's capsules for the arm links, the hand and the
two fingers, and its boxes for the base and the mast — rides on heavy free bodies whose
pose and velocity every step sets where the arm, gripper and base servers have the robot
(moving at a constant velocity across a batch of steps), so it pushes what it sweeps and
nothing pushes it back. (Not mocap bodies: MuJoCo gives those no velocity, and a pushed
cube chattered ahead of the hand while a held one lagged 6 mm behind it at the speed
caps; 0.4 mm this way.) The fingers stand apart by the gripper's opening. A grasp is a
weld of the object to the hand, switched on when both pads touch it (world.py decides
when) and off when the gripper opens: the object then falls and comes to rest. The
robot's geoms collide with objects only; its contacts with the static world are
``StaticContacts``' business (the arm's reflex).

``StaticContacts`` is that rule: the arm's capsules against the table, the floor and the
robot's own base and mast, with tidybot_sdk.collision (the guard's and the SDK's own
model and distances, so a motion those admit with their margin never trips it, and the
bodies are named alike). A new contact, or one grown deeper, is a collision.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tidybot_sdk import collision as col
from tidybot_sdk import kinematics as kin

from .gripper import stroke_mm

if TYPE_CHECKING:
    from .world import Scene

DT_S = 0.002                  # physics time step
PAD_MARGIN_M = 0.002          # a pad "touches" what is this close (no force until contact)
SIDE_COS = 0.5                # a pad's touch counts for a grasp when its normal is this
                              # close to the closing axis (not the fingertips on a top face)
DEEPER_M = 0.001              # a contact kept through a restart may deepen this much
BISECTIONS = 6                # where a contact began, to 1/64 of the last look's way
REST_SPEED = 1e-3             # m/s and rad/s: an object slower than this is at rest
WELD_SOLREF = "0.004 1"       # the grasp's weld: stiff (2 steps), critically damped
ROBOT_MASS_KG = 1000.0        # the robot's bodies (kinematic: their motion is set each step)

# contype/conaffinity bits: static world, objects, robot. Objects collide with everything;
# the robot only with objects (its contacts with the static world are StaticContacts').
_STATIC = 'contype="1" conaffinity="1"'
_OBJECT = 'contype="1" conaffinity="3"'
_ROBOT = 'contype="2" conaffinity="0"'
_ARM = [c for c in col.CAPSULES if not c.link.endswith("finger")]
_FINGERS = [c for c in col.CAPSULES if c.link.endswith("finger")]
_FRAMES = sorted({c.frame for c in _ARM})          # kinematics.frames indices with geometry
HAND_FRAME = 8                                     # the end effector (O_T_EE)
HAND_BODIES = ("hand", *(c.link for c in _FINGERS))   # what ee_wrench feels
_FRAME_BODIES = ["hand" if f == HAND_FRAME else f"frame{f}" for f in _FRAMES]
_ROBOT_BODIES = [*_FRAME_BODIES, *HAND_BODIES[1:], "base"]   # robot_frames' order


@dataclass
class Pose:
    """Where the robot is: joints, base (x, y, θ in the odometry frame), gripper byte."""

    q: np.ndarray
    base: np.ndarray
    gripper: float


@dataclass(frozen=True)
class Collision:
    """An arm link touching something static, ``depth`` (m) deep, at ``at`` (monotonic)."""

    link: str
    body: str
    depth: float
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "body": self.body, "depth": round(self.depth, 4),
                "at": self.at}

    def why(self) -> str:
        """The arm's ``last_error``."""
        return f"collision: {self.link} hit {self.body}, {self.depth:.3f} m deep"


class StaticContacts:
    """Decides when the arm collides with the static world. A contact present when the
    arm starts, or while it is in reflex (where it stopped), may stay and lessen but not
    deepen by more than DEEPER_M: the arm can be recovered and moved out.

    The arm is looked at every few ms, and a late look (a loaded machine) may find it
    deeper than where it first touched: ``check`` then bisects the joints between the
    last look without a collision and now for where the contact began, and the arm is
    stopped there, as a real arm's reflex stops it at the contact."""

    def __init__(self, table: col.Box | None) -> None:
        self._boxes = [table] if table is not None else []
        self._allowed: dict[tuple[str, str], float] | None = None   # None: not yet looked
        self._last: tuple[bytes, bytes, bool] | None = None
        self._clear = np.zeros(7)              # the joints at the last look without one

    def check(self, q: np.ndarray, base: np.ndarray, in_reflex: bool,
              now: float) -> tuple[list[Collision], np.ndarray]:
        """The collisions of the arm at ``q`` (base at ``base``), deepest first, and the
        joints where the arm is to stop (where it first touched, or ``q``)."""
        key = (q.tobytes(), base.tobytes(), in_reflex)
        if key == self._last:
            return [], q                                  # nothing moved since the last look
        self._last = key
        found = self._near(q, base)
        if in_reflex or self._allowed is None:
            self._allowed = {(c.link, c.body): c.distance for c in found}
            self._clear = q.copy()
            return [], q
        if not any(map(self._new, found)):
            # moving out: it may not go back in (a pair leaves the allowance DEEPER_M out,
            # so that one resting at the surface does not collide by rounding)
            self._allowed = {(c.link, c.body): max(self._allowed[c.link, c.body], c.distance)
                             for c in found if (c.link, c.body) in self._allowed}
            self._clear = q.copy()
            return [], q
        stop = self._first_touch(q, base)
        if stop is not q:
            found = self._near(stop, base)
        hits = [Collision(c.link, c.body, -c.distance, now) for c in found if self._new(c)]
        self._allowed = {(c.link, c.body): c.distance for c in found}
        return hits, stop

    def _near(self, q: np.ndarray, base: np.ndarray) -> list[col.Contact]:
        return col.contacts(q, base, self._boxes, within=DEEPER_M)

    def _new(self, c: col.Contact) -> bool:
        """Whether ``c`` is a collision: a pair touching anew, or deeper than allowed."""
        before = self._allowed.get((c.link, c.body)) if self._allowed is not None else None
        return c.distance < 0.0 if before is None else c.distance < before - DEEPER_M

    def _collides(self, q: np.ndarray, base: np.ndarray) -> bool:
        return any(map(self._new, self._near(q, base)))

    def _first_touch(self, q: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The first joints on the way from the last clear look to ``q`` that collide
        (to 1/2^BISECTIONS of the way); ``q`` if the way starts in collision (the base,
        not the arm, moved it in)."""
        if self._collides(self._clear, base):
            return q
        lo, hi = 0.0, 1.0
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            if self._collides(self._clear + mid * (q - self._clear), base):
                hi = mid
            else:
                lo = mid
        return self._clear + hi * (q - self._clear)


@dataclass
class Reading:
    """What one batch of steps left: each object's pose, the hand's (EE) pose, the
    objects each pad touches from the side, the contact wrench on the hand and fingers
    (world frame: force, and torque about the EE), whether everything is at rest."""

    poses: dict[str, np.ndarray]
    hand: np.ndarray
    touches: tuple[frozenset[str], frozenset[str]]
    wrench: np.ndarray
    at_rest: bool


def _box(size, rgba=None) -> str:
    half = " ".join(f"{s / 2:.9g}" for s in size)
    return f'type="box" size="{half}"' + (f' rgba="{" ".join(map(str, rgba))}"' if rgba else "")


def _at(T: np.ndarray) -> str:
    p, R = T[:3, 3], T[:3, :3]
    return (f'pos="{" ".join(f"{v:.9g}" for v in p)}" '
            f'xyaxes="{" ".join(f"{v:.9g}" for v in (*R[:, 0], *R[:, 1]))}"')


def _capsule(c: col.Capsule, finger: bool = False) -> str:
    a, b = list(c.a), list(c.b)
    extra = ""
    if finger:      # its body stands where the opening puts it; a touch is seen PAD_MARGIN_M
        a[1] = b[1] = 0.0               # early, and pushes only on contact
        extra = f' margin="{PAD_MARGIN_M}" gap="{PAD_MARGIN_M}"'
    return (f'<geom name="{c.link}" type="capsule" fromto="{" ".join(f"{v:.9g}" for v in a + b)}" '
            f'size="{c.radius:g}" {_ROBOT}{extra}/>')


def mjcf(scene: "Scene") -> str:
    """The scene and the robot's collision geometry as MJCF."""
    def kinematic(name: str, geoms: str) -> str:
        """A robot body: free, but set every step (pose and velocity) as the servers move
        it; heavy, so that what it touches hardly moves it within a step."""
        return (f'<body name="{name}" gravcomp="1"><freejoint/><inertial pos="0 0 0" '
                f'mass="{ROBOT_MASS_KG}" diaginertia="{ROBOT_MASS_KG} {ROBOT_MASS_KG} '
                f'{ROBOT_MASS_KG}"/>{geoms}</body>')

    robot = [kinematic(name, "".join(_capsule(c) for c in _ARM if c.frame == f))
             for name, f in zip(_FRAME_BODIES, _FRAMES)]
    robot += [kinematic(c.link, _capsule(c, finger=True)) for c in _FINGERS]
    robot.append(kinematic("base", "".join(
        f'<geom name="{b.name}" {_box(b.size)} pos="{" ".join(map(str, b.center))}" '
        f'euler="0 0 {b.yaw}" {_ROBOT}/>' for b in col.ROBOT_BOXES)))
    objects = "".join(
        f'<body name="obj_{o.name}" {_at(o.pose)}><freejoint/><geom name="obj_{o.name}" '
        f'{_box(o.size)} mass="{o.mass:g}" friction="{o.friction:g} 0.005 0.0001" '
        f'priority="1" {_OBJECT}/></body>' for o in scene.objects)
    welds = "".join(f'<weld name="hold_{o.name}" body1="hand" body2="obj_{o.name}" '
                    f'active="false" solref="{WELD_SOLREF}"/>' for o in scene.objects)
    t = scene.table
    return f"""<mujoco model="tidybot_physics">
  <option timestep="{DT_S}"/>
  <worldbody>
    <geom name="the floor" type="plane" size="0 0 1" {_STATIC}/>
    <geom name="table" {_box(t.size)} {_at(t.pose)} {_STATIC}/>
    {"".join(robot)}
    {objects}
  </worldbody>
  <equality>{welds}</equality>
</mujoco>"""


def import_mujoco() -> Any:
    """MuJoCo, imported with its offscreen GL backend chosen first: it reads MUJOCO_GL
    once, when imported, and the cameras (render.py) render through EGL."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    import mujoco                                         # noqa: PLC0415 - heavy, on demand
    return mujoco


def _planar(base: np.ndarray) -> np.ndarray:
    x, y, theta = (float(v) for v in base)
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]])


def robot_frames(pose: Pose) -> list[np.ndarray]:
    """World poses of the robot's bodies (_ROBOT_BODIES): the arm's frames with geometry
    (the hand last of them), the two fingers, the base."""
    arm = col.arm_base_in_odom(pose.base)
    fs = kin.frames(np.asarray(pose.q, dtype=float))
    out = [arm @ fs[f] for f in _FRAMES]
    hand = arm @ fs[HAND_FRAME]
    half = stroke_mm(pose.gripper) / 2000.0
    for c in _FINGERS:
        shift = np.eye(4)
        shift[1, 3] = math.copysign(half + c.radius, c.a[1])
        out.append(hand @ shift)
    out.append(_planar(pose.base))
    return out


class Engine:
    """One scene's MuJoCo model and data; used by one thread (world.World's physics)."""

    def __init__(self, scene: "Scene", robot: Pose) -> None:
        self._mj = mujoco = import_mujoco()
        self.model = m = mujoco.MjModel.from_xml_string(mjcf(scene))
        self.data = d = mujoco.MjData(m)
        self.names = [o.name for o in scene.objects]
        self._body = {n: m.body(f"obj_{n}").id for n in self.names}
        self._weld = {n: m.equality(f"hold_{n}").id for n in self.names}
        self._geom_object = {m.geom(f"obj_{n}").id: n for n in self.names}
        self._pads = [m.geom(c.link).id for c in _FINGERS]
        self._hand = m.body("hand").id
        self._feel = [m.body(name).id for name in HAND_BODIES]
        self._free_dofs = np.concatenate([np.arange(m.jnt_dofadr[m.body_jntadr[b]],
                                                    m.jnt_dofadr[m.body_jntadr[b]] + 6)
                                          for b in self._body.values()]) if self.names else []
        self.held = ""
        robot_bodies = [m.body(b).id for b in _ROBOT_BODIES]
        self._qpos = np.array([np.arange(7) + m.jnt_qposadr[m.body_jntadr[b]]
                               for b in robot_bodies])
        self._qvel = np.array([np.arange(6) + m.jnt_dofadr[m.body_jntadr[b]]
                               for b in robot_bodies])
        self._pos, self._quat = self._targets(robot)
        d.qpos[self._qpos] = np.hstack([self._pos, self._quat])
        mujoco.mj_forward(m, d)
        if scene.held in self._body and scene.held_in_hand is not None:
            self.hold(scene.held, np.asarray(scene.held_in_hand, dtype=float).reshape(4, 4))

    def _targets(self, robot: Pose) -> tuple[np.ndarray, np.ndarray]:
        frames = robot_frames(robot)
        quat = np.empty((len(frames), 4))
        for i, T in enumerate(frames):
            self._mj.mju_mat2Quat(quat[i], T[:3, :3].flatten())
        return np.array([T[:3, 3] for T in frames]), quat

    def hold(self, name: str, in_hand: np.ndarray | None = None) -> None:
        """Weld ``name`` to the hand where it is now (or at ``in_hand``, its pose in the
        hand frame); let go of anything else."""
        self.let_go()
        if in_hand is None:
            in_hand = np.linalg.inv(self._pose(self._hand)) @ self._pose(self._body[name])
        i = self._weld[name]
        self.model.eq_data[i][3:6] = in_hand[:3, 3]
        self._mj.mju_mat2Quat(self.model.eq_data[i][6:10], in_hand[:3, :3].flatten())
        self.data.eq_active[i] = 1
        self.held = name

    def let_go(self) -> None:
        if self.held:
            self.data.eq_active[self._weld[self.held]] = 0
            self.held = ""

    def advance(self, steps: int, robot: Pose) -> None:
        """``steps`` steps of DT_S with the robot moving at a constant velocity from where
        it was to ``robot`` (contacts and the weld see the robot's velocity)."""
        if steps <= 0:
            return
        mj, m, d = self._mj, self.model, self.data
        pos, quat = self._targets(robot)
        quat *= np.where(np.sum(quat * self._quat, axis=1) < 0.0, -1.0, 1.0)[:, None]
        span = steps * DT_S
        turn = np.empty((len(quat), 3))
        for i in range(len(quat)):                 # body-frame angular velocity
            mj.mju_subQuat(turn[i], quat[i], self._quat[i])
        qvel = np.hstack([(pos - self._pos) / span, turn / span])
        for k in range(steps):
            s = k / steps
            q = self._quat + s * (quat - self._quat)
            d.qpos[self._qpos] = np.hstack([self._pos + s * (pos - self._pos),
                                            q / np.linalg.norm(q, axis=1)[:, None]])
            d.qvel[self._qvel] = qvel
            mj.mj_step(m, d)
        self._pos, self._quat = pos, quat

    def _pose(self, body: int) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[body].reshape(3, 3)
        T[:3, 3] = self.data.xpos[body]
        return T

    def read(self) -> Reading:
        mj, m, d = self._mj, self.model, self.data
        hand = self._pose(self._hand)
        axis = hand[:3, 1]                                 # the fingers' closing axis
        touches: tuple[set[str], set[str]] = (set(), set())
        n = d.ncon
        for (g1, g2), frame in zip(d.contact.geom[:n], d.contact.frame[:n]):
            for pad, other in ((g1, g2), (g2, g1)):
                if pad in self._pads and other in self._geom_object \
                        and abs(float(frame[:3] @ axis)) >= SIDE_COS:
                    touches[self._pads.index(pad)].add(self._geom_object[other])
        mj.mj_rnePostConstraint(m, d)
        force, torque = np.zeros(3), np.zeros(3)
        for b in self._feel:                  # [torque at the body's subtree com, force]
            f = d.cfrc_ext[b]
            force += f[3:]
            torque += f[:3] + np.cross(d.subtree_com[m.body_rootid[b]] - hand[:3, 3], f[3:])
        speed = float(np.max(np.abs(d.qvel[self._free_dofs]))) if self.names else 0.0
        return Reading({n: self._pose(b) for n, b in self._body.items()}, hand,
                       (frozenset(touches[0]), frozenset(touches[1])),
                       np.concatenate([force, torque]), speed < REST_SPEED)
