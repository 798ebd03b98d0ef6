"""Safety limits: checked before any motion starts; a violation raises SafetyError.

The executor passes the node's limits to the child process (see config.py); they are
read-only while code runs. Nothing is ever clamped silently: a command outside the
envelope is refused with a message that says which limit and what would be allowed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from . import kinematics as kin
from .errors import ArmSafetyError, BaseSafetyError, GripperSafetyError

Box = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class SafetyLimits:
    """The lab's envelope (well inside the hardware's). A motion that starts outside the
    end-effector box (an arm at rest a hair into the floor) may lead back in, on no axis
    farther out than where it starts."""

    joint_min: tuple[float, ...] = tuple(map(float, kin.Q_MIN))   # rad
    joint_max: tuple[float, ...] = tuple(map(float, kin.Q_MAX))   # rad
    joint_speed: float = 1.0                                   # rad/s, every joint
    cartesian_speed: float = 0.25                              # m/s, end effector
    cartesian_angular_speed: float = 1.0                       # rad/s, end effector
    ee_box: Box = ((-0.2, 0.9), (-0.7, 0.7), (0.02, 1.2))      # m, arm base frame (x, y, z)
    base_speed: float = 0.5                                    # m/s
    base_angular_speed: float = 1.57                           # rad/s
    base_box: Box = ((-5.0, 5.0), (-5.0, 5.0))                 # m, odometry frame (x, y)
    gripper_max_force: int = 150                               # Robotiq force byte (0..255)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SafetyLimits":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown safety limits: {', '.join(sorted(unknown))}")
        tupled = {k: tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in val)
                  if isinstance(val, (list, tuple)) else val for k, val in data.items()}
        return cls(**tupled)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # ---------------------------------------------------------------- arm
    def check_joints(self, q: Sequence[float], what: str = "target") -> None:
        for i, (v, lo, hi) in enumerate(zip(q, self.joint_min, self.joint_max)):
            if not lo <= v <= hi:
                raise ArmSafetyError(
                    f"joint {i + 1} {what} {v:.4f} rad is outside its limit [{lo:.4f}, {hi:.4f}]; "
                    f"choose a value inside it")

    def check_ee_position(self, p: Sequence[float], what: str = "end-effector target",
                          now: Sequence[float] | None = None) -> None:
        """``p`` must lie in the workspace box or, when ``now`` (where the end effector is)
        is given, on no axis farther outside it than ``now``: an arm that came to rest just
        outside (pressed a hair into the floor) can move back in, never farther out."""
        for i, (axis, v, (lo, hi)) in enumerate(zip("xyz", p, self.ee_box)):
            allowed = 0.0 if now is None else max(lo - now[i], now[i] - hi, 0.0)
            if max(lo - v, v - hi) > allowed:
                raise ArmSafetyError(
                    f"{what} {axis}={v:.4f} m is outside the workspace box {axis} in "
                    f"[{lo:.3f}, {hi:.3f}] m (arm base frame)"
                    + (f" and farther out than the end effector is now ({now[i]:.4f} m)"
                       if allowed else ""))

    def check_joint_speed(self, peak: float, duration: float) -> None:
        if peak > self.joint_speed + 1e-9:
            need = duration * peak / self.joint_speed
            raise ArmSafetyError(
                f"moving in {duration:.2f}s needs {peak:.2f} rad/s, above the joint speed cap "
                f"{self.joint_speed:g} rad/s; use duration >= {need:.2f}s or leave duration unset")

    def check_cartesian_speed(self, peak: float, peak_angular: float, duration: float) -> None:
        if peak > self.cartesian_speed + 1e-9 or peak_angular > self.cartesian_angular_speed + 1e-9:
            need = duration * max(peak / self.cartesian_speed,
                                  peak_angular / self.cartesian_angular_speed)
            raise ArmSafetyError(
                f"moving in {duration:.2f}s needs {peak:.3f} m/s and {peak_angular:.2f} rad/s, above "
                f"the caps {self.cartesian_speed:g} m/s / {self.cartesian_angular_speed:g} rad/s; "
                f"use duration >= {need:.2f}s or leave duration unset")

    # --------------------------------------------------------------- base
    def check_base_position(self, x: float, y: float) -> None:
        for axis, v, (lo, hi) in zip("xy", (x, y), self.base_box):
            if not lo <= v <= hi:
                raise BaseSafetyError(
                    f"base target {axis}={v:.3f} m is outside the base workspace {axis} in "
                    f"[{lo:.3f}, {hi:.3f}] m (odometry frame)")

    def check_base_velocity(self, vx: float, vy: float, wz: float) -> None:
        if math.hypot(vx, vy) > self.base_speed + 1e-9 or abs(wz) > self.base_angular_speed + 1e-9:
            raise BaseSafetyError(
                f"base velocity ({vx:.3f}, {vy:.3f}) m/s, {wz:.3f} rad/s exceeds the caps "
                f"{self.base_speed:g} m/s and {self.base_angular_speed:g} rad/s")

    # ------------------------------------------------------------ gripper
    def check_gripper_force(self, force: int) -> None:
        if force > self.gripper_max_force:
            raise GripperSafetyError(
                f"gripper force {force} is above the cap {self.gripper_max_force} "
                f"(0..255 scale); pass force <= {self.gripper_max_force}")


def finite(values: Sequence[float], name: str, n: int, error: type[Exception]) -> np.ndarray:
    """``values`` as a float array of length n; ``error`` unless they are n finite numbers."""
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise error(f"{name} must be {n} numbers, got {values!r}") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise error(f"{name} must be {n} finite numbers, got {values!r}")
    return arr


DEFAULT_LIMITS = SafetyLimits()
