#!/usr/bin/env python3
"""What containment costs: the safety guard per command, the sandbox per goal.

    ./tidybot run python bench/containment.py --commands 2000 --goals 10

Guard: an in-process simulator; GET_STATE round trips straight to it and through a Guard
(the guard's socket, its check, its upstream request), and the check alone for a streamed
joint target; p50/p99 of each and of the difference. Sandbox: ``print('hi')`` through the
execution service with and without bwrap (submit to result, child gone), median of each.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.guard.relay import Guard
from tidybot_exec.sandbox import bwrap
from tidybot_sdk.protocol import ArmMsg
from tidybot_sdk.transport import RequestClient

from common import in_process_simulator


def percentiles(samples: list[float]) -> str:
    ms = np.asarray(samples) * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms"


def round_trips(address: str, n: int) -> list[float]:
    client, times = RequestClient(address, "arm"), []
    for _ in range(n):
        start = time.perf_counter()
        client.request({"msg_type": int(ArmMsg.GET_STATE)})
        times.append(time.perf_counter() - start)
    client.close()
    return times


def guard_cost(n: int) -> None:
    simulator, upstream = in_process_simulator()
    with tempfile.TemporaryDirectory() as directory:
        guard = Guard(upstream, directory).start()
        try:
            round_trips(upstream.arm["cmd"], 100)                        # warm up both paths
            round_trips(guard.endpoints["arm"]["cmd"], 100)
            direct = round_trips(upstream.arm["cmd"], n)
            guarded = round_trips(guard.endpoints["arm"]["cmd"], n)
            q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
            checks = []
            time.sleep(0.2)                                               # state has arrived
            for i in range(n):
                msg = {"msg_type": int(ArmMsg.JOINT_POSITION), "q": (q + 1e-5 * (i % 10)).tolist()}
                start = time.perf_counter()
                assert guard.envelope.check("arm", msg) is None
                checks.append(time.perf_counter() - start)
        finally:
            guard.close()
            simulator.stop()
    print(f"GET_STATE straight to the backend: {percentiles(direct)}")
    print(f"GET_STATE through the guard:       {percentiles(guarded)}")
    print(f"  added by the guard:              p50 "
          f"{1000 * (np.percentile(guarded, 50) - np.percentile(direct, 50)):.3f} ms, p99 "
          f"{1000 * (np.percentile(guarded, 99) - np.percentile(direct, 99)):.3f} ms")
    print(f"check of a streamed joint target (limits, FK box, speed): {percentiles(checks)}")


def goal_seconds(binary: str, n: int, warm: bool = False) -> float:
    """Median in-process seconds of a trivial goal: cold (a fresh supervisor and code
    process per goal) or from the warm worker (a spare forked by the zygote)."""
    with tempfile.TemporaryDirectory() as history:
        service = ExecutionService(ExecutorSettings(bwrap=binary, warm_worker=warm),
                                   History(history, 100), lambda: [],
                                   LeasePolicy(require_lease=False))
        deadline = time.monotonic() + 60
        while warm and not service.pool.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        times = []
        for _ in range(n):
            start = time.monotonic()
            result = service.run(Request("print('hi')"))
            times.append(time.monotonic() - start)
            assert result.stdout == "hi\n", result.error
        service.shutdown()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--commands", type=int, default=2000)
    p.add_argument("--goals", type=int, default=10)
    a = p.parse_args()
    guard_cost(a.commands)
    isolation = bwrap.detect()
    plain = goal_seconds("", a.goals)
    print(f"print('hi') unsandboxed: {plain:.3f} s median")
    if isolation.sandboxed:
        boxed = goal_seconds(isolation.bwrap, a.goals)
        print(f"print('hi') in the sandbox, cold: {boxed:.3f} s median (+{boxed - plain:.3f} s)")
        warm = goal_seconds(isolation.bwrap, a.goals, warm=True)
        print(f"print('hi') in the sandbox, warm worker: {warm * 1000:.1f} ms median")
    else:
        print(f"no sandbox here: {isolation.detail}")


if __name__ == "__main__":
    main()
