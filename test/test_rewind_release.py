"""reset_on_release on the real node and simulator: when a lease ends, the robot is rewound
to where that lease began before the next holder is granted (lease/status says so); and a
rewind is refused while code runs and while estopped."""
from __future__ import annotations

import threading

import numpy as np
from action_msgs.msg import GoalStatus
from std_srvs.srv import Trigger
from tidybot_interfaces.msg import LeaseStatus
from tidybot_interfaces.srv import ResetEstop

from conftest import failing_the_test
from support import Wire, wait_until
from tidybot_exec.ros.qos import LATCHED

STACK_PARAMS = {"reset_on_release": True}
TURN = "from tidybot_sdk import arm\nq = arm.get_state()['q']\nq[0] += 0.5\narm.move_joints(q)\n"


def test_the_next_holder_is_granted_once_the_robot_is_back(stack, record):
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    leases = record(LeaseStatus, "lease/status", LATCHED)
    try:
        token = client.acquire("first").lease_id
        q0 = np.array(wire.state("arm")["q"])
        _, result = client.run(TURN, lease_id=token)
        assert result.status == 0, result.stderr
        granted: list = []
        waiter = threading.Thread(target=lambda: granted.append(
            (client.acquire("second", wait_s=60, timeout=90), np.array(wire.state("arm")["q"]))))
        waiter.start()
        wait_until(lambda: leases.messages and "second" in leases.messages[-1].waiting_holders,
                   30, "the second holder to wait in line")
        assert client.release(token).success
        waiter.join(90)
        (reply, q_at_grant), = granted
        assert reply.success, reply.message
        assert np.abs(q_at_grant - q0).max() <= 0.05               # back before the grant
        assert any(m.resetting for m in leases.messages)
        assert not leases.messages[-1].resetting
        client.release(reply.lease_id)
    finally:
        wire.close()


def test_a_rewind_is_refused_while_code_runs_and_while_estopped(stack):
    _, client = stack
    token = client.client.acquire("refused", wait_s=30)     # after the last test's reset
    try:
        run = client.send("import time\nprint('waiting', flush=True)\ntime.sleep(60)\n",
                          lease_id=token)
        wait_until(lambda: "waiting" in run.stdout(), 30, "the code to run")
        with failing_the_test():
            rewind = client.client.rewind()
            result = rewind.result(30)
        assert rewind.action_status == GoalStatus.STATUS_ABORTED
        assert "busy: execution" in result.message
        assert client.call("estop", Trigger.Request()).success
        run.result(30)
        with failing_the_test():
            rewind = client.client.rewind()
            result = rewind.result(30)
        assert rewind.action_status == GoalStatus.STATUS_ABORTED and "estopped" in result.message
        assert client.call("estop/reset", ResetEstop.Request(lease_id=token)).success
    finally:
        client.client.release()


def test_a_released_base_lease_is_reset_while_the_arm_agent_works_on(stack):
    """reset_on_release per lease: the base agent's lease ends and its base is driven back
    to where that lease began, while the arm agent's code keeps running (its arm is not
    rewound, its goal succeeds)."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        nav, hand = client.two_agents(wait_s=30.0)      # after the last test's reset
        x0 = wire.state("base")["base_pose"][0]
        _, moved = client.run("from tidybot_sdk import base\nbase.move_delta(dx=0.2)\n",
                              lease_id=nav.lease_id)
        assert moved.status == 0, moved.stderr
        waving = client.send(
            "from tidybot_sdk import arm\nq0 = arm.get_state()['q']\nq1 = list(q0)\n"
            "q1[0] += 0.4\nprint('waving', flush=True)\n"
            "for _ in range(6):\n    arm.move_joints(q1)\n    arm.move_joints(q0)\n"
            "print('done')\n", lease_id=hand.lease_id)
        wait_until(lambda: "waving" in waving.stdout(), 30, "the arm agent's code to run")
        assert client.release(nav.lease_id).success
        wait_until(lambda: abs(wire.state("base")["base_pose"][0] - x0) <= 0.02, 60,
                   "the base to be driven back")
        assert "done" not in waving.stdout()            # while the arm agent's code ran
        _, result = waving.result(90)
        assert result.status == 0 and result.stdout == "waving\ndone\n", result.error
        client.release(hand.lease_id)
    finally:
        wire.close()
