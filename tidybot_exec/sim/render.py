"""Offscreen 3-D rendering of the simulator's world with MuJoCo: colour and depth.

The MJCF model is built here from the project's URDF (its primitive visuals, its joints),
the scene's table and objects (mocap bodies, placed each frame) and the camera mounts of
robot_model.MOUNTS; this model only renders — the robot's motion comes from the simulated
servers, the objects' poses from the world's physics (physics.py, its own model). OpenGL
runs through EGL (Mesa's llvmpipe on a machine without a GPU); the context belongs to the
thread that created the renderer, so one thread renders.
"""
from __future__ import annotations

import os

import numpy as np

from tidybot_exec.cameras.robot_model import (MOUNTS, ROOT_LINK, CameraMount, RobotModel,
                                              robot_model)

from .physics import Pose, import_mujoco
from .world import Body

__all__ = ["Pose", "Renderer", "describe_gl_failure", "mjcf"]

MAX_RANGE_M = 10.0          # depth beyond this (the background) is "no reading"
_OPTICAL_TO_GL = np.diag([1.0, -1.0, -1.0])      # optical (z forward, y down) -> GL camera


def _frame(T: np.ndarray) -> str:
    """A pose as MJCF attributes (the rotation by its x and y axes)."""
    numbers = lambda values: " ".join(f"{v:.9g}" for v in values)  # noqa: E731
    return f'pos="{numbers(T[:3, 3])}" xyaxes="{numbers(T[:3, 0])} {numbers(T[:3, 1])}"'


def _rgba(rgba) -> str:
    return " ".join(f"{v:g}" for v in rgba)


def mjcf(model: RobotModel, bodies: list[Body], mounts: dict[str, CameraMount],
         width: int, height: int) -> str:
    """The world as MJCF: the robot on a planar base joint, the table, the objects."""
    children: dict[str, list] = {}
    for j in model.joints:
        children.setdefault(j.parent, []).append(j)

    def link(name: str) -> str:
        parts = []
        for v in model.visuals.get(name, []):
            size = (" ".join(f"{s / 2:g}" for s in v.size) if v.kind == "box"
                    else f"{v.size[0]:g} {v.size[1] / 2:g}")
            parts.append(f'<geom type="{v.kind}" size="{size}" {_frame(v.origin)} '
                         f'rgba="{_rgba(v.rgba)}" contype="0" conaffinity="0" mass="0.1"/>')
        for mount in mounts.values():
            if mount.link == name:
                T = mount.optical.copy()
                T[:3, :3] = T[:3, :3] @ _OPTICAL_TO_GL
                parts.append(f'<camera name="{mount.name}" {_frame(T)} fovy="{mount.fovy_deg:g}"/>')
        for j in children.get(name, []):
            joint = (f'<joint name="{j.name}" type="hinge" axis="{_rgba(j.axis)}"/>'
                     if j.kind == "revolute" else "")
            parts.append(f'<body name="{j.child}" {_frame(j.origin)}>{joint}{link(j.child)}</body>')
        return "".join(parts)

    table, objects = bodies[0], bodies[1:]
    objs = "".join(f'<body name="obj_{o.name}" mocap="true"><geom type="box" size="'
                   f'{" ".join(f"{s / 2:g}" for s in o.size)}" rgba="{_rgba(o.rgba)}" '
                   f'contype="0" conaffinity="0"/></body>' for o in objects)
    return f"""<mujoco model="tidybot_world">
  <visual><global offwidth="{width}" offheight="{height}"/>
    <map znear="0.01" zfar="50"/><headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5"/></visual>
  <asset><texture name="grid" type="2d" builtin="checker" rgb1="0.75 0.75 0.72"
    rgb2="0.65 0.65 0.62" width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="8 8"/></asset>
  <worldbody>
    <light directional="true" pos="0 0 4" dir="0.3 0.2 -1" castshadow="false"/>
    <geom name="floor" type="plane" size="6 6 0.1" material="grid" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{" ".join(f"{s / 2:g}" for s in table.size)}"
      {_frame(table.pose)} rgba="{_rgba(table.rgba)}" contype="0" conaffinity="0"/>
    <body name="{ROOT_LINK}">
      <joint name="base_x" type="slide" axis="1 0 0"/><joint name="base_y" type="slide" axis="0 1 0"/>
      <joint name="base_theta" type="hinge" axis="0 0 1"/>
      {link(ROOT_LINK)}
    </body>
    {objs}
  </worldbody>
</mujoco>"""


class Renderer:
    """Renders each camera of MOUNTS at width × height. Build and use it in one thread."""

    def __init__(self, bodies: list[Body], width: int, height: int) -> None:
        self._mj = mujoco = import_mujoco()
        self.width, self.height = width, height
        self.names = [b.name for b in bodies[1:]]
        self.model = mujoco.MjModel.from_xml_string(
            mjcf(robot_model(), bodies, MOUNTS, width, height))
        self.data = mujoco.MjData(self.model)
        self._qadr = {self.model.joint(i).name: int(self.model.jnt_qposadr[i])
                      for i in range(self.model.njnt)}
        self._mocap = {name: int(self.model.body_mocapid[self.model.body(f"obj_{name}").id])
                       for name in self.names}
        self._renderer = mujoco.Renderer(self.model, height, width)

    def place(self, pose: Pose, bodies: list[Body]) -> None:
        """Put the robot and the objects where they are now."""
        mj, d, adr = self._mj, self.data, self._qadr
        d.qpos[adr["base_x"]], d.qpos[adr["base_y"]], d.qpos[adr["base_theta"]] = pose.base
        for i, v in enumerate(pose.q):
            d.qpos[adr[f"panda_joint{i + 1}"]] = v
        if "finger_joint" in adr:
            d.qpos[adr["finger_joint"]] = 0.8 * pose.gripper / 255.0
        for b in bodies[1:]:
            if b.name in self._mocap:
                i = self._mocap[b.name]
                d.mocap_pos[i] = b.pose[:3, 3]
                q = np.zeros(4)
                mj.mju_mat2Quat(q, b.pose[:3, :3].flatten())
                d.mocap_quat[i] = q
        mj.mj_kinematics(self.model, d)
        mj.mj_camlight(self.model, d)

    def render(self, camera: str, depth: bool) -> np.ndarray:
        """Colour (H, W, 3) uint8, or depth (H, W) float32 in metres with 0 for no reading."""
        r = self._renderer
        if depth:
            r.enable_depth_rendering()
        try:
            r.update_scene(self.data, camera=camera)
            flags = r.scene.flags
            flags[self._mj.mjtRndFlag.mjRND_SHADOW] = flags[self._mj.mjtRndFlag.mjRND_REFLECTION] = 0
            image = r.render()
        finally:
            if depth:
                r.disable_depth_rendering()
        if depth:
            image = np.where(image < MAX_RANGE_M, image, 0.0).astype(np.float32)
        return image

    def close(self) -> None:
        self._renderer.close()


def describe_gl_failure(exc: BaseException) -> str:
    """Why offscreen rendering is unavailable, for the log, diagnostics and the SDK."""
    return (f"offscreen rendering is unavailable ({type(exc).__name__}: {exc}); "
            f"MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')} needs libEGL (Mesa: libegl1, "
            f"libgl1-mesa-dri)")

