#!/usr/bin/env python3
"""What a dry run adds to an execution: its private simulator's start.

    ./tidybot run python bench/dry_run_start.py --runs 5

Runs the same code through the executor (no ROS) as a plain run and as a dry run, and
prints the median wall time of each (submit to result, child gone), split into the start
(submit to the code's first statement: CLOCK_MONOTONIC is the machine's, so the code's
clock reads the node's) and the end (its last statement to the result: a dry run's
simulator leaves its world on the way), and of a dry run whose code waits for the private
arm's first state.
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

STAMP = "import time\nprint(time.monotonic(), flush=True)\n"
CODE = {"print": STAMP + "print(time.monotonic())\n",
        "first arm state": STAMP + "from tidybot_sdk import arm\narm.get_state()\n"
                                   "print(time.monotonic())\n"}


def median_s(service: ExecutionService, code: str, dry_run: Seed | None, runs: int
             ) -> tuple[float, ...]:
    """Medians of (submit to result, submit to the code's first line, submit to its last,
    its last line to the result)."""
    times = []
    for _ in range(runs):
        start = time.monotonic()
        result = service.run(Request(code, dry_run=dry_run))
        end = time.monotonic()
        if result.status != Status.SUCCEEDED:
            raise SystemExit(f"run failed: {result.error}\n{result.stderr}")
        first, last = map(float, result.stdout.split()[:2])
        times.append((end - start, first - start, last - start, end - last))
    return tuple(statistics.median(t[i] for t in times) for i in range(4))


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
    for what, (total, began, _, ended) in (("plain run", plain), ("dry run", dry)):
        print(f"print: {what:9} {total:.3f}s: started {began:.3f}s after the submit, "
              f"answered {ended:.3f}s after its last line")
    print(f"dry run, arm.get_state() returned {first_state[2]:.3f}s after the submit "
          f"(the private simulator answers; whole run {first_state[0]:.3f}s)")

if __name__ == "__main__":
    main()
