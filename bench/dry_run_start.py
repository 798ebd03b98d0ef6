#!/usr/bin/env python3
"""What a dry run adds to an execution: its private simulator's start.

    ./tidybot run python bench/dry_run_start.py --runs 5

Runs the same code through the executor (no ROS) as a plain run and as a dry run, and
prints the median wall time of each (submit to result, child gone), and of a dry run whose
code waits for the private arm's first state.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from tidybot_exec.execution.dry_run import Seed
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request, Status
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy

CODE = {"print": "print('hi')\n",
        "first arm state": "from tidybot_sdk import arm\narm.get_state()\n"}


def median_s(service: ExecutionService, code: str, dry_run: Seed | None, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        result = service.run(Request(code, dry_run=dry_run))
        times.append(time.monotonic() - start)
        if result.status != Status.SUCCEEDED:
            raise SystemExit(f"run failed: {result.error}\n{result.stderr}")
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as history:
        service = ExecutionService(ExecutorSettings(), History(history, 100), lambda: [],
                                   LeasePolicy(require_lease=False))
        plain = median_s(service, CODE["print"], None, a.runs)
        dry = median_s(service, CODE["print"], Seed(), a.runs)
        first_state = median_s(service, CODE["first arm state"], Seed(), a.runs)
        service.shutdown()
    print(f"print('hi'):           plain run {plain:.3f}s, dry run {dry:.3f}s "
          f"(+{dry - plain:.3f}s)")
    print(f"dry run, arm.get_state(): {first_state:.3f}s (the private simulator answers)")

if __name__ == "__main__":
    main()
