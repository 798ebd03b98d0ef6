"""Dry runs on a real node: the code drives a private simulator seeded from the real robot's
state, and the real robot (the stack's simulator) receives nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionStatus
from tidybot_interfaces.srv import GetHistory

from support import Wire, private_sims, wait_until
from tidybot_exec.ros.qos import LATCHED
from tidybot_sdk import kinematics as kin

R = ExecuteCode.Result
Q1 = [0.5, -0.6, 0.2, -2.0, 0.1, 1.5, 0.9]
REPORT = ("import json\nfrom tidybot_sdk import gripper, sensors\n"
          "print(json.dumps({'q': sensors.get_arm_joints(), 'base': sensors.get_base_pose(),"
          " 'gripper': gripper.get_state()}), flush=True)\n")


@pytest.fixture(scope="module")
def lease(stack):
    _, client = stack
    grant = client.acquire("dry-runner", ttl_s=600)
    assert grant.success
    yield grant.lease_id
    client.release(grant.lease_id)


@pytest.fixture
def wire(stack):
    w = Wire(stack[0].config)
    yield w
    w.close()


def reports(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_a_dry_run_starts_where_the_robot_is_and_moves_only_its_own(stack, lease, wire):
    sim_stack, client = stack
    _, real = client.run("from tidybot_sdk import arm, base, gripper\n"
                         f"arm.move_joints({Q1})\nbase.move_to_pose(0.3, -0.2, 0.5)\n"
                         "gripper.activate()\ngripper.move(position=120)\n", lease_id=lease)
    assert real.status == R.STATUS_SUCCEEDED, real.stderr
    before = {name: wire.state(name) for name in ("arm", "base", "gripper")}
    received = sim_stack.control(cmd="stats")["received"]

    _, dry = client.run(REPORT + "from tidybot_sdk import arm, base\n"
                        "arm.go_home()\nbase.move_to_pose(0.0, 0.0, 0.0)\ngripper.open()\n"
                        + REPORT.split("\n", 2)[2], lease_id=lease, dry_run=True, timeout=90)

    assert dry.status == R.STATUS_SUCCEEDED, dry.stderr
    assert dry.stderr.startswith("[tidybot] dry run: a private simulated robot")
    start, end = reports(dry.stdout)
    assert np.allclose(start["q"], Q1, atol=1e-3)
    assert np.allclose(start["base"], (0.3, -0.2, 0.5), atol=1e-2)
    assert start["gripper"]["is_activated"] and abs(start["gripper"]["position"] - 120) <= 2
    assert np.allclose(end["q"], kin.HOME_Q, atol=1e-2)
    assert np.allclose(end["base"], (0, 0, 0), atol=1e-2)
    assert end["gripper"]["position"] <= 2
    # the real robot did not move and received no command at all
    assert np.allclose(wire.state("arm")["q"], before["arm"]["q"], atol=1e-9, rtol=0)
    assert np.allclose(wire.state("base")["base_pose"], before["base"]["base_pose"], atol=1e-9, rtol=0)
    assert wire.state("gripper")["position"] == before["gripper"]["position"]
    assert sim_stack.control(cmd="stats")["received"] == received
    records = client.call("execution/history", GetHistory.Request(max_count=2)).records
    assert [r.dry_run for r in records] == [True, False]


def test_canceling_a_dry_run_ends_its_simulator_and_leaves_the_robot_alone(stack, lease, record):
    sim_stack, client = stack
    statuses = record(ExecutionStatus, "/execution/status", LATCHED).messages
    received = sim_stack.control(cmd="stats")["received"]
    run = client.send("import time\nfrom tidybot_sdk import arm\narm.get_state()\n"
                      "print('moving', flush=True)\n"
                      "arm.move_joints([0.8, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=20)\n",
                      lease_id=lease, dry_run=True)
    wait_until(lambda: "moving" in run.stdout(), 30, "the dry run to start moving")
    assert private_sims(), "the dry run's simulator is not running"
    running = wait_until(lambda: [s for s in statuses if s.state == s.STATE_RUNNING], 10,
                         "execution/status to say running")
    assert running[-1].dry_run
    run.cancel()
    _, result = run.result(30)
    assert result.status == R.STATUS_CANCELED
    wait_until(lambda: not private_sims(), 10, "the dry run's simulator to end")
    # no stop-and-hold went to the real robot: the dry run never touched it
    assert sim_stack.control(cmd="stats")["received"] == received


def test_a_dry_run_needs_the_lease_like_any_goal(stack):
    _, client = stack
    _, result = client.run("print(1)", dry_run=True)
    assert result.status == R.STATUS_REJECTED and result.error.startswith("no lease")


def test_a_backend_without_fresh_state_starts_from_defaults(stack, lease):
    sim_stack, client = stack
    code = REPORT + "from tidybot_sdk import base\nbase.forward(0.2)\n"
    assert sim_stack.control(cmd="freeze_state", server="base", value=True)["ok"]
    try:
        result = wait_until(lambda: (r := client.run(code, lease_id=lease, dry_run=True)[1])
                            and "no fresh state from the base" in r.stderr and r, 30,
                            "the node to see the base state go stale")
    finally:
        assert sim_stack.control(cmd="freeze_state", server="base", value=False)["ok"]
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    (start,) = reports(result.stdout)
    assert start["base"] == [0.0, 0.0, 0.0]        # the simulator's default, not a guess
