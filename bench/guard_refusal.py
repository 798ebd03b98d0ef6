#!/usr/bin/env python3
"""What the guard costs per refused command (DESIGN §12.3: a command to a part the
execution's lease does not hold is refused by the guard before it reaches the backend).

    ./tidybot run python bench/guard_refusal.py [--calls 500]

A real Guard (tidybot_exec.guard.relay, in this process as in the node) in front of the
simulator as a process, its lease restricted to the base (``guard.lease(["base"], ...)``).
The SDK runs in a process of its own, as the submitted code does, pointed at the guard's
unix sockets, and times each call (round-robin over the cases, so they share the load):

- admitted: ``base.stop()`` — a cheap command to the leased part, checked and forwarded to
  the simulator, whose reply comes back through the guard;
- refused: ``arm.stop()`` and ``gripper.stop()`` — the same command to parts the lease does
  not hold, answered by the guard with ``ResourceNotLeased`` (nothing reaches the backend).
  The gripper's call makes two requests: its ``stop_on_interrupt`` answers the refusal with
  a STOP of its own, refused too;
- reading an unheld part: the arm's GET_STATE request (always allowed: forwarded), and
  ``arm.get_state()`` (the SDK's usual read: the newest message of the state stream the
  guard relays, no request at all);
- for reference, ``base.stop()`` and the arm's GET_STATE straight to the simulator, no guard.

A refusal costs one request/reply on the guard's socket and the lease check; the
difference to "admitted" is the backend's round trip it saves. The guard's refusal log is
a no-op here (in the node it is one line in the node's log).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import free_ports, start_sim, stop
from tidybot_exec.guard.relay import Guard
from tidybot_exec.sim import SimConfig
from tidybot_sdk.config import SdkConfig

CASES = ("admitted: base.stop()", "refused: arm.stop()", "refused: gripper.stop() (2 requests)",
         "unheld read: arm GET_STATE request", "unheld read: arm.get_state()",
         "no guard: base.stop()", "no guard: arm GET_STATE request")
HOLDER = "arm-agent"


def sdk_calls(guarded: dict, direct: dict, calls: int) -> dict[str, list[float]]:
    """In the SDK's process: ``calls`` rounds of every case, each call timed (seconds)."""
    from tidybot_sdk import Robot
    from tidybot_sdk.errors import ResourceNotLeased
    from tidybot_sdk.protocol import ArmMsg

    through, straight = (Robot(SdkConfig().with_endpoints(e)) for e in (guarded, direct))

    def refused(call) -> None:
        try:
            call()
        except ResourceNotLeased as exc:
            assert exc.holder == HOLDER, exc.holder
            return
        raise AssertionError("not refused")

    run = dict(zip(CASES, (
        through.base.stop, lambda: refused(through.arm.stop),
        lambda: refused(through.gripper.stop),
        lambda: through.backend("arm").request(ArmMsg.GET_STATE), through.arm.get_state,
        straight.base.stop, lambda: straight.backend("arm").request(ArmMsg.GET_STATE))))
    times: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for _ in range(20):                     # connect every socket, warm the paths
            for call in run.values():
                call()
        for _ in range(calls):
            for case, call in run.items():
                began = time.perf_counter()
                call()
                times[case].append(time.perf_counter() - began)
    finally:
        through.close()
        straight.close()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=500, help="timed calls per case")
    p.add_argument("--sdk", help=argparse.SUPPRESS)     # the SDK's process: JSON endpoints
    a = p.parse_args()
    if a.sdk:
        guarded, direct = json.loads(a.sdk)
        print(json.dumps(sdk_calls(guarded, direct, a.calls)))
        return
    ports = free_ports(7)
    sim = start_sim(ports)
    direct = SimConfig(arm_ports=tuple(ports[0:3]), gripper_ports=tuple(ports[3:5]),
                       base_ports=tuple(ports[5:7])).addresses()
    guard = Guard(SdkConfig().with_endpoints(direct), tempfile.mkdtemp()).start()
    guard.lease(["base"], lambda name: HOLDER)
    try:
        out = subprocess.run([sys.executable, __file__, "--calls", str(a.calls), "--sdk",
                              json.dumps([guard.endpoints, direct])],
                             check=True, capture_output=True, text=True).stdout
    finally:
        guard.close()
        stop(sim)
    times = json.loads(out)
    print(f"guard cost per command, lease holds the base only ({a.calls} calls each):")
    for case in CASES:
        us = np.asarray(times[case]) * 1e6
        print(f"  {case:38s} p50 {np.percentile(us, 50):7.0f} us  "
              f"p99 {np.percentile(us, 99):7.0f} us")
    refusals = sum(r.startswith(("arm:", "gripper:")) for r in guard.refusals)
    print(f"  the guard logged {refusals} refusals (expected {3 * (a.calls + 20)}: arm 1, "
          f"gripper 2 per call)")


if __name__ == "__main__":
    main()
