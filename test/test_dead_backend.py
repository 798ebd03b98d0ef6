"""A backend that dies or hangs while the code talks to it, on a real node and simulator.

The code fails on its own within the SDK's timeouts; the end path must not then wait for
the dead backend (the guard's request upstream may wait a minute): the goal is answered,
the record written and execution/status idle within seconds, the failed hold named.
"""
from __future__ import annotations

import time

import pytest
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionStatus

from support import LEASE_FREE, Wire, wait_until
from tidybot_exec.execution.history import History
from tidybot_exec.ros.qos import LATCHED

R = ExecuteCode.Result
STACK_PARAMS = LEASE_FREE
MOVING = ("from tidybot_sdk import arm\nprint('moving', flush=True)\n"
          "arm.move_joints([0.6, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=3)\n")
ASKING = "from tidybot_sdk import arm\nprint('asking', flush=True)\narm.stop()\n"


@pytest.mark.parametrize("fault", ["killed mid-motion", "hung mid-request"])
def test_a_backend_that_dies_under_the_code_never_holds_the_answer(stack, record, fault):
    sim_stack, client = stack
    status = record(ExecutionStatus, "execution/status", LATCHED)
    wire = Wire(sim_stack.config)
    try:
        if fault == "killed mid-motion":
            run = client.send(MOVING)
            wait_until(lambda: "moving" in run.stdout() and wire.state("arm")["q"][0] > 0.05, 30,
                       "the arm to move")
            assert sim_stack.control(cmd="kill", server="arm")["ok"]
        else:
            assert sim_stack.control(cmd="reply_delay", server="arm", value=120.0)["ok"]
            run = client.send(ASKING)
            wait_until(lambda: "asking" in run.stdout(), 30, "the code to ask")
        faulted = time.monotonic()
        _, result = run.result(90)
        answered_in = time.monotonic() - faulted
        print(f"{fault}: answered {answered_in:.2f} s after the fault")
        assert answered_in < 25.0, (answered_in, result.error)         # it was over 60 s
        assert result.status == R.STATUS_FAILED, result.error
        assert "hold failed: arm: no answer in 0.5 s" in result.error, result.error
        wait_until(lambda: status.messages[-1].state == "idle", 10, "execution/status idle")
        history = History(sim_stack.params["history_dir"], 10)
        try:
            (entry,) = [r for r in history.newest() if r.execution_id == result.execution_id]
            assert entry.error == result.error          # the record keeps the hold's failure
        finally:
            history.close()
    finally:
        wire.close()
        sim_stack.control(cmd="reply_delay", server="arm", value=0.0)
        sim_stack.control(cmd="restart", server="arm")
    _, after = client.run("from tidybot_sdk import arm\narm.go_home()\nprint('fine')\n")
    assert (after.status, after.stdout) == (R.STATUS_SUCCEEDED, "fine\n"), after.error
