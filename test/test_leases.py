"""Leases on a real node: one token at a time, FIFO waiting, lapse, enforcement, secrecy."""
from __future__ import annotations

import threading
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import LeaseStatus
from tidybot_interfaces.srv import AcquireLease, GetHistory, RenewLease, StopExecution

from support import Wire, answered, wait_until
from tidybot_exec.ros.qos import SERVICES

R = ExecuteCode.Result
STACK_PARAMS = {"max_lease_s": 8.0, "lease_default_ttl_s": 30.0, "override_holders": "operator"}


_statuses: list[LeaseStatus] = []


def latest_status(client) -> LeaseStatus | None:
    return _statuses[-1] if _statuses else None


@pytest.fixture(scope="module", autouse=True)
def lease_status(ros, stack):
    qos = QoSProfile(depth=50, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    sub = ros.node.create_subscription(LeaseStatus, "/lease/status", _statuses.append, qos)
    wait_until(lambda: _statuses, 10, "the latched lease status")
    yield _statuses
    ros.node.destroy_subscription(sub)


@pytest.fixture(autouse=True)
def lease_left_free(stack):
    """Free the lease after each test, so one failure cannot hold it for the rest."""
    yield
    _, client = stack

    def free() -> bool:                     # queued waiters may be granted it in turn
        if latest_status(client).held:
            taken = client.call("lease/take", AcquireLease.Request(holder="operator"))
            client.release(taken.lease_id)
            time.sleep(0.2)
        return not latest_status(client).held
    wait_until(free, 30, "the lease to be free")


def test_twenty_simultaneous_acquires_get_exactly_one_token(stack, ros):
    _, client = stack
    # Twenty agents with the service QoS the docs recommend for bursts (see tidybot_exec.qos).
    clients = [ros.node.create_client(AcquireLease, "/lease/acquire", qos_profile=SERVICES)
               for _ in range(20)]
    try:
        # Warm every client up while the lease is held (each call fails harmlessly): Fast DDS
        # drops a reply when the client's response reader is not matched within 100 ms
        # (ros2/rmw_fastrtps#390), and wait_for_service only sees the request side.
        blocker = client.acquire("blocker")
        for c in clients:
            assert c.wait_for_service(timeout_sec=10)
            assert not answered(c, AcquireLease.Request(holder="warm-up")).success
        assert client.release(blocker.lease_id).success
        futures = [c.call_async(AcquireLease.Request(holder=f"agent{i}"))
                   for i, c in enumerate(clients)]
        replies = [ros.result(f, 15, "twenty replies") for f in futures]
    finally:
        for c in clients:
            ros.node.destroy_client(c)
    winners = [(i, r) for i, r in enumerate(replies) if r.success]
    assert len(winners) == 1, [r.message for r in replies]
    (index, winner), = winners
    assert len(winner.lease_id) >= 40
    assert all(r.message.startswith(f"the lease is held by 'agent{index}'") and r.lease_id == ""
               for r in replies if not r.success)
    assert latest_status(client).holder == f"agent{index}"
    assert client.release(winner.lease_id).success


def test_a_burst_of_two_hundred_requests_from_one_client_is_answered_in_full(stack, ros):
    """Service queues keep every request (KEEP_ALL): none is dropped without a word."""
    _, client = stack
    burst = ros.node.create_client(AcquireLease, "/lease/acquire", qos_profile=SERVICES)
    try:
        assert burst.wait_for_service(timeout_sec=10)
        warm = answered(burst, AcquireLease.Request(holder="warm-up"))     # matched both ways
        assert warm.success and client.release(warm.lease_id).success
        futures = [burst.call_async(AcquireLease.Request(holder=f"burst{i}")) for i in range(200)]
        replies = [ros.result(f, 60, "two hundred replies") for f in futures]
    finally:
        ros.node.destroy_client(burst)
    winners = [r for r in replies if r.success]
    assert len(replies) == 200 and len(winners) == 1
    assert client.release(winners[0].lease_id).success


def test_waiters_are_granted_in_fifo_order_and_give_up_at_wait_s(stack, ros):
    _, client = stack
    first = client.acquire("first")
    assert first.success
    pending = {}
    for holder in ("second", "third"):
        c = ros.node.create_client(AcquireLease, "/lease/acquire")
        assert c.wait_for_service(timeout_sec=10)
        pending[holder] = (c, c.call_async(AcquireLease.Request(holder=holder, wait_s=20.0)))
        wait_until(lambda: latest_status(client).waiting_holders[-1:] == [holder], 10,
                   f"{holder} in the queue")
    assert latest_status(client).waiting_holders == ["second", "third"]
    start = time.monotonic()
    gave_up = client.acquire("impatient", wait_s=1.0)
    assert not gave_up.success and "gave up waiting" in gave_up.message
    assert 0.9 < time.monotonic() - start < 5
    assert client.release(first.lease_id).success
    second = ros.result(pending["second"][1], 10)
    assert second.success and not pending["third"][1].done()
    assert latest_status(client).holder == "second"
    assert client.release(second.lease_id).success
    third = ros.result(pending["third"][1], 10)
    assert third.success
    assert client.release(third.lease_id).success
    for c, _ in pending.values():
        ros.node.destroy_client(c)


def test_renew_extends_and_ttl_lapses(stack):
    _, client = stack
    grant = client.acquire("renewer", ttl_s=1.5)
    assert grant.success and grant.ttl_s == 1.5
    for _ in range(3):
        time.sleep(0.8)
        renewed = client.call("lease/renew", RenewLease.Request(lease_id=grant.lease_id))
        assert renewed.success and 1.0 < renewed.remaining_s <= 1.5
    wait_until(lambda: not latest_status(client).held, 5, "the lease to lapse")
    assert not client.call("lease/renew",
                           RenewLease.Request(lease_id=grant.lease_id)).success


def test_max_lease_s_ends_even_a_renewed_lease(stack):
    _, client = stack
    grant = client.acquire("long", ttl_s=100.0)
    start = time.monotonic()
    while client.call("lease/renew", RenewLease.Request(lease_id=grant.lease_id)).success:
        assert time.monotonic() - start < 12, "max_lease_s did not end the lease"
        time.sleep(0.5)
    assert 7.0 < time.monotonic() - start < 10.0


@pytest.mark.parametrize("token,reason", [
    ("", "no lease: call lease/acquire"), ("wrong-token", "invalid lease")])
def test_goals_need_the_current_token(stack, token, reason):
    _, client = stack
    grant = client.acquire("owner")
    try:
        _, result = client.run("print('should not run')", lease_id=token)
        assert result.status == R.STATUS_REJECTED and result.error.startswith(reason)
        assert result.stdout == ""
        reply = client.call("execution/stop", StopExecution.Request(lease_id=token))
        assert not reply.success and reply.message.startswith(reason)
        _, ok = client.run("print('runs')", lease_id=grant.lease_id)
        assert ok.status == R.STATUS_SUCCEEDED
    finally:
        client.release(grant.lease_id)


def test_an_expired_token_is_rejected(stack):
    _, client = stack
    grant = client.acquire("expired")
    assert client.release(grant.lease_id).success
    _, result = client.run("print(1)", lease_id=grant.lease_id)
    assert result.status == R.STATUS_REJECTED and result.error.startswith("invalid lease")


def test_release_during_a_run_cancels_it_and_the_arm_holds(stack):
    sim_stack, client = stack
    grant = client.acquire("mover")
    wire = Wire(sim_stack.config)
    try:
        run = client.send(
            "from tidybot_sdk import arm\n"
            "arm.move_joints([1.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=6)\n",
            lease_id=grant.lease_id)
        wait_until(lambda: wire.state("arm")["q"][0] > 0.1, 30, "the arm to move")
        assert client.release(grant.lease_id).success
        _, result = run.result(30)
        assert result.status == R.STATUS_CANCELED and result.error == "lease released"
        assert wire.arm_holding()["q"][0] < 0.95
        # and back home for the next tests
        home = client.acquire("homer")
        client.run("from tidybot_sdk import arm\narm.go_home()\n", lease_id=home.lease_id)
        client.release(home.lease_id)
    finally:
        wire.close()


def test_a_running_execution_keeps_the_lease_alive(stack):
    _, client = stack
    grant = client.acquire("busy", ttl_s=1.0)
    _, result = client.run("import time\ntime.sleep(2.5)\nprint('done')", lease_id=grant.lease_id)
    assert result.status == R.STATUS_SUCCEEDED
    assert client.call("lease/renew", RenewLease.Request(lease_id=grant.lease_id)).success
    client.release(grant.lease_id)


def test_services_stay_responsive_while_clients_wait(stack, ros):
    _, client = stack
    grant = client.acquire("holder")
    waiting = []
    for i in range(4):
        c = ros.node.create_client(AcquireLease, "/lease/acquire")
        assert c.wait_for_service(timeout_sec=10)
        waiting.append((c, c.call_async(AcquireLease.Request(holder=f"w{i}", wait_s=20.0))))
    # Four clients' requests may reach the node in any order: the node's queue is the order.
    queue = wait_until(lambda: len(w := latest_status(client).waiting_holders) == 4 and list(w),
                       10, "four waiters")
    start = time.monotonic()
    assert client.call("lease/renew", RenewLease.Request(lease_id=grant.lease_id)).success
    client.call("execution/history", GetHistory.Request(max_count=1))
    _, result = client.run("print('still here')", lease_id=grant.lease_id)
    assert result.status == R.STATUS_SUCCEEDED
    assert time.monotonic() - start < 3.5, "the node stalled while clients waited"
    assert client.release(grant.lease_id).success
    for holder in queue:                    # each waiter in turn, in the node's order
        grant = ros.result(waiting[int(holder[1:])][1], 10)
        assert grant.success and grant.lease_id and latest_status(client).holder == holder
        assert client.release(grant.lease_id).success
    for c, _ in waiting:
        ros.node.destroy_client(c)


def test_the_token_never_leaks(stack):
    sim_stack, client = stack
    grant = client.acquire("secretive")
    assert grant.success and len(grant.lease_id) >= 40
    client.run("import os\nprint(sorted(os.environ))", lease_id=grant.lease_id, label="leak?")
    client.release(grant.lease_id)
    token = grant.lease_id
    assert token not in sim_stack.node.stdout + sim_stack.node.stderr
    history_files = list((sim_stack.log_dir / "history").iterdir())   # database, WAL
    assert history_files and all(token.encode() not in f.read_bytes() for f in history_files)
    assert all(token not in str(s) for s in _statuses)
    records = client.call("execution/history", GetHistory.Request()).records
    assert all(token not in str(r) for r in records)
    assert "TIDYBOT" in records[0].stdout_tail and token not in records[0].stdout_tail


def test_an_override_holder_takes_the_lease_and_stops_the_code(stack):
    _, client = stack
    grant = client.acquire("someone")
    assert grant.success
    run = client.send("import time\nprint('busy', flush=True)\ntime.sleep(30)",
                      lease_id=grant.lease_id)
    wait_until(lambda: run.feedback, 30, "the code to start")
    refused = client.call("lease/take", AcquireLease.Request(holder="intruder"))
    assert not refused.success and "may not take the lease over" in refused.message
    taken = client.call("lease/take", AcquireLease.Request(holder="operator"))
    assert taken.success and taken.lease_id
    _, result = run.result(30)
    assert result.status == R.STATUS_CANCELED
    assert result.error == "lease revoked: taken over by 'operator'"
    assert latest_status(client).holder == "operator"
    assert not client.call("lease/renew", RenewLease.Request(lease_id=grant.lease_id)).success
    assert client.release(taken.lease_id).success


def test_a_lease_on_the_base_drives_it_reads_the_arm_and_is_refused_the_arm(stack, lease_status):
    """Leases per resource: a base lease and an arm lease are held at once (lease/status
    names each part's holder); code under the base lease moves the base and reads the arm,
    and its arm command is refused by the guard (ResourceNotLeased, naming the arm's
    holder) before the arm moves."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        base, arm = client.two_agents()
        wait_until(lambda: {h.resource: h.holder for h in _statuses[-1].holds} == {
            "arm": "arm-agent", "gripper": "arm-agent", "base": "nav"}, 10, "holds per part")
        q0, x0 = wire.state("arm")["q"], wire.state("base")["base_pose"][0]
        status, result = client.run(
            "from tidybot_sdk import arm, base, sensors\n"
            "from tidybot_sdk.errors import ResourceNotLeased\n"
            "print('arm at', [round(v, 2) for v in sensors.get_arm_joints()][:2], flush=True)\n"
            "base.move_delta(dx=0.05)\n"
            "try:\n    q = list(sensors.get_arm_joints())\n    q[0] += 0.3\n    arm.move_joints(q)\n"
            "except ResourceNotLeased as exc:\n    print('refused:', exc.resource, exc.holder)\n",
            lease_id=base.lease_id)
        # a run the guard refused anything is FAILED, even when the code went on
        assert (result.status, result.exit_code) == (R.STATUS_FAILED, 0), result.stderr
        assert "the arm is not leased to this execution: 'arm-agent' holds it" in result.error
        assert "arm at" in result.stdout and "refused: arm arm-agent" in result.stdout, result.stdout
        assert wire.state("base")["base_pose"][0] - x0 == pytest.approx(0.05, abs=0.01)
        assert max(abs(a - b) for a, b in zip(wire.state("arm")["q"], q0)) < 1e-3
        (record,) = client.call("execution/history", GetHistory.Request(
            execution_id=result.execution_id)).records
        assert list(record.resources) == ["base"]
        # a rewind moves only parts the lease holds: arm and base is refused, the base's
        # goes back to where the lease began
        status, result = client.run(
            "from tidybot_sdk import rewind\n"
            "print(rewind.reset_to_home().error)\n"
            "print(rewind.reset_to_home(components=['base']).success)\n",
            lease_id=base.lease_id)
        assert ("refused: the rewind would move the arm, which this lease does not hold "
                "(it holds base); ask for parts ['base']") in result.stdout, result.stdout
        assert result.stdout.endswith("True\n"), result.stdout
        assert wire.state("base")["base_pose"][0] == pytest.approx(x0, abs=0.01)
        client.release(base.lease_id)
        client.release(arm.lease_id)
    finally:
        wire.close()


def test_overlapping_waiters_are_served_in_order_and_a_disjoint_request_goes_ahead(stack, ros):
    """Per part, FIFO among overlapping waiters: 'both' waits for the arm and the base;
    'nav', later, wants only the base — free now, but it would overtake 'both', so it
    waits too (nobody starves behind later requests); 'hand' wants only the gripper,
    overlaps no waiter and is granted at once."""
    _, client = stack
    arm = client.call("lease/acquire", AcquireLease.Request(holder="arm-agent", resources=["arm"]))
    assert arm.success, arm.message
    pending = {}
    for holder, resources in (("both", ["arm", "base"]), ("nav", ["base"])):
        c = ros.node.create_client(AcquireLease, "/lease/acquire")
        assert c.wait_for_service(timeout_sec=10)
        pending[holder] = (c, c.call_async(AcquireLease.Request(holder=holder, wait_s=20.0,
                                                                resources=resources)))
        wait_until(lambda: latest_status(client).waiting_holders[-1:] == [holder], 10,
                   f"{holder} in the queue")
    hand = client.call("lease/acquire", AcquireLease.Request(holder="hand", resources=["gripper"]))
    assert hand.success, hand.message
    assert not pending["both"][1].done() and not pending["nav"][1].done()
    assert client.release(arm.lease_id).success
    both = ros.result(pending["both"][1], 10)
    assert both.success and not pending["nav"][1].done()
    assert client.release(both.lease_id).success
    assert ros.result(pending["nav"][1], 10).success
    for c, _ in pending.values():
        ros.node.destroy_client(c)
    # (lease_left_free takes what is still held)


def test_two_agents_run_side_by_side(stack):
    """An arm agent and a base agent, each with its own lease, send goals at once: both run
    (execution/status lists both), the simulator measures the arm and the base moving at
    the same instant, and both succeed with their own output."""
    from tidybot_interfaces.msg import ExecutionStatus

    from tidybot_exec.ros.qos import LATCHED

    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    statuses: list = []
    sub = client.ros.node.create_subscription(ExecutionStatus, "/execution/status",
                                              statuses.append, LATCHED)
    both_moving: list[float] = []
    done = threading.Event()

    def watch() -> None:            # the measured state, not the results' word
        while not done.is_set():
            arm_s, base_s = wire.state("arm"), wire.state("base")
            if max(map(abs, arm_s["dq"])) > 0.05 and max(map(abs, base_s["base_velocity"])) > 0.02:
                both_moving.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        nav, hand = client.two_agents()
        watcher.start()
        driving = client.send("from tidybot_sdk import base\nprint('base: off', flush=True)\n"
                              "base.move_delta(dx=0.25)\nbase.move_delta(dx=-0.25)\n"
                              "print('base: back')\n", lease_id=nav.lease_id)
        waving = client.send("from tidybot_sdk import arm\nq0 = arm.get_state()['q']\n"
                             "q1 = list(q0)\nq1[0] += 0.4\nprint('arm: wave', flush=True)\n"
                             "arm.move_joints(q1)\narm.move_joints(q0)\nprint('arm: done')\n",
                             lease_id=hand.lease_id)
        (_, base_result), (_, arm_result) = driving.result(60), waving.result(60)
        assert (base_result.status, arm_result.status) == (R.STATUS_SUCCEEDED,) * 2, (
            base_result.error, arm_result.error)
        assert base_result.stdout == "base: off\nbase: back\n"
        assert arm_result.stdout == "arm: wave\narm: done\n"
        assert both_moving, "the arm and the base never moved at the same time"
        ids = {base_result.execution_id, arm_result.execution_id}
        assert any(set(s.running_execution_ids) == ids for s in statuses), \
            [list(s.running_execution_ids) for s in statuses]
        client.release(nav.lease_id)
        client.release(hand.lease_id)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join(10)
        client.ros.node.destroy_subscription(sub)
        wire.close()
