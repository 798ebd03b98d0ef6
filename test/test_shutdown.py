"""Node shutdown with a goal running, as `ros2 launch` + Ctrl-C and init systems do it.

SIGINT, SIGTERM and a second SIGINT right after the first all end the running execution
through the one end path: the goal is answered (CANCELED, "node shutting down"), the robot
holds, the record is written, the working directory is removed and the node exits 0
without a traceback. Each case gets its own stack: the node does not survive it.
"""
from __future__ import annotations

import signal

import pytest
from action_msgs.msg import GoalStatus
from tidybot_interfaces.action import ExecuteCode

from conftest import ExecClient
from support import Stack, Wire, host_workdir, wait_until
from tidybot_exec.history import History

R = ExecuteCode.Result
MOVE = ("print('moving', flush=True)\n"
        "from tidybot_sdk import arm\n"
        "arm.move_joints([1.2, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=8)\n")


@pytest.fixture
def fresh_stack(ros, tmp_path):
    stack = Stack(tmp_path, tmp_path / "history", params={"require_lease": False})
    client = ExecClient(ros)
    try:
        client.wait_ready()
        yield stack, client
    finally:
        client.close()
        stack.stop()


@pytest.mark.parametrize("signals", [["SIGINT"], ["SIGINT", "SIGINT"], ["SIGTERM"]],
                         ids=["sigint", "sigint-twice", "sigterm"])
def test_shutdown_with_a_goal_running_ends_it_through_the_stop_path(fresh_stack, ros, signals):
    stack, client = fresh_stack
    wire = Wire(stack.config)
    try:
        run = client.send(MOVE)
        wait_until(lambda: "moving" in run.stdout() and wire.state("arm")["q"][0] > 0.1, 60,
                   "the arm to move")
        workdir = host_workdir(run)
        run.handle()                       # accepted: its result is asked for before the node goes
        stops = stack.control(cmd="stats")["received"]["arm"].get("STOP", 0)
        for name in signals:
            stack.node.signal(getattr(signal, name))
        status, result = run.result(30)
        assert stack.node.wait(30) == 0, stack.node.stderr[-2000:]
        assert status == GoalStatus.STATUS_ABORTED
        assert (result.status, result.error) == (R.STATUS_CANCELED, "node shutting down")
        assert stack.control(cmd="stats")["received"]["arm"]["STOP"] >= stops + 1
        assert wire.arm_holding()["q"][0] < 1.1
        assert not workdir.exists()
        assert "Traceback" not in stack.node.stderr + stack.node.stdout
        history = History(stack.params["history_dir"], 10)
        (record,) = [r for r in history.newest() if r.execution_id == result.execution_id]
        assert (record.status, record.error) == (R.STATUS_CANCELED, "node shutting down")
        history.close()
    finally:
        wire.close()
