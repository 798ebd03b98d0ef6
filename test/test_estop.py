"""The latched estop and a failed hold, on a real node and simulator.

An estop kills the code at once, even code that ignores SIGINT and keeps re-commanding the
base (a soft stop would give it stop_grace_s to undo the STOP), holds every backend and
latches: goals are refused until estop/reset with the lease. A hold that a backend does
not acknowledge is named in the result, in execution/status and as an ERROR in /diagnostics.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from std_srvs.srv import Trigger
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionStatus
from tidybot_interfaces.srv import ResetEstop

from support import Wire, wait_until
from tidybot_exec.ros.qos import LATCHED

R = ExecuteCode.Result
STACK_PARAMS = {"stop_grace_s": 20.0}          # a soft stop of stubborn code takes 20 s
DRIVING = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
           "from tidybot_sdk import base\nprint('driving', flush=True)\n"
           "while True:\n    base.drive(0.05, duration=0.1)\n")


def executor_diagnostic(diag, since: float):
    for msg in reversed(diag.since(since)):
        for s in msg.status:
            if s.name == "tidybot_exec: executor":
                return s
    return None


def test_estop_kills_stubborn_code_at_once_holds_and_latches(stack, record):
    sim_stack, client = stack
    token = client.acquire("estopper").lease_id
    status = record(ExecutionStatus, "execution/status", LATCHED)
    diag = record(DiagnosticArray, "/diagnostics")
    wire = Wire(sim_stack.config)
    try:
        run = client.send(DRIVING, lease_id=token)
        wait_until(lambda: "driving" in run.stdout() and
                   abs(wire.state("base")["base_velocity"][0]) > 0.01, 30, "the base to drive")
        stops = sim_stack.control(cmd="stats")["received"]["base"].get("STOP", 0)
        started = time.monotonic()
        reply = client.call("estop", Trigger.Request())
        assert reply.success and "estopped" in reply.message, reply.message
        _, result = run.result(30)
        assert time.monotonic() - started < 15.0         # no 20 s grace
        assert (result.status, result.error) == (R.STATUS_CANCELED, "emergency stop")
        assert sim_stack.control(cmd="stats")["received"]["base"]["STOP"] >= stops + 1
        settled = time.monotonic()
        wait_until(lambda: all(abs(v) < 1e-6 for v in wire.state("base")["base_velocity"]), 10,
                   "the base to stop")
        drives = sim_stack.control(cmd="stats")["received"]["base"]
        wait_until(lambda: time.monotonic() - settled > 0.5, 2, "half a second")
        assert sim_stack.control(cmd="stats")["received"]["base"] == drives   # nobody drives
        wait_until(lambda: status.messages and status.messages[-1].state == "estopped", 10,
                   "execution/status to say estopped")
        assert status.messages[-1].estopped
        assert wait_until(lambda: executor_diagnostic(diag, settled), 10,
                          "diagnostics").message == "estopped: call estop/reset"

        refused = client.run("print('no')", lease_id=token)[1]
        assert (refused.status, refused.error) == (R.STATUS_REJECTED, "estopped: call estop/reset")
        no_lease = client.call("estop/reset", ResetEstop.Request())
        assert not no_lease.success and no_lease.message.startswith("no lease")
        assert client.call("estop/reset", ResetEstop.Request(lease_id=token)).success
        assert client.run("print('yes')", lease_id=token)[1].status == R.STATUS_SUCCEEDED
        wait_until(lambda: status.messages[-1].state == "idle", 10, "idle again")
    finally:
        wire.close()
        client.release(token)


def test_a_hold_that_fails_is_reported_until_one_succeeds(stack, record):
    sim_stack, client = stack
    token = client.acquire("holder").lease_id
    status = record(ExecutionStatus, "execution/status", LATCHED)
    diag = record(DiagnosticArray, "/diagnostics")
    try:
        assert sim_stack.control(cmd="kill", server="gripper")["ok"]
        _, result = client.run("raise ValueError('bad')", lease_id=token)
        assert result.status == R.STATUS_FAILED
        assert result.error.startswith("ValueError: bad (line 1); hold failed: gripper:")
        wait_until(lambda: status.messages[-1].hold_error.startswith("hold failed: gripper:"),
                   10, "execution/status to name the failed hold")
        since = time.monotonic()
        entry = wait_until(lambda: executor_diagnostic(diag, since), 10, "diagnostics")
        assert entry.level[0] == 2 and entry.message.startswith("hold failed: gripper")
    finally:
        sim_stack.control(cmd="restart", server="gripper")
    _, result = client.run("raise ValueError('bad')", lease_id=token)
    assert result.error == "ValueError: bad (line 1)"
    wait_until(lambda: status.messages[-1].hold_error == "", 10, "the failed hold to clear")
    client.release(token)
