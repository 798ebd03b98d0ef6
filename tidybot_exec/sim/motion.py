"""Rate- and acceleration-limited tracking, shared by the simulated arm joints and base axes."""
from __future__ import annotations

import numpy as np


def track_position(x: np.ndarray, v: np.ndarray, target: np.ndarray, v_max: np.ndarray,
                   a_max: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """One step towards ``target`` with |v| <= v_max and |dv/dt| <= a_max per axis.

    The velocity wanted is the fastest from which the axis can still brake to rest at the
    target (sqrt(2 a |e|)), so it arrives without overshoot (to within one step).
    """
    err = target - x
    v_want = np.sign(err) * np.minimum(v_max, np.sqrt(2.0 * a_max * np.abs(err)))
    # close enough to stop within this step: land on the target
    v_want = np.where(np.abs(err) <= np.abs(v_want) * dt, err / dt, v_want)
    return integrate(x, v, v_want, a_max, dt)


def brake(x: np.ndarray, v: np.ndarray, a_max: np.ndarray, dt: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """One step of braking at ``a_max`` per axis: only ever slower, never reversing (a
    tracker aimed at the rest point re-accelerates after a late step braked too hard)."""
    v_new = v - np.sign(v) * np.minimum(np.abs(v), a_max * dt)
    return x + 0.5 * (v + v_new) * dt, v_new


def track_velocity(x: np.ndarray, v: np.ndarray, v_target: np.ndarray, a_max: np.ndarray,
                   dt: float) -> tuple[np.ndarray, np.ndarray]:
    """One step towards velocity ``v_target`` with |dv/dt| <= a_max."""
    return integrate(x, v, v_target, a_max, dt)


def integrate(x: np.ndarray, v: np.ndarray, v_want: np.ndarray, a_max: np.ndarray,
              dt: float) -> tuple[np.ndarray, np.ndarray]:
    dv = np.clip(v_want - v, -a_max * dt, a_max * dt)
    v_new = v + dv
    return x + 0.5 * (v + v_new) * dt, v_new
