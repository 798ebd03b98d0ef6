"""Franka Panda kinematics: forward kinematics to O_T_EE, Jacobian and a robust numerical IK.

Uses the modified (Craig) DH parameters published by Franka Robotics and the Franka Hand's
default end-effector frame (103.4 mm along the flange z axis, rotated -45 deg about it), so
``fk(q)`` matches libfranka's ``O_T_EE`` with the hand mounted. Pure numpy; shared by the
SDK (safety checks, frame helpers) and the simulator (state, cartesian modes).
"""
from __future__ import annotations

import math

import numpy as np

# a_{i-1}, d_i, alpha_{i-1} for joints 1..7 and the flange.
DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0])
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107])
DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0.0])

Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
DQ_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])        # rad/s, hardware
DDQ_MAX = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])              # rad/s^2, hardware
HOME_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def _hand_frame(offset_m: float = 0.1034) -> np.ndarray:
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, offset_m], [0, 0, 0, 1.0]])


F_T_EE = _hand_frame()


def _link(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([[ct, -st, 0.0, a],
                     [st * ca, ct * ca, -sa, -d * sa],
                     [st * sa, ct * sa, ca, d * ca],
                     [0.0, 0.0, 0.0, 1.0]])


def frames(q: np.ndarray) -> list[np.ndarray]:
    """Base-frame transforms of joint frames 1..7, the flange and the end effector."""
    out, T = [], np.eye(4)
    for i in range(8):
        T = T @ _link(DH_A[i], DH_D[i], DH_ALPHA[i], float(q[i]) if i < 7 else 0.0)
        out.append(T)
    out.append(T @ F_T_EE)
    return out


def fk(q) -> np.ndarray:
    """4x4 pose of the end effector in the arm base frame (libfranka's O_T_EE)."""
    return frames(np.asarray(q, dtype=float))[-1]


def jacobian(q) -> np.ndarray:
    """6x7 geometric Jacobian of the end effector (linear rows first), base frame."""
    return frames_jacobian(frames(np.asarray(q, dtype=float)))


def frames_jacobian(fs: list[np.ndarray]) -> np.ndarray:
    """``jacobian`` from the frames already computed (``frames``): the guard's IK has them.
    One cross product for all joints: the IK (and so the simulator's cartesian mode) calls
    this every iteration, and seven small np.cross calls cost ~4x as much."""
    F = np.asarray(fs[:7])
    z = F[:, :3, 2]
    return np.vstack([np.cross(z, fs[-1][:3, 3] - F[:, :3, 3]).T, z.T])


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Axis-angle vector (base frame) that rotates R onto R_target."""
    R_err = R_target @ R.T
    cos = max(-1.0, min(1.0, (np.trace(R_err) - 1.0) / 2.0))
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([R_err[2, 1] - R_err[1, 2], R_err[0, 2] - R_err[2, 0], R_err[1, 0] - R_err[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # angle ~ pi: take the axis from the symmetric part
        sym = (R_err + np.eye(3)) / 2.0
        axis = sym[:, int(np.argmax(np.diag(sym)))]
        return angle * axis / np.linalg.norm(axis)
    return angle * axis / norm


def pose_error(T_target: np.ndarray, T: np.ndarray) -> np.ndarray:
    """6-vector (position error m, rotation error rad) from T to T_target."""
    return np.concatenate([T_target[:3, 3] - T[:3, 3], rotation_error(T_target[:3, :3], T[:3, :3])])


def ik(T_target: np.ndarray, q_seed, *, tol_m: float = 1e-5, tol_rad: float = 1e-4,
       max_iter: int = 100, restarts: int = 24, rng: np.random.Generator | None = None
       ) -> np.ndarray | None:
    """Joint angles within the Panda limits that reach ``T_target``, or None.

    Levenberg-Marquardt from ``q_seed`` (the nearest solution is preferred, so the arm
    does not flip configuration), then from random seeds when that gets stuck.
    """
    rng = rng or np.random.default_rng(0)
    seed = np.clip(np.asarray(q_seed, dtype=float), Q_MIN, Q_MAX)
    for attempt in range(restarts + 1):
        q = seed if attempt == 0 else rng.uniform(Q_MIN, Q_MAX)
        err = pose_error(T_target, fk(q))
        lam = 1e-2
        for _ in range(max_iter):
            if np.linalg.norm(err[:3]) < tol_m and np.linalg.norm(err[3:]) < tol_rad:
                return q
            # Levenberg-Marquardt: damp more after a step that did not help, less after one that did
            J = jacobian(q)
            step = J.T @ np.linalg.solve(J @ J.T + lam * np.eye(6), err)
            step /= max(1.0, np.max(np.abs(step)) / 0.3)    # at most 0.3 rad per iteration
            q_new = np.clip(q + step, Q_MIN, Q_MAX)
            err_new = pose_error(T_target, fk(q_new))
            if np.linalg.norm(err_new) < np.linalg.norm(err):
                q, err, lam = q_new, err_new, max(lam * 0.3, 1e-7)
            else:
                lam = min(lam * 4.0, 1e3)
    return None


def matrix_from_column_major(pose16) -> np.ndarray:
    """4x4 matrix from libfranka's 16-element column-major list."""
    return np.asarray(pose16, dtype=float).reshape(4, 4).T


def column_major(T: np.ndarray) -> list[float]:
    """libfranka's 16-element column-major list from a 4x4 matrix."""
    return [float(v) for v in np.asarray(T).T.reshape(16)]


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll) (fixed-axis XYZ, as the predecessor's SDK)."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_to_rpy(R: np.ndarray) -> tuple[float, float, float]:
    """Inverse of rpy_to_matrix (pitch in [-pi/2, pi/2])."""
    pitch = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    if abs(math.cos(pitch)) < 1e-9:  # gimbal lock: put all of it in yaw
        return 0.0, pitch, math.atan2(-R[0, 1], R[1, 1])
    return math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])


def wrap_angle(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi
