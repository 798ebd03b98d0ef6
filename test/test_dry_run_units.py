"""A dry run whose private simulator cannot start, on the execution service alone."""
from __future__ import annotations

from support import private_sims, wait_until
from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy


def test_a_simulator_that_cannot_start_is_a_server_error(tmp_path):
    stopped = []
    service = ExecutionService(ExecutorSettings(), History(tmp_path, 10),
                               lambda: stopped.append(True) or [], LeasePolicy(require_lease=False))
    bad = Seed(q=[9.0] * 7)                   # outside the Panda limits: the simulator refuses
    result = service.run(Request("print('never')", dry_run=bad))
    service.shutdown()
    assert result.status == Status.ERROR and result.dry_run
    assert result.error.startswith("dry run: the simulated robot did not start (tidybot-sim: "
                                   "initial_q must be 7 joint angles within the Panda limits")
    assert "never" not in result.stdout and stopped == []
    # its simulator exits by itself (exit 2) and may still be ending under load; private_sims
    # sees the whole machine (CI runs another session beside this one, whose dry runs end)
    wait_until(lambda: not private_sims(), 15, "no private simulator left")
