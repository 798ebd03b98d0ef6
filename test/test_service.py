"""The execution service on its own: real child processes, a fake lease clock, no ROS.

These pin down the order of an execution's end (child dead → hold → record → lease handed
on → result), the lease/stop races, the estop latch and shutdown, without any timing luck:
tests wait on events that the service's own callbacks set.
"""
from __future__ import annotations

import time

from service_harness import harness  # noqa: F401  (the fixture)
from support import wait_until
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Status

def test_one_at_a_time_and_a_hold_only_after_an_abnormal_end(harness):
    h = harness(require_lease=False)
    first = h.service.start(Request("import time\ntime.sleep(1)\n"), "", lambda *a: None)
    busy = h.service.start(Request("print(1)"), "", lambda *a: None)
    assert busy.status == Status.REJECTED and busy.error.startswith(f"busy: execution {first.id}")
    assert h.service.finish(first).status == Status.SUCCEEDED and "hold" not in h.events
    failed = h.service.run(Request("raise SystemExit(4)"))
    assert (failed.status, failed.exit_code, failed.error) == (Status.FAILED, 4, "exited with code 4")
    assert h.events.count("hold") == 1 and h.service.snapshot().current is None
    assert [r.execution_id for r in h.service.page().records] == [failed.execution_id, first.id]


def test_release_while_running_hands_the_lease_on_only_after_the_hold(harness):
    h = harness()
    token = h.token("first")
    run = h.begin(lease_id=token)
    waiting = h.acquire("second", wait_s=30.0)
    assert waiting == []                                  # in line behind "first"
    assert h.leases.release(token) == (True, "released")
    assert h.acquire("third")[0].message.startswith(
        "the lease of 'first' ended and the robot is not handed on yet")
    result = run.result()
    assert result.status == Status.CANCELED and result.error == "lease released"
    assert waiting[0].success
    order = [e for e in h.events if e in ("hold", "grant second")]
    assert order == ["hold", "grant second"], h.events
    assert h.service.page().records[0].execution_id == result.execution_id


def test_a_lease_that_ends_before_admission_refuses_the_goal(harness):
    h = harness()
    token = h.token("me")
    h.leases.release(token)
    result = h.service.run(Request("print('never')"), token)
    assert result.status == Status.REJECTED and result.error.startswith("invalid lease")
    assert h.acquire("next")[0].success                  # nothing stayed bound


def test_max_lease_on_a_fake_clock_stops_the_code_and_waits_for_its_end(harness):
    h = harness()
    token = h.token("me")
    run = h.begin(lease_id=token)
    h.clock.now += 50.0                    # past the ttl: a running execution keeps it alive
    h.leases.check_deadlines()
    assert h.leases.renew(token)[0]
    waiting = h.acquire("next", wait_s=100.0)
    h.clock.now += 60.0                    # past max_lease_s: it ends whatever runs
    h.leases.check_deadlines()
    result = run.result()
    assert result.status == Status.CANCELED and result.error == "lease reached max_lease_s"
    wait_until(lambda: waiting, 10, "the next holder's grant")
    assert waiting[0].success and h.events.index("hold") < h.events.index("grant next")


def test_feedback_that_fails_loses_nothing_else(harness):
    h = harness(require_lease=False)
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("publisher is invalid")

    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\n"
    result = h.service.run(Request(code), "", broken)
    assert result.status == Status.SUCCEEDED and result.stdout == "0\n1\n2\n"
    assert len(calls) == 1 and any("feedback stopped" in e for e in h.events)
    assert h.service.page().records[0].execution_id == result.execution_id


def test_a_failed_history_write_and_a_failed_hold_are_in_the_result(harness):
    h = harness(require_lease=False, hold_problems=["stop arm: no reply within 1s"])
    run = h.begin()
    h.service.history.close()              # the next write raises
    h.service.cancel(run.execution)
    result = run.result()
    assert result.status == Status.CANCELED
    assert result.error.startswith("canceled by the client; hold failed: stop arm: no reply")
    assert "history not written" in result.error
    assert h.service.snapshot().hold_problem == "hold failed: stop arm: no reply within 1s"
    assert h.service.snapshot().current is None
    h.service.history = History(h.service.history.path.parent, 100)   # for the fixture's close


def test_estop_kills_without_grace_latches_and_resets_with_the_lease(harness):
    h = harness(grace_s=30.0)              # a soft stop would take 30 s with this code
    token = h.token("me")
    run = h.begin(lease_id=token)
    h.service.cancel(run.execution)        # a soft stop in its grace ...
    started = time.monotonic()
    stopped, problems = h.service.estop()  # ... is cut short by the estop
    assert stopped == [run.execution.id] and problems == []
    result = run.result()
    assert time.monotonic() - started < 20.0
    assert result.status == Status.CANCELED and result.exit_code < 0
    assert h.events.count("hold") == 2     # the estop's own, and the end path's
    snap = h.service.snapshot()
    assert snap.estopped and snap.current is None
    refused = h.service.run(Request("print(1)"), token)
    assert (refused.status, refused.error) == (Status.REJECTED, "estopped: call estop/reset")
    assert h.service.reset_estop("") == (False, "no lease: call lease/acquire and pass its lease_id")
    assert h.service.reset_estop(token)[0] and not h.service.snapshot().estopped
    assert h.service.run(Request("print(1)"), token).status == Status.SUCCEEDED


def test_shutdown_ends_the_running_execution_through_the_end_path(harness):
    h = harness()
    token = h.token("me")
    run = h.begin("import time\nprint('started', flush=True)\ntime.sleep(60)\n", lease_id=token)
    h.service.shutdown()
    # shutdown returned after the end path ran: the tree is gone, the hold commanded, the
    # record written (finish's thread may still be returning: it is not waited for here)
    assert "hold" in h.events and not run.execution.workdir.exists()
    assert h.service.page().records[0].execution_id == run.execution.id
    result = run.result()
    assert (result.status, result.error) == (Status.CANCELED, "node shutting down")
    refused = h.service.run(Request("print(1)"), token)
    assert (refused.status, refused.error) == (Status.REJECTED, "node shutting down")


def test_a_stop_with_a_token_stops_that_leases_code_only_and_hold_errors_stay_per_part(tmp_path):
    """Without require_lease: execution/stop with a token that is no lease's stops nothing
    (an agent whose lease lapsed must not stop another's code); with none, everything. A
    hold that fails for the arm stays reported until the arm's own hold succeeds, whatever
    the other parts' holds did meanwhile."""
    from service_harness import STUBBORN, Harness

    h = Harness(tmp_path, "", require_lease=False)
    try:
        run = h.begin(STUBBORN.replace("signal.SIG_IGN", "signal.SIG_DFL"))
        assert h.service.stop("f" * 64) == ([], "")
        assert not run.execution.stopping
        assert h.service.stop("") == ([run.execution.id], "")
        assert run.result().status == Status.CANCELED
        h.hold_problems = ["arm: no answer in 0.5 s (tcp://127.0.0.1:1)"]
        h.service.hold(("arm", "gripper"))
        h.hold_problems = []
        h.service.hold(("base",))
        assert h.service.snapshot().hold_problem == ("hold failed: arm: no answer in 0.5 s "
                                                     "(tcp://127.0.0.1:1)")
        h.service.hold(("arm",))
        assert h.service.snapshot().hold_problem == ""
    finally:
        h.close()
