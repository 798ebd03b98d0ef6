"""The path of a rewind: its plan and its driver (trusted side, no rclpy).

``plan`` (pure) picks the waypoints back to the target and times the path: it starts from
where the robot *is* (never a jump to a waypoint), runs the recorded waypoints backwards,
each segment at no more than ``SPEED_FRACTION`` of every speed cap (joints, end effector,
base; the measured motion keeps under half of each), with a ``RAMP_S`` ramp up and down. ``Rewinder`` drives a plan through a safety
guard's code-facing sockets with the SDK's own clients — the arm streamed at 50 Hz, the
base sent its pose at 10 Hz, the gripper moved once at the end when named — so every
setpoint passes the same checks as the code's (a refusal ends the rewind there, saying
so). It stops at once when cancelled; the caller then holds the robot.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tidybot_sdk import kinematics as kin
from tidybot_sdk.backend import Backend, in_reflex, reflex_reason
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import GripperError, TidybotError
from tidybot_sdk.gripper_api import command as gripper_command
from tidybot_sdk.limits import SafetyLimits
from tidybot_sdk.protocol import ARM_HOLD_AFTER_S, ArmMsg, BaseMsg, ControlMode, GripperMsg
from tidybot_sdk.streaming import Pacer

from tidybot_exec.guard.recorder import Waypoint
from tidybot_exec.guard.relay import Guard

TARGETS = ("start", "execution", "steps", "fraction", "safe")
PARTS = ("arm", "base", "gripper")
DEFAULT_PARTS = ("arm", "base")        # never the gripper unless named: it would drop what it holds
SPEED_FRACTION = 0.45                  # of each speed cap, planned: the measured motion keeps
                                       # under half (tracking adds ~0.04; bench/rewind.py)
RAMP_S = 0.3                           # speed ramps up and down over this
STREAM_HZ = 50.0
BASE_EVERY = 5                         # ticks between base pose targets (10 Hz)
ARRIVED_RAD = 0.01                     # arm: every joint this close to the target waypoint
ARRIVED_M = 0.01                       # base: this close in x, y
ARRIVED_BASE_RAD = 0.02
SETTLE_S = 5.0                         # after the path: how long the robot may take to arrive
HAND_PIECES = 4                        # a segment's hand path is measured in this many pieces
GRIPPER_FORCE = 100                    # as the SDK's default


@dataclass(frozen=True)
class RewindRequest:
    target: str = "start"
    amount: float = 0.0
    parts: tuple[str, ...] = DEFAULT_PARTS
    dry_run: bool = False
    execution_id: str = ""          # target "execution": this one's start (on_failure), not the last

    @classmethod
    def checked(cls, target: str, amount: float, parts: Sequence[str], dry_run: bool
                ) -> "RewindRequest | str":
        """The request, or why it is invalid."""
        target = target.strip() or "start"
        if target not in TARGETS:
            return f"unknown target {target!r}: one of {', '.join(TARGETS)}"
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            return f"unknown parts {unknown}: a subset of {', '.join(PARTS)}"
        if not math.isfinite(amount):
            return f"amount must be a finite number, got {amount!r}"
        if target == "steps" and (amount < 1 or amount != int(amount)):
            return f"steps needs a whole amount >= 1 (waypoints back), got {amount:g}"
        if target == "fraction" and not 0 < amount <= 1:
            return f"fraction needs an amount in (0, 1] (of the lease's trajectory), got {amount:g}"
        return cls(target, amount, tuple(dict.fromkeys(parts)) or DEFAULT_PARTS, dry_run)


@dataclass
class Outcome:
    success: bool
    message: str
    waypoints: int = 0                  # waypoints the path went through
    duration_s: float = 0.0
    canceled: bool = False
    keep: int = 0                       # waypoints of the trajectory still ahead of the robot


@dataclass
class Plan:
    """The path back: knots[0] is where the robot is, knots[-1] the target waypoint."""

    request: RewindRequest
    knots: list[Waypoint]
    times: np.ndarray                   # nominal time of each knot (at the reduced speed)
    first_kept: int                     # index in the trajectory of the target waypoint
    gripper: int | None = None          # where the gripper goes at the end (when named)
    ramp_s: float = field(default=RAMP_S)

    @property
    def waypoints(self) -> int:
        return len(self.knots) - 1

    @property
    def nominal_s(self) -> float:
        return float(self.times[-1])

    @property
    def duration_s(self) -> float:
        """Estimated: the path, its ramps (a short one is a triangle) and no settling."""
        d = self.nominal_s
        return 0.0 if d <= 0 else (d + self.ramp_s if d >= self.ramp_s else 2 * math.sqrt(d * self.ramp_s))

    def progress(self, t: float) -> float:
        """Nominal time reached at wall time ``t``: the speed ramps linearly to full over
        ``ramp_s`` (or as far as a short path allows) and back down."""
        d, r = self.nominal_s, self.ramp_s
        if d <= 0:
            return 0.0
        a = min(r, math.sqrt(d * r))            # ramp duration
        peak = a / r
        cruise = (d - peak * a) / peak
        total = 2 * a + cruise
        if t <= a:
            return peak * t * t / (2 * a)
        if t <= a + cruise:
            return peak * a / 2 + peak * (t - a)
        return d - peak * max(0.0, total - t) ** 2 / (2 * a) if t < total else d

    def at(self, tau: float) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """(arm joints, base pose, knots passed) at nominal time ``tau``."""
        j = int(np.searchsorted(self.times, tau, side="right")) - 1
        if j >= len(self.knots) - 1:
            last = self.knots[-1]
            return _arr(last.q), _base(last.base), len(self.knots) - 1
        a, b = self.knots[j], self.knots[j + 1]
        span = self.times[j + 1] - self.times[j]
        f = 0.0 if span <= 0 else (tau - self.times[j]) / span
        q = None if a.q is None else _arr(a.q) + f * (_arr(b.q) - _arr(a.q))
        base = None
        if a.base is not None:
            delta = _base(b.base) - _base(a.base)
            delta[2] = kin.wrap_angle(delta[2])
            base = _base(a.base) + f * delta
            base[2] = kin.wrap_angle(base[2])
        return q, base, j


def _arr(v: Sequence[float] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=float)


def _base(v: Sequence[float] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, dtype=float).copy()


def inside(w: Waypoint, limits: SafetyLimits, parts: Sequence[str]) -> bool:
    """Whether ``w`` lies inside the limits for ``parts`` (the "safe" target)."""
    try:
        if "arm" in parts and w.q is not None:
            limits.check_joints(w.q)
            limits.check_ee_position(kin.fk(np.asarray(w.q))[:3, 3])
        if "base" in parts and w.base is not None:
            limits.check_base_position(w.base[0], w.base[1])
    except TidybotError:
        return False
    return True


def plan(trajectory: Sequence[Waypoint], here: Waypoint, request: RewindRequest,
         limits: SafetyLimits) -> Plan | str:
    """The path from ``here`` back along ``trajectory`` (oldest first) to the request's
    target, or why there is none."""
    n = len(trajectory)
    if n == 0:
        return "nothing recorded under this lease yet"
    moving = [p for p in request.parts if p != "gripper"]
    for part, attr in (("arm", "q"), ("base", "base")):
        if part in moving and (getattr(here, attr) is None or any(
                getattr(w, attr) is None for w in trajectory)):
            return f"no {part} state was recorded: is the {part} backend running?"
    if request.target == "start":
        first = 0
    elif request.target == "execution":
        starts = [i for i, w in enumerate(trajectory) if w.mark == "execution" and (
            not request.execution_id or w.execution == request.execution_id)]
        if not starts:
            return (f"the start of execution {request.execution_id} is no longer recorded "
                    f"(rewound past it)" if request.execution_id
                    else "no execution has run under this lease yet")
        first = starts[-1]
    elif request.target == "steps":
        first = max(0, n - 1 - int(request.amount))
    elif request.target == "fraction":
        first = max(0, min(n - 1, round((n - 1) * (1.0 - request.amount))))
    else:
        safe = [i for i, w in enumerate(trajectory) if inside(w, limits, moving)]
        if not safe:
            return "no recorded waypoint lies inside the current limits"
        first = safe[-1]
    knots = [here, *reversed(trajectory[first:])]
    strip = lambda w: Waypoint(w.t, w.q if "arm" in moving else None,  # noqa: E731
                               w.base if "base" in moving else None, None, w.lease, w.execution, w.mark)
    knots = [strip(w) for w in knots]
    times = np.zeros(len(knots))
    for i in range(1, len(knots)):
        times[i] = times[i - 1] + _segment_s(knots[i - 1], knots[i], limits)
    gripper = trajectory[first].gripper if "gripper" in request.parts else None
    if "gripper" in request.parts and gripper is None:
        return "no gripper state was recorded: is the gripper backend running?"
    return Plan(request, knots, times, first, gripper)


def _segment_s(a: Waypoint, b: Waypoint, limits: SafetyLimits) -> float:
    """Time for a -> b at SPEED_FRACTION of every cap it touches."""
    f = SPEED_FRACTION
    need = [0.0]
    if a.q is not None:
        qa, qb = _arr(a.q), _arr(b.q)
        need.append(float(np.max(np.abs(qb - qa))) / (f * limits.joint_speed))
        # the hand moves on a curve between two joint waypoints: measure it in pieces
        poses = [kin.fk(qa + s * (qb - qa)) for s in np.linspace(0.0, 1.0, HAND_PIECES + 1)]
        need.append(sum(float(np.linalg.norm(B[:3, 3] - A[:3, 3])) for A, B in zip(poses, poses[1:]))
                    / (f * limits.cartesian_speed))
        need.append(sum(float(np.linalg.norm(kin.rotation_error(B[:3, :3], A[:3, :3])))
                        for A, B in zip(poses, poses[1:])) / (f * limits.cartesian_angular_speed))
    if a.base is not None:
        need.append(math.hypot(b.base[0] - a.base[0], b.base[1] - a.base[1]) / (f * limits.base_speed))
        need.append(abs(kin.wrap_angle(b.base[2] - a.base[2])) / (f * limits.base_angular_speed))
    return max(need)


class Rewinder:
    """Drives plans through the guard whose code-facing ``endpoints`` it is given (the
    guard is the rewind's own, or the code's while the code waits)."""

    def __init__(self, endpoints: dict[str, dict[str, str]], refusals: Callable[[], int],
                 request_timeout_s: float = 2.0) -> None:
        self._backends = {name: Backend(name, endpoints[name], request_timeout_s, 0.5)
                          for name in PARTS}
        self._refusals = refusals

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()

    def run(self, plan: Plan, cancelled: threading.Event,
            progress: Callable[[float], None] = lambda fraction: None) -> Outcome:
        arm, base = self._backends["arm"], self._backends["base"]
        last = plan.knots[-1]
        refused_before = self._refusals()
        passed = 0
        try:
            if cancelled.is_set():
                return self._ended(plan, False, "canceled before it moved", passed, canceled=True)
            if last.q is not None:
                reply = arm.request(ArmMsg.SET_CONTROL_MODE, control_mode=int(ControlMode.JOINT_POSITION))
                if not reply.get("success"):
                    return self._ended(plan, False, f"the arm refused joint control: "
                                                    f"{reply.get('error', reply)}", passed)
            # On the path's motion time, not the wall clock: after a stall of this thread
            # the path goes on from where it was (a jump ahead would be refused by the
            # guard's speed gate; streaming.Pacer).
            pacer = Pacer(STREAM_HZ, restart_after=ARM_HOLD_AFTER_S)
            total = plan.duration_s
            arrived_by: float | None = None          # wall time by which it must have settled
            for k, _ in enumerate(pacer.ticks()):
                t = pacer.motion
                if cancelled.is_set():
                    return self._ended(plan, False, "canceled: the robot holds where it is",
                                       passed, canceled=True)
                if self._refusals() > refused_before:
                    return self._ended(plan, False, "the safety guard refused the path at "
                                                    f"waypoint {passed + 1}", passed)
                tau = plan.progress(t)
                q, pose, passed = plan.at(tau)
                if q is not None:
                    arm.stream().send({"msg_type": int(ArmMsg.JOINT_POSITION), "q": q.tolist()})
                if pose is not None and k % BASE_EVERY == 0:
                    reply = base.request(BaseMsg.EXECUTE_ACTION, base_pose=pose.tolist())
                    if not reply.get("success", True):
                        return self._ended(plan, False, f"the base refused the path at "
                                                        f"waypoint {passed + 1}: {reply}", passed)
                progress(min(1.0, tau / plan.nominal_s) if plan.nominal_s > 0 else 1.0)
                if t < total:
                    continue
                error = self._error(last)
                if error is None:
                    break
                arrived_by = arrived_by or time.monotonic() + SETTLE_S
                if time.monotonic() > arrived_by:
                    return self._ended(plan, False, f"the robot did not reach the target waypoint "
                                                    f"within {SETTLE_S:g}s: {error}", passed)
            self._gripper(plan)
        except TidybotError as exc:       # a refusal (SafetyError) or a backend that is down
            return self._ended(plan, False, f"{exc} (at waypoint {passed + 1})", passed)
        return self._ended(plan, True, f"rewound {plan.waypoints} waypoint(s) to "
                                       f"{describe_target(plan.request)}", plan.waypoints)

    def _error(self, target: Waypoint) -> str | None:
        """What still separates the robot from ``target`` (None: arrived and settled)."""
        if target.q is not None:
            state = self._backends["arm"].state()
            if in_reflex(state):
                raise TidybotError(f"the arm stopped in a reflex: {reflex_reason(state)}")
            off = float(np.max(np.abs(np.asarray(state["q"]) - target.q)))
            if off > ARRIVED_RAD:
                return f"arm {off:.3f} rad away"
        if target.base is not None:
            pose = self._backends["base"].state()["base_pose"]
            off = math.hypot(pose[0] - target.base[0], pose[1] - target.base[1])
            turn = abs(kin.wrap_angle(pose[2] - target.base[2]))
            if off > ARRIVED_M or turn > ARRIVED_BASE_RAD:
                return f"base {off:.3f} m and {turn:.3f} rad away"
        return None

    def _gripper(self, plan: Plan) -> None:
        if plan.gripper is None:
            return
        try:
            gripper_command(self._backends["gripper"], GripperMsg.MOVE, position=int(plan.gripper),
                            speed=255, force=GRIPPER_FORCE)
        except GripperError as exc:
            raise TidybotError(f"the gripper did not move back: {exc}") from None

    @staticmethod
    def _ended(plan: Plan, success: bool, message: str, passed: int,
               canceled: bool = False) -> Outcome:
        # knot j of the plan is waypoint n - j of the trajectory: past it, what is left to
        # undo is the waypoints up to and including that one
        keep = plan.first_kept + len(plan.knots) - max(passed, 1)
        return Outcome(success, message, passed, 0.0, canceled, keep)


def summary(trajectory: Sequence[Waypoint]) -> dict:
    """What the SDK's get_trajectory_info() returns."""
    return {"length": len(trajectory),
            "duration_s": trajectory[-1].t - trajectory[0].t if trajectory else 0.0,
            "executions": sum(w.mark == "execution" for w in trajectory),
            "parts": [p for p, attr in (("arm", "q"), ("base", "base"), ("gripper", "gripper"))
                      if trajectory and getattr(trajectory[-1], attr) is not None]}


def describe_target(request: RewindRequest) -> str:
    return {"start": "where the lease began", "execution": "where the last execution began",
            "steps": f"{int(request.amount)} step(s) back", "fraction":
            f"{request.amount:.0%} of the lease's trajectory back",
            "safe": "the last waypoint inside the limits"}[request.target]


def drive(upstream: SdkConfig, plan: Plan, cancelled: threading.Event,
          progress: Callable[[float], None], log: Callable[[str], None],
          on_guard: Callable[[Guard], None] = lambda guard: None) -> Outcome:
    """Drive ``plan`` on the robot at ``upstream`` through a guard of its own (made for
    this rewind: the same checks and shaping as any execution's), then close it.
    ``on_guard`` is given that guard before anything is sent through it (the writer
    registry: an estop refuses its motion)."""
    directory = Path(tempfile.mkdtemp(prefix="tidybot-rewind-"))
    guard = Guard(upstream, directory / "guard", log)
    started = time.monotonic()
    try:
        guard.start()
        on_guard(guard)
        rewinder = Rewinder(guard.endpoints, lambda: len(guard.refusals))
        try:
            outcome = rewinder.run(plan, cancelled, progress)
        finally:
            rewinder.close()
    finally:
        try:
            guard.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    if guard.refusals:
        outcome.message += f": {guard.refusals[0]}"
    outcome.duration_s = time.monotonic() - started
    return outcome
