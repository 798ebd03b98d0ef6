"""The rewind action on the real node and simulator processes, through TidybotClient."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from tidybot_interfaces.msg import ExecutionStatus

from conftest import failing_the_test
from support import ROOT, Wire, wait_until
from tidybot_exec.ros.qos import LATCHED

MOVE = ("from tidybot_sdk import arm, base\n"
        "q = arm.get_state()['q']\nq[0] += {dq}\narm.move_joints(q)\n"
        "base.move_delta(dx={dx})\n")


@pytest.fixture
def robot(stack):
    """(client, wire to the simulator, lease token): a lease for the test, released after."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    token = client.client.acquire("rewinder")
    yield client, wire, token
    client.client.release()
    wire.close()


def rewound(client, timeout: float = 60.0, **goal):
    """(action status, Rewind.Result, feedback fractions)."""
    fractions: list[float] = []
    run = client.client.rewind(feedback_callback=lambda fb: fractions.append(fb.fraction), **goal)
    with failing_the_test():
        result = run.result(timeout)
    return run.action_status, result, fractions


def state(wire: Wire) -> tuple[np.ndarray, np.ndarray]:
    return np.array(wire.state("arm")["q"]), np.array(wire.state("base")["base_pose"])


def test_rewind_to_the_lease_start_undoes_the_motion(robot):
    client, wire, token = robot
    q0, b0 = state(wire)
    _, result = client.run(MOVE.format(dq=0.4, dx=0.15), lease_id=token)
    assert result.status == 0, result.stderr
    status, dry, _ = rewound(client, dry_run=True)
    assert status == GoalStatus.STATUS_SUCCEEDED and dry.waypoints > 2, dry.message
    assert np.abs(state(wire)[0] - q0).max() > 0.3                 # nothing moved
    status, done, fractions = rewound(client)
    assert status == GoalStatus.STATUS_SUCCEEDED, done.message
    q, b = state(wire)
    assert np.abs(q - q0).max() <= 0.02 and np.hypot(*(b - b0)[:2]) <= 0.02
    assert done.waypoints == dry.waypoints and done.duration_s > 0.5
    assert fractions and fractions == sorted(fractions)


def test_refusals_are_aborted_with_the_reason(robot):
    client, _, _ = robot
    status, result, _ = rewound(client, lease_id="")
    assert status == GoalStatus.STATUS_ABORTED and "no lease" in result.message
    status, result, _ = rewound(client, target="home")
    assert status == GoalStatus.STATUS_ABORTED and "unknown target" in result.message
    status, result, _ = rewound(client, target="execution")
    assert status == GoalStatus.STATUS_ABORTED and not result.success


def test_cancel_holds_the_robot_where_it_is(robot, record):
    client, wire, token = robot
    status = record(ExecutionStatus, "execution/status", LATCHED)
    _, result = client.run(MOVE.format(dq=0.8, dx=0.0), lease_id=token)
    assert result.status == 0, result.stderr
    far = state(wire)[0][0]
    run = client.client.rewind()
    run.accepted(30)
    wait_until(lambda: abs(state(wire)[0][0] - far) > 0.1, 30, "the rewind to move the arm")
    # the rewind is the robot's one writer, and execution/status says which
    wait_until(lambda: status.messages and status.messages[-1].writers == [
        "rewind (action) by rewinder"], 10, "execution/status to list the rewind")
    assert status.messages[-1].state == ExecutionStatus.STATE_REWINDING
    run.cancel(30)
    with failing_the_test():
        result = run.result(30)
    assert run.action_status == GoalStatus.STATUS_CANCELED and "canceled" in result.message
    wire.arm_holding()
    assert abs(state(wire)[0][0] - (far - 0.8)) > 0.05                # stopped on the way
    wait_until(lambda: status.messages[-1].writers == [], 10, "no writer left")


def tidybot_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["tidybot-run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("script, expected", [
    ("rewind_joint.py", ["Trajectory length: True", "Rewind success: True ", "Back at start: True"]),
    ("rewind_base_arm.py", ["Recorded: True", "Rewound: True True ['base', 'arm']",
                            "Base back: True", "Arm back: True", "Cleared: 1"])])
def test_the_predecessors_rewind_scripts_run_unchanged_through_tidybot_run(stack, script, expected):
    done = tidybot_run(str(ROOT / "test" / "predecessor_scripts" / script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


def test_tidybot_run_rewind_and_on_failure(robot):
    client, wire, token = robot
    q0 = state(wire)[0]
    failing = tidybot_run("-c", MOVE.format(dq=0.3, dx=0.0) + "raise RuntimeError('dropped it')",
                          "--lease-id", token, "--on-failure", "rewind")
    assert failing.returncode == 1 and "on_failure: rewound" in failing.stderr, failing.stderr
    assert np.abs(state(wire)[0] - q0).max() <= 0.02
    _, result = client.run(MOVE.format(dq=0.3, dx=0.0), lease_id=token)
    assert result.status == 0, result.stderr
    plan = tidybot_run("--rewind", "steps", "3", "--dry-run", "--lease-id", token, "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["waypoints"] == 4, plan.stdout
    done = tidybot_run("--rewind", "start", "--lease-id", token)
    assert done.returncode == 0 and "rewound" in done.stdout, done.stderr
    assert np.abs(state(wire)[0] - q0).max() <= 0.02
    refused = tidybot_run("--rewind", "steps", "0.5", "--lease-id", token)
    assert refused.returncode == 1 and "whole amount" in refused.stderr
