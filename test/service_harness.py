"""The execution service in a test process: real child processes, a fake lease clock, a
hold that logs instead of driving a robot (no ROS). Shared by test_service and test_end_path."""
from __future__ import annotations

import threading

import pytest

from support import wait_until
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.execution.supervision import Execution
from tidybot_exec.sandbox import bwrap
from tidybot_sdk.protocol import RESOURCES

STUBBORN = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('started', flush=True)\nwhile True:\n    time.sleep(0.01)\n")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A service whose hold, lease grants and status changes are logged in order."""

    def __init__(self, tmp_path, binary: str, grace_s: float = 0.5, hold_problems=None,
                 settings: dict | None = None, robot_hold=None, **policy) -> None:
        self.events: list[str] = []
        self.clock = FakeClock()
        self.hold_problems = hold_problems or []
        self.robot_hold = robot_hold        # a real hold (guard/hold.py RobotHold) as well
        self.service = ExecutionService(
            ExecutorSettings(stop_grace_s=grace_s, bwrap=binary, **(settings or {})),
            History(tmp_path, 100), self._hold,
            LeasePolicy(**{"default_ttl_s": 10.0, "max_lease_s": 100.0, "max_wait_s": 500.0,
                           **policy}),
            log=lambda line: self.events.append(f"log {line}"), clock=self.clock)
        self.leases = self.service.leases
        if self.service.pool is not None:
            wait_until(lambda: self.service.pool.ready, 60, "the warm worker")

    def _hold(self, parts=RESOURCES) -> list[str]:
        """Logged "hold" (every part) or "hold arm,gripper" (some)."""
        self.events.append("hold" if tuple(parts) == RESOURCES else f"hold {','.join(parts)}")
        return list(self.hold_problems) + (self.robot_hold(parts) if self.robot_hold else [])

    def acquire(self, holder: str, wait_s: float = 0.0, resources=None):
        answers: list = []
        self.leases.acquire(holder, 0.0, wait_s,
                            lambda grant: (answers.append(grant), self.events.append(f"grant {holder}")),
                            resources)
        return answers

    def token(self, holder: str, resources=None) -> str:
        (grant,) = self.acquire(holder, resources=resources)
        assert grant.success, grant.message
        return grant.lease_id

    def begin(self, code: str = STUBBORN, lease_id: str = "", **fields) -> "Run":
        """Start ``code``, end it through ``finish`` in a thread (which also delivers the
        feedback), and return once it printed 'started'."""
        lines: list[str] = []
        execution = self.service.start(Request(code, **fields), lease_id,
                                       lambda _id, stream, text, _t: lines.append(text))
        assert isinstance(execution, Execution), execution
        run = Run(self.service, execution)
        wait_until(lambda: "started" in "".join(lines), 30, "the code to start")
        return run

    def close(self) -> None:
        self.service.shutdown()
        self.service.history.close()


class Run:
    def __init__(self, service: ExecutionService, execution: Execution) -> None:
        self.execution, self._done = execution, {}
        self.thread = threading.Thread(
            target=lambda: self._done.setdefault("result", service.finish(execution)))
        self.thread.start()

    def result(self, timeout: float = 60.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the execution did not end"
        return self._done["result"]


@pytest.fixture(params=["cold", "warm"])
def harness(tmp_path, request):
    """Executions started cold and unsandboxed, or from the sandboxed warm worker."""
    binary = ""
    if request.param == "warm":
        isolation = bwrap.detect()
        if not isolation.sandboxed:
            pytest.skip(f"no sandbox here for the warm worker: {isolation.detail}")
        binary = isolation.bwrap
    made: list[Harness] = []

    def make(**kwargs) -> Harness:
        made.append(Harness(tmp_path / str(len(made)), binary, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()
