"""Scripts written for the predecessor, on the real node and simulator: its raw backend
objects exist, go through the guard, and refusals are errors those scripts catch."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tidybot_interfaces.action import ExecuteCode

from support import LEASE_FREE, Wire

R = ExecuteCode.Result
STACK_PARAMS = LEASE_FREE

# joint_move_test's pattern: one raw streamed target 0.1 rad away from where the arm is
STEP_TARGET = """\
franka_backend.set_control_mode(1)
q = franka_backend.get_state()['q']
q[0] += 0.1
franka_backend.send_joint_position(q)
"""


@pytest.fixture
def wire(stack):
    made = Wire(stack[0].config)
    yield made
    made.close()


def test_a_raw_step_target_is_refused_with_what_to_use_instead(stack, wire):
    _, client = stack
    before = np.array(wire.state("arm")["q"])
    _, result = client.run(STEP_TARGET)
    assert result.status == R.STATUS_FAILED
    assert result.error.startswith("ArmSafetyError: franka_backend.send_joint_position"), result.error
    assert "arm.move_joints(q)" in result.stderr
    assert np.max(np.abs(np.array(wire.state("arm")["q"]) - before)) < 0.01   # nothing moved


def test_refusals_are_the_errors_predecessor_scripts_catch(stack):
    _, client = stack
    code = ("import json\nfrom robot_sdk.arm import ArmError\n"
            "from robot_sdk.base import BaseError\ncaught = []\n"
            "try:\n" + "".join("    " + line + "\n" for line in STEP_TARGET.splitlines()) +
            "except ArmError as exc:\n    caught.append(type(exc).__name__)\n"
            "try:\n    base_backend.reset()\nexcept BaseError as exc:\n"
            "    caught.append(type(exc).__name__)\n"
            "print(json.dumps(caught))\n")
    _, result = client.run(code)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    assert json.loads(result.stdout) == ["ArmSafetyError", "BaseSafetyError"]


def test_small_raw_steps_stream_through_the_guard(stack, wire):
    _, client = stack
    before = np.array(wire.state("arm")["q"])
    code = ("import time\nfranka_backend.set_control_mode(1)\n"
            "q = franka_backend.get_state()['q']\n"
            "for _ in range(25):\n"
            "    q[0] += 0.004\n"
            "    franka_backend.send_joint_position(q)\n"
            "    time.sleep(0.02)\n"
            "time.sleep(0.3)\nprint(franka_backend.get_state()['q'][0])\n")
    _, result = client.run(code)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr + result.error
    moved = np.array(wire.state("arm")["q"])[0] - before[0]
    assert 0.07 < moved < 0.11, moved           # 25 steps of 0.004 rad, as streamed
    _, back = client.run("from tidybot_sdk import arm\narm.go_home()\n")
    assert back.status == R.STATUS_SUCCEEDED, back.error
