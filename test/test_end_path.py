"""Every ending ends once: strange signals, huge errors, a step of the end that fails, a
start that fails, a warm pool that fails beside a running goal, an estop while admission
holds the lock. The service in the test process, real child processes (cold, and warm
from the sandboxed zygote), no ROS."""
from __future__ import annotations

import threading
import time

import pytest

from service_harness import STUBBORN, Harness, harness  # noqa: F401  (the fixture)
from support import wait_until
from tidybot_exec.execution import launchers, records, warm
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution.supervision import Execution
from tidybot_exec.guard import relay
from tidybot_exec.sandbox import bwrap, cgroup

QUICK_FAILURE = "print('out', flush=True)\nraise SystemExit(3)\n"
INJECTED = "RuntimeError('injected')"


def test_any_signal_number_is_a_failure_with_the_output_kept(harness):
    """Real-time signals have no name in signal.Signals: the end must not care."""
    h = harness(require_lease=False)
    result = h.service.run(Request("import os\nprint('before', flush=True)\nos.kill(os.getpid(), 40)\n"))
    assert (result.status, result.exit_code) == (Status.FAILED, -40), result
    assert result.error == "killed by signal 40 (SIGRTMIN+6)"
    assert result.stdout == "before\n"
    assert h.service.page().records[0].error == result.error
    assert records.exit_description(-9) == "killed by signal 9 (SIGKILL)"
    assert records.exit_description(-99) == "killed by signal 99 (unnamed)"


def test_a_megabyte_exception_message_fails_at_once_with_its_head(harness):
    """The error report goes through a pipe read after the code's exit: its writer bounds it,
    so the code never blocks on a full pipe (it used to time out, the error lost)."""
    h = harness(require_lease=False)
    result = h.service.run(Request("raise ValueError('x' * 1_000_000)\n", timeout_s=60.0))
    assert result.status == Status.FAILED, result.error[:200]
    assert result.error.startswith("ValueError: xxxx")
    assert "(1000012 characters; the whole message is in stderr) (line 1)" in result.error
    assert len(result.error) < 5000
    assert result.duration_s < 30.0
    assert result.stderr.rstrip().endswith("x" * 100) or result.truncated


# Each step of the end made to fail in turn: where it lives, whether the real step runs
# before the failure, and the words the error names it with.
STEPS = {
    "supervision": (lambda h: Execution, "_stop_path", "instead", "supervision: "),
    "kill": (lambda h: Execution, "_ensure_dead", "after", "killing the process tree: "),
    "guard close": (lambda h: relay.Guard, "close", "after", "closing the safety guard: "),
    "result": (lambda h: Execution, "_result", "instead", "building the result: "),
    "tree close": (lambda h: warm.WarmTree if h.service.pool is not None else launchers.ColdTree,
                   "close", "after", "closing the tree: "),
    "hold": (lambda h: h.service, "_hold", "instead", "hold failed: "),
    "history": (lambda h: History, "append", "instead", "history not written: "),
}


@pytest.mark.parametrize("step", STEPS)
def test_a_step_of_the_end_that_fails_leaves_every_other_done(harness, monkeypatch, step):
    h = harness(require_lease=False)
    token = h.token("me")
    where, name, how, named = STEPS[step]
    owner = where(h)
    original = getattr(owner, name)

    def failing(*args, **kwargs):
        if how == "after":
            original(*args, **kwargs)
        raise RuntimeError("injected")

    monkeypatch.setattr(owner, name, failing)
    if step == "supervision":              # the stop path raises while the code runs on
        run = h.begin(STUBBORN, lease_id=token)
        h.service.cancel(run.execution)
    else:
        run = h.begin("print('started', flush=True)\nraise SystemExit(3)\n", lease_id=token)
    result = run.result(60)
    monkeypatch.undo()
    assert named in result.error and "injected" in result.error, result.error
    assert result.stdout == "started\n"                       # the output is kept
    assert run.execution.tree.poll() is not None              # the code is dead
    assert not run.execution.workdir.exists()
    if step in ("supervision", "result"):                     # the outcome is unknown
        assert result.status == Status.ERROR
    else:
        assert (result.status, result.exit_code) == (Status.FAILED, 3)
    if step != "hold":
        assert "hold" in h.events
    if step != "history":
        assert h.service.page().records[0].error == result.error
    assert h.service.snapshot().current is None               # the next goal may run
    assert h.leases.release(token)[0] and h.acquire("next")[0].success   # not draining
    assert h.service.run(Request("print('next')")).stdout == "next\n"


def test_a_start_that_fails_with_any_error_gives_the_lease_back(tmp_path, monkeypatch):
    h = Harness(tmp_path, binary="")       # cold: the guard starts with the goal
    try:
        token = h.token("me")

        def broken(self):
            raise threading.BrokenBarrierError()

        monkeypatch.setattr(relay.Guard, "start", broken)
        result = h.service.run(Request("print('never')"), token)
        monkeypatch.undo()
        assert result.status == Status.ERROR
        assert result.error == "could not start the execution: BrokenBarrierError()"
        assert h.service.snapshot().current is None
        h.clock.now += 60.0                                    # past the ttl: not bound
        h.leases.check_deadlines()
        wait_until(lambda: not h.leases.status().held, 10, "the lease to lapse")
        assert h.acquire("next")[0].success                    # not left draining
    finally:
        h.close()


def test_an_internal_error_never_leaves_the_code_running(harness, monkeypatch):
    """If the end path itself raises, the last resort still kills the tree before the
    lease is free and the next goal admitted."""
    h = harness(require_lease=False)

    def broken(self):
        assert self.tree.stdout.readline() == b"started\n"    # the code runs, then a bug
        raise RuntimeError("injected")

    monkeypatch.setattr(Execution, "wait", broken)
    execution = h.service.start(Request(STUBBORN), "", lambda *a: None)
    result = h.service.finish(execution)
    monkeypatch.undo()
    assert result.status == Status.ERROR
    assert result.error == f"internal error: {INJECTED}", result.error
    assert execution.tree.poll() is not None and not execution.workdir.exists()
    assert "hold" in h.events
    assert h.service.run(Request("print('next')")).status == Status.SUCCEEDED


def test_estop_holds_without_taking_any_lock(harness):
    """Admission holds the service's lock while it starts processes; an estop must not wait
    for that: it latches, refuses, holds and answers without the lock."""
    h = harness(require_lease=False)
    done: list = []
    with h.service._cond:                  # what admission holds while starting a tree
        estop = threading.Thread(target=lambda: done.append(h.service.estop()))
        estop.start()
        wait_until(lambda: done, 10, "the estop's answer, lock or no lock")
        assert "hold" in h.events and done[0] == ([], [])
    estop.join(10)
    assert h.service.snapshot().estopped


@pytest.mark.stack             # a service with a warm pool and real goals (no harness fixture)
@pytest.mark.parametrize("failure", ["spare", "zygote"])
def test_a_warm_pool_failure_never_touches_the_running_goal(tmp_path, monkeypatch, failure):
    isolation = bwrap.detect()
    if not isolation.sandboxed:
        pytest.skip(f"no sandbox here for the warm worker: {isolation.detail}")
    h = Harness(tmp_path, isolation.bwrap, require_lease=False)
    try:
        pool = h.service.pool
        if failure == "spare":             # the next spare's guard does not start
            def broken(self):
                raise OSError("injected")
            monkeypatch.setattr(relay.Guard, "start", broken)
        else:                              # the zygote stops answering in step
            def broken(*args):
                raise TimeoutError("injected")
            monkeypatch.setattr(warm.socket, "recv_fds", broken)
        code = ("import time\nprint('started', flush=True)\n"
                "for _ in range(40):\n    time.sleep(0.1)\nprint('done')\n")
        run = h.begin(code)
        assert run.execution.tree.__class__ is warm.WarmTree
        wait_until(lambda: "injected" in pool.problem, 30, "the pool's failure")
        monkeypatch.undo()
        result = run.result(60)
        assert (result.status, result.stdout) == (Status.SUCCEEDED, "started\ndone\n"), result
        wait_until(lambda: pool.ready, 60, "a new spare")
        assert pool.problem == ""
        assert h.service.run(Request("print('next')")).stdout == "next\n"
        assert any("warm worker: " in e and "injected" in e for e in h.events)
    finally:
        h.close()


def test_a_cancelled_cold_sandboxed_run_leaves_no_process_cgroup(tmp_path):
    isolation = bwrap.detect()
    if not isolation.sandboxed:
        pytest.skip(f"no sandbox here: {isolation.detail}")
    parents = cgroup._pids_cgroups()
    if not parents:
        pytest.skip("no writable pids cgroup here")
    h = Harness(tmp_path, isolation.bwrap, require_lease=False,
                settings={"warm_worker": False})
    try:
        run = h.begin(STUBBORN)            # ignores SIGINT: the stop path kills the tree
        name = run.execution.workdir.name
        assert any((parent / name).exists() for parent in parents), "no cap was made"
        h.service.cancel(run.execution)
        assert run.result(60).status == Status.CANCELED
        assert not [parent / name for parent in parents if (parent / name).exists()]
    finally:
        h.close()


def test_every_lease_request_is_answered():
    """A waiter whose wait passed while the lease was held is refused, not dropped; an
    operator's take is granted once the code stops, whatever max_wait_s is."""
    from tidybot_exec.execution.leases import LeaseManager

    now = [100.0]
    manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=5, clock=lambda: now[0])
    answers: dict[str, list] = {"a": [], "b": [], "op": []}
    manager.acquire("a", 0, 0, answers["a"].append)
    manager.acquire("b", 0, 2.0, answers["b"].append)
    now[0] += 3.0                          # b's wait is over, the clock thread not yet woken
    manager.release(answers["a"][0].lease_id)
    wait_until(lambda: answers["b"], 10, "b's answer")
    assert not answers["b"][0].success and "gave up waiting" in answers["b"][0].message
    assert len(answers["b"]) == 1
    manager.close()

    manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=0, clock=lambda: now[0])
    manager.acquire("a", 0, 0, answers["a"].append)
    binding = manager.begin_execution(answers["a"][-1].lease_id)
    manager.take("op", 0, answers["op"].append)
    assert answers["op"] == [] and not manager.status().held      # a's code is stopping
    now[0] += 30.0
    manager.check_deadlines()
    manager.end_execution(binding)
    wait_until(lambda: answers["op"], 10, "the take's answer")
    assert answers["op"][0].success and manager.status().holder == "op"
    manager.close()


def test_a_hold_that_raises_is_a_problem_and_a_dead_backend_is_named(monkeypatch):
    from support import free_port
    from tidybot_exec.guard.hold import RobotHold
    from tidybot_sdk import protocol as proto
    from tidybot_sdk.config import SdkConfig
    from tidybot_sdk.transport import RequestClient

    nowhere = {name: {role: f"tcp://127.0.0.1:{free_port()}" for role in roles}
               for name, roles in proto.SOCKETS.items()}
    stopper = RobotHold(SdkConfig().with_endpoints(nowhere), lambda line: None)
    original = RequestClient.request

    def request(self, msg, timeout_s=None):
        if self.name == "gripper":
            raise RuntimeError("injected")
        return original(self, msg, timeout_s)

    monkeypatch.setattr(RequestClient, "request", request)
    started = time.monotonic()
    problems = sorted(stopper())
    assert time.monotonic() - started < 5.0
    stopper.close()
    assert problems[0].startswith("arm: no answer in 0.5 s (tcp://127.0.0.1:")
    assert problems[1].startswith("base: no answer in 0.5 s")
    assert problems[2] == "gripper: RuntimeError('injected')"
