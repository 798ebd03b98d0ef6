"""Rewind: the recorder and the plan on their own (pure), and rewinds driven by the
execution service on a real simulator through a real guard, after code moved the robot."""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from service_harness import FakeClock, Harness
from support import Wire, sdk_config_for, wait_until
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution import rewind_path as rewind
from tidybot_exec.guard.recorder import Recorder, Waypoint
from tidybot_exec.execution.rewind_path import Plan, RewindRequest
from tidybot_sdk import kinematics as kin
from tidybot_sdk.limits import SafetyLimits

HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def arm(q) -> dict:
    return {"q": list(q)}


# ---------------------------------------------------------------- recorder
def test_waypoints_come_at_most_every_period_and_only_after_motion():
    clock = FakeClock()
    rec = Recorder(clock=clock)
    rec.begin_lease(1)                                   # the grant: always a waypoint
    q = np.array(HOME)
    rec.observe("arm", arm(q))                           # first seen: the grant's pose too
    assert [w.q for w in rec.trajectory(1)] == [tuple(HOME)]
    for _ in range(20):                                  # still: nothing more
        clock.now += 0.2
        rec.observe("arm", arm(q))
    assert len(rec.trajectory(1)) == 1
    for _ in range(30):                                  # 0.05 rad per 20 ms: one per 0.1 s
        clock.now += 0.02
        q[0] += 0.05
        rec.observe("arm", arm(q))
    kept = rec.trajectory(1)
    assert 5 <= len(kept) - 1 <= 6
    assert all(b.t - a.t >= 0.1 - 1e-9 for a, b in zip(kept[1:], kept[2:]))
    rec.observe("arm", {"not": "a state"})               # ignored, not a crash
    assert kept[0].mark == "lease" and kept[0].lease == 1


def test_marks_are_kept_whatever_moved_and_the_count_is_bounded():
    clock = FakeClock()
    rec = Recorder(max_waypoints=10, clock=clock)
    rec.observe("arm", arm(HOME))
    rec.begin_lease(7)
    rec.begin_execution("e1", 7)                         # no motion in between: still kept
    q = np.array(HOME)
    for _ in range(50):
        clock.now += 0.2
        q[1] += 0.02
        rec.observe("arm", arm(q))
    kept = rec.trajectory(7)
    assert len(kept) == 10
    assert [w.mark for w in kept[:2]] == ["lease", "execution"]
    assert kept[1].execution == "e1" and kept[-1].execution == "e1"
    assert kept[-1].q[1] == pytest.approx(q[1])
    rec.begin_lease(8)                                   # the next lease forgets the last
    assert rec.trajectory(7) == [] and len(rec.trajectory(8)) == 1


def test_a_lease_on_other_parts_keeps_the_running_executions_trajectory_its_own():
    """Leases per part: B granted the base while A's execution moves the arm: A's waypoints
    stay, and what A's code moves next is recorded under A, not B."""
    clock = FakeClock()
    rec = Recorder(clock=clock)
    rec.begin_lease(1)
    rec.begin_execution("a1", 1)
    q = np.array(HOME)

    def move() -> None:
        for _ in range(5):
            clock.now += 0.2
            q[0] += 0.1
            rec.observe("arm", arm(q))

    move()
    rec.begin_lease(2, others=[1])
    move()
    a = rec.trajectory(1)
    assert [w.mark for w in a[:2]] == ["lease", "execution"] and len(a) == 11   # 4 + 5 moved
    assert a[-1].execution == "a1" and a[-1].q[0] == pytest.approx(q[0])
    assert [w.mark for w in rec.trajectory(2)] == ["lease"]
    rec.end_execution("a1")
    rec.begin_lease(3)                                   # nobody else holds anything now
    assert rec.trajectory(1) == rec.trajectory(2) == []


def test_two_leases_on_disjoint_parts_each_record_what_their_own_parts_do():
    """An arm agent and a base agent at once: the arm's motion is recorded under the arm's
    lease and execution, the base's under the base's — neither's motion lands in the
    other's trajectory, so each rewinds only what it did."""
    clock = FakeClock()
    rec = Recorder(clock=clock)
    rec.observe("base", {"base_pose": [0.0, 0.0, 0.0]})
    rec.observe("arm", arm(HOME))
    rec.begin_lease(1, parts=("arm", "gripper"))
    rec.begin_lease(2, others=[1], parts=("base",))
    rec.begin_execution("arm-run", 1, ("arm", "gripper"))
    rec.begin_execution("base-run", 2, ("base",))
    q, x = np.array(HOME), 0.0
    for _ in range(5):
        clock.now += 0.2
        q[0] += 0.1
        rec.observe("arm", arm(q))
        x += 0.05
        rec.observe("base", {"base_pose": [x, 0.0, 0.0]})
    arm_way, base_way = rec.trajectory(1), rec.trajectory(2)
    assert [w.mark for w in arm_way[:2]] == ["lease", "execution"] and len(arm_way) == 7
    assert {w.execution for w in arm_way[1:]} == {"arm-run"}
    assert {w.execution for w in base_way[1:]} == {"base-run"} and len(base_way) == 7
    # each waypoint was taken when its own part moved
    assert [round(w.q[0] - HOME[0], 3) for w in arm_way[2:]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert [round(w.base[0], 3) for w in base_way[2:]] == [0.05, 0.1, 0.15, 0.2, 0.25]
    rec.end_execution("arm-run")
    with rec.paused(("arm",)):              # the arm agent's rewind: the base is still its own
        for _ in range(2):
            clock.now += 0.2
            x += 0.05
            rec.observe("base", {"base_pose": [x, 0.0, 0.0]})
            q[0] -= 0.1
            rec.observe("arm", arm(q))
    assert len(rec.trajectory(1)) == 7 and len(rec.trajectory(2)) == 9


def test_truncate_and_clear():
    clock = FakeClock()
    rec = Recorder(clock=clock)
    rec.begin_lease(1)
    q = np.array(HOME)
    for _ in range(5):
        clock.now += 0.2
        q[0] += 0.1
        rec.observe("arm", arm(q))
    rec.truncate(1, 3)
    assert len(rec.trajectory(1)) == 3
    assert rec.clear(1) == 3
    (start,) = rec.trajectory(1)                         # where it is now is the new start
    assert start.mark == "lease" and start.q[0] == pytest.approx(q[0])
    with rec.paused():
        clock.now += 0.2
        rec.observe("arm", arm(q + 1.0))
    assert len(rec.trajectory(1)) == 1


# -------------------------------------------------------------------- plan
def waypoint(q0: float, x: float = 0.0, mark: str = "", gripper: int = 0) -> Waypoint:
    q = list(HOME)
    q[0] = q0
    return Waypoint(0.0, tuple(q), (x, 0.0, 0.0), gripper, 1, "e", mark)


TRAJECTORY = [waypoint(0.0, mark="lease"), waypoint(0.2), waypoint(0.4, mark="execution"),
              waypoint(0.6), waypoint(0.8, x=0.3)]


@pytest.mark.parametrize("target, amount, first", [
    ("start", 0, 0), ("execution", 0, 2), ("steps", 1, 3), ("steps", 99, 0),
    ("fraction", 0.5, 2), ("fraction", 1.0, 0)])
def test_the_path_runs_from_where_the_robot_is_back_to_the_target(target, amount, first):
    here = waypoint(0.85, x=0.3)
    planned = rewind.plan(TRAJECTORY, here, RewindRequest(target, amount), SafetyLimits())
    assert isinstance(planned, Plan), planned
    assert planned.knots[0].q == here.q                          # never a jump
    assert [w.q[0] for w in planned.knots[1:]] == [w.q[0] for w in reversed(TRAJECTORY[first:])]
    assert planned.first_kept == first and planned.waypoints == len(TRAJECTORY) - first


def test_the_path_is_timed_at_half_the_caps_with_ramps():
    limits = SafetyLimits()
    planned = rewind.plan(TRAJECTORY, waypoint(0.8, x=0.3), RewindRequest("start"), limits)
    assert planned.duration_s == pytest.approx(planned.nominal_s + rewind.RAMP_S)
    ts = np.linspace(0, planned.duration_s, 2000)
    tau = np.array([planned.progress(t) for t in ts])
    assert np.all(np.diff(tau) >= -1e-12) and tau[-1] == pytest.approx(planned.nominal_s)
    path = [planned.at(x) for x in tau]
    q = np.array([p[0] for p in path])
    ee = np.array([kin.fk(x)[:3, 3] for x in q])
    base = np.array([p[1] for p in path])
    dt = np.diff(ts)[:, None]
    peaks = (np.max(np.abs(np.diff(q, axis=0)) / dt) / limits.joint_speed,
             np.max(np.linalg.norm(np.diff(ee, axis=0), axis=1) / dt[:, 0]) / limits.cartesian_speed,
             np.max(np.linalg.norm(np.diff(base[:, :2], axis=0), axis=1) / dt[:, 0]) / limits.base_speed)
    assert max(peaks) <= rewind.SPEED_FRACTION * 1.01, peaks      # half of every cap at most
    assert max(peaks) >= rewind.SPEED_FRACTION * 0.9, peaks       # and not needlessly slower
    assert q[-1][0] == pytest.approx(0.0) and base[-1][0] == pytest.approx(0.0)
    short = rewind.plan([waypoint(0.0, mark="lease")], waypoint(0.01), RewindRequest(), limits)
    assert short.duration_s < rewind.RAMP_S
    assert short.progress(short.duration_s) == pytest.approx(short.nominal_s)


def test_parts_safe_and_refusals():
    limits = SafetyLimits()
    here = waypoint(0.8, x=0.3)
    arm_only = rewind.plan(TRAJECTORY, here, RewindRequest(parts=("arm",)), limits)
    assert all(w.base is None for w in arm_only.knots) and arm_only.gripper is None
    with_gripper = rewind.plan(TRAJECTORY, here, RewindRequest(parts=("arm", "gripper")), limits)
    assert with_gripper.gripper == 0
    out = list(TRAJECTORY)
    out[4] = Waypoint(0.0, TRAJECTORY[4].q, (6.0, 0.0, 0.0), 0, 1, "e")     # base out of its box
    safe = rewind.plan(out, here, RewindRequest("safe"), limits)
    assert safe.first_kept == 3
    assert "no execution" in rewind.plan(TRAJECTORY[:2], here, RewindRequest("execution"), limits)
    assert rewind.plan(TRAJECTORY, here, RewindRequest("execution", execution_id="e"),
                       limits).first_kept == 2
    assert "no longer recorded" in rewind.plan(
        TRAJECTORY, here, RewindRequest("execution", execution_id="other"), limits)
    assert "nothing recorded" in rewind.plan([], here, RewindRequest(), limits)
    assert "unknown target" in RewindRequest.checked("home", 0, [], False)
    assert "unknown parts" in RewindRequest.checked("start", 0, ["legs"], False)
    assert "whole amount" in RewindRequest.checked("steps", 0.5, [], False)
    assert "(0, 1]" in RewindRequest.checked("fraction", 1.5, [], False)
    assert RewindRequest.checked("", 0, [], True) == RewindRequest("start", dry_run=True)


# ------------------------------------------------- service on a real simulator
@pytest.fixture
def robot(tmp_path, sim_factory):
    """A service (cold, unsandboxed: the sandbox is tested elsewhere) on a simulator."""
    simulator, wire = sim_factory()
    harness = Harness(tmp_path, "", settings={
        "sdk_config_json": sdk_config_for(simulator.config).to_json(), "warm_worker": False})
    yield harness, simulator, wire
    harness.close()


def q_of(wire: Wire) -> np.ndarray:
    return np.array(wire.state("arm")["q"])


def base_of(wire: Wire) -> np.ndarray:
    return np.array(wire.state("base")["base_pose"])


def recorded(harness: Harness) -> None:
    """Wait until the recorder has seen the robot (its feed is a subscriber of its own)."""
    wait_until(lambda: harness.service.recorder.current().q is not None
               and harness.service.recorder.current().base is not None, 20, "recorded state")


def turn(harness: Harness, token: str, joint: int, by: float) -> None:
    """Code under ``token`` turns ``joint`` by ``by`` rad with the SDK."""
    result = harness.service.run(Request(
        f"from tidybot_sdk import arm\nq = arm.get_state()['q']\nq[{joint}] += {by}\n"
        f"arm.move_joints(q)\n"), token)
    assert result.status == Status.SUCCEEDED, result.stderr


MOTION = ("from tidybot_sdk import arm, base\n"
          "q = arm.get_state()['q']\nq[0] += 0.5\narm.move_joints(q)\n"
          "base.move_delta(dx=-0.2)\n"
          "q[3] += 0.3\narm.move_joints(q)\n")


def test_rewind_to_start_undoes_arm_and_base_motion_within_tolerance(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    q0, b0 = q_of(wire), base_of(wire)
    result = harness.service.run(Request(MOTION, timeout_s=60), token)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert np.max(np.abs(q_of(wire) - q0)) > 0.4
    dry = harness.service.rewind(RewindRequest("start", dry_run=True), token)
    assert dry.success and dry.waypoints > 3 and "nothing moved" in dry.message
    assert np.max(np.abs(q_of(wire) - q0)) > 0.4                    # the dry run moved nothing
    fractions: list[float] = []
    outcome = harness.service.rewind(RewindRequest("start"), token, fractions.append)
    assert outcome.success, outcome.message
    assert np.max(np.abs(q_of(wire) - q0)) <= 0.02
    assert np.hypot(*(base_of(wire) - b0)[:2]) <= 0.02
    assert fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    binding = harness.leases.begin_execution(token)          # the lease's serial
    harness.leases.end_execution(binding)
    assert len(harness.service.recorder.trajectory(binding.serial)) == 1     # all of it undone


def test_rewind_to_the_last_execution_and_steps(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    turn(harness, token, 0, 0.3)
    q1 = q_of(wire)
    turn(harness, token, 1, 0.3)
    outcome = harness.service.rewind(RewindRequest("execution"), token)
    assert outcome.success, outcome.message
    assert np.max(np.abs(q_of(wire) - q1)) <= 0.02               # the second run undone only
    before = q_of(wire)
    outcome = harness.service.rewind(RewindRequest("steps", 2), token)
    assert outcome.success and outcome.waypoints == 3, outcome
    assert 0.0 < before[0] - q_of(wire)[0] < 0.3                  # a little way back


def test_refused_without_the_lease_while_code_runs_and_estopped(robot):
    harness, _, _ = robot
    recorded(harness)
    assert "no lease" in harness.service.rewind(RewindRequest(), "").message
    token = harness.token("alice")
    run = harness.begin(lease_id=token)
    assert "busy: execution" in harness.service.rewind(RewindRequest(), token).message
    harness.service.estop()
    run.result()
    assert "estopped" in harness.service.rewind(RewindRequest(), token).message


def test_cancel_holds_at_once_and_keeps_what_is_left_to_undo(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    turn(harness, token, 0, 0.8)
    q_far = q_of(wire)
    cancelled = threading.Event()
    outcomes: list = []
    thread = threading.Thread(target=lambda: outcomes.append(harness.service.rewind(
        RewindRequest("start"), token, lambda f: f > 0.3 and cancelled.set(), cancelled)))
    thread.start()
    thread.join(30)
    (outcome,) = outcomes
    assert outcome.canceled and not outcome.success and "canceled" in outcome.message
    assert "hold" in harness.events                               # the robot was told to hold
    stopped = q_of(wire)[0]
    assert q_far[0] - 0.8 < stopped < q_far[0] - 0.1
    again = harness.service.rewind(RewindRequest("start"), token)
    assert again.success, again.message
    assert abs(q_of(wire)[0] - (q_far[0] - 0.8)) <= 0.02


def test_a_path_the_guard_refuses_ends_the_rewind_there(robot):
    harness, simulator, wire = robot
    recorded(harness)
    token = harness.token("alice")
    turn(harness, token, 0, 0.4)
    # the limits changed since (a tighter joint 1 range): the way back leaves them
    limits = SafetyLimits()
    tight = list(limits.joint_min)
    tight[0] = float(q_of(wire)[0]) - 0.1
    harness.service.robot = replace(harness.service.robot, limits=SafetyLimits(joint_min=tuple(tight)))
    outcome = harness.service.rewind(RewindRequest("start"), token)
    assert not outcome.success and "joint 1" in outcome.message, outcome.message
    assert q_of(wire)[0] >= tight[0] - 0.02
    assert "hold" in harness.events


# ------------------------------------------------- the SDK's rewind, inside code
PREDECESSOR_SCRIPT = """\
import math
from robot_sdk import arm, rewind
q = arm.get_state()['q']
q[0] += math.radians(30)
arm.move_joints(q)
print('recorded', rewind.get_status()['trajectory_length'] > 3)
result = rewind.reset_to_home()
print('rewound', result.success, result.steps_rewound > 3, result.components_rewound, result.error)
print('left', rewind.get_status()['trajectory_length'], rewind.get_status()['is_rewinding'])
"""


def test_the_predecessors_rewind_script_runs_unchanged(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    q0 = q_of(wire)
    result = harness.service.run(Request(PREDECESSOR_SCRIPT, timeout_s=60), token)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stdout.splitlines() == [
        "recorded True", "rewound True True ['arm', 'base'] ", "left 1 False"]
    assert np.max(np.abs(q_of(wire) - q0)) <= 0.02


def test_base_then_arm_then_steps_info_and_clear(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    b0 = base_of(wire)
    code = ("from tidybot_sdk import arm, base, rewind\n"
            "base.move_delta(dx=-0.2)\n"
            "q = arm.get_state()['q']\nq[0] += 0.3\narm.move_joints(q)\n"
            "info = rewind.get_trajectory_info()\n"
            "print(info['executions'], sorted(info['parts']), info['duration_s'] > 0.5)\n"
            "plan = rewind.rewind_percentage(100, dry_run=True)\n"
            "print(plan.success, 'nothing moved' in plan.message)\n"
            "r = rewind.rewind_percentage(100, components=['arm', 'base'])\n"
            "print(r.success, r.error)\n"
            "print(rewind.clear_trajectory(), rewind.get_status()['trajectory_length'])\n"
            "from tidybot_sdk import RewindError\ntry:\n    rewind.rewind_steps(0)\n"
            "except RewindError as e:\n    print('refused:', e)\n")
    result = harness.service.run(Request(code, timeout_s=60), token)
    assert result.status == Status.SUCCEEDED, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1 ['arm', 'base', 'gripper'] True"
    assert lines[1:4] == ["True True", "True ", "True 1"]
    assert lines[4].startswith("refused: steps needs a whole amount >= 1")
    assert np.hypot(*(base_of(wire) - b0)[:2]) <= 0.02


def test_a_dry_runs_rewind_moves_only_its_private_robot(robot):
    harness, simulator, wire = robot
    recorded(harness)
    token = harness.token("alice")
    q0 = q_of(wire)
    before = dict(simulator.arm.received)
    code = ("from tidybot_sdk import arm, rewind\n"
            "q0 = arm.get_state()['q']\nq = list(q0)\nq[0] += 0.4\narm.move_joints(q)\n"
            "r = rewind.rewind_to_execution_start()\n"
            "print(r.success, max(abs(a - b) for a, b in zip(arm.get_state()['q'], q0)) < 0.02)\n")
    from tidybot_exec.execution.dry_run import Seed
    result = harness.service.run(Request(code, timeout_s=60, dry_run=Seed(q=q0.tolist())), token)
    assert result.status == Status.SUCCEEDED, result.stderr
    assert result.stdout.splitlines()[-1] == "True True"
    assert np.array_equal(q_of(wire), q0)
    moved = {k: n for k, n in simulator.arm.received.items() if k.startswith("stream_")}
    assert moved == {k: n for k, n in before.items() if k.startswith("stream_")}


def test_without_the_node_the_sdk_says_so():
    from tidybot_sdk.errors import RewindError
    from tidybot_sdk.node_channel import NodeChannel
    from tidybot_sdk.rewind_api import RewindAPI

    with pytest.raises(RewindError, match="served by the tidybot_exec node"):
        RewindAPI(NodeChannel("")).reset_to_home()


# ------------------------------------------------ on_failure and reset_on_release
FAILING = ("from tidybot_sdk import arm\nq = arm.get_state()['q']\nq[0] += 0.4\n"
           "arm.move_joints(q)\n")


@pytest.mark.parametrize("ending, status", [
    ("raise RuntimeError('oops')\n", Status.FAILED),
    ("import time\ntime.sleep(60)\n", Status.TIMEOUT)], ids=["exception", "timeout"])
def test_on_failure_rewind_undoes_the_executions_own_motion(robot, ending, status):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    assert harness.service.run(Request(
        "from tidybot_sdk import base\nbase.move_delta(dx=-0.1)\n"), token).status == Status.SUCCEEDED
    q0, b0 = q_of(wire), base_of(wire)
    result = harness.service.run(Request(FAILING + ending, timeout_s=8, on_failure="rewind"), token)
    assert result.status == status, result.stderr
    assert "on_failure: rewound" in result.error and "where the last execution began" in result.error
    assert np.max(np.abs(q_of(wire) - q0)) <= 0.02
    assert np.hypot(*(base_of(wire) - b0)[:2]) <= 0.02          # the earlier run's motion stays
    assert harness.events.count("hold") >= 2                     # after the end, after the rewind


def test_on_failure_is_checked_and_cancel_only_holds(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    bad = harness.service.run(Request("print(1)", on_failure="undo"), token)
    assert bad.status == Status.REJECTED and "on_failure must be one of" in bad.error
    run = harness.begin(FAILING + "print('started', flush=True)\nimport time\ntime.sleep(60)\n",
                        lease_id=token, on_failure="rewind")
    moved = q_of(wire)
    harness.service.cancel(run.execution)
    result = run.result()
    assert result.status == Status.CANCELED and "on_failure" not in result.error
    assert np.max(np.abs(q_of(wire) - moved)) <= 0.02             # held, not rewound


def test_cancel_and_stop_end_an_on_failure_rewind_with_a_hold(robot):
    harness, _, wire = robot
    recorded(harness)
    token = harness.token("alice")
    turn(harness, token, 0, 0.2)
    q_before = q_of(wire)
    run = harness.begin(FAILING.replace("0.4", "0.8") + "print('started', flush=True)\n"
                        "raise RuntimeError('dropped it')\n", lease_id=token, on_failure="rewind")
    wait_until(lambda: harness.service.snapshot().rewinding, 30, "the on_failure rewind")
    wait_until(lambda: abs(q_of(wire)[0] - q_before[0]) < 0.7, 30, "the rewind to move")
    harness.service.cancel(run.execution)
    result = run.result()
    assert result.status == Status.FAILED
    assert "on_failure: not rewound: canceled" in result.error, result.error
    assert abs(q_of(wire)[0] - q_before[0]) > 0.05                # stopped on the way back
    assert not harness.service.snapshot().rewinding


def test_reset_on_release_rewinds_before_the_next_holder_is_granted(tmp_path, sim_factory):
    simulator, wire = sim_factory()
    harness = Harness(tmp_path, "", settings={
        "sdk_config_json": sdk_config_for(simulator.config).to_json(), "warm_worker": False},
        reset_on_release=True)
    try:
        recorded(harness)
        token = harness.token("alice")
        q0 = q_of(wire)
        assert harness.service.run(Request(FAILING), token).status == Status.SUCCEEDED
        granted_at: list[np.ndarray] = []
        harness.leases.acquire("bob", 0.0, 60.0, lambda grant: granted_at.append(q_of(wire)))
        assert harness.leases.release(token)[0]
        assert harness.service.snapshot().resetting
        wait_until(lambda: granted_at, 60, "bob's grant")
        assert np.max(np.abs(granted_at[0] - q0)) <= 0.02, harness.events   # reset before the grant
        assert not harness.service.snapshot().resetting
    finally:
        harness.close()
