#!/usr/bin/env python3
"""Simulator cost: CPU use of tidybot-sim at a given arm state rate, and its start-up time.

    ./tidybot run python bench/sim_cpu.py --rates 100 1000 --seconds 10

CPU is the sim process's user+system time over the window divided by wall time (1.0 = one
full core); the received rate is what a subscriber actually got.
"""
from __future__ import annotations

import argparse
import signal
import time

from common import cpu_seconds, free_ports, start_sim
from tidybot_sdk.transport import StateSubscriber, endpoint


def measure(rate: float, seconds: float) -> None:
    ports = free_ports(7)
    start = time.monotonic()
    proc = start_sim(ports, "--arm-state-rate", str(rate))
    listening = time.monotonic() - start
    sub = StateSubscriber(endpoint("127.0.0.1", ports[1]), "arm")
    sub.wait_next(10)
    first_state = time.monotonic() - start
    time.sleep(1.0)                                   # settle
    c0, n0, t0 = cpu_seconds(proc.pid), sub.count, time.monotonic()
    time.sleep(seconds)
    c1, n1, t1 = cpu_seconds(proc.pid), sub.count, time.monotonic()
    sub.close()
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    print(f"arm state {rate:6.0f} Hz: sim CPU {100 * (c1 - c0) / (t1 - t0):5.1f}% of one core, "
          f"received {(n1 - n0) / (t1 - t0):7.1f} msg/s; listening after {listening * 1000:.0f} ms, "
          f"first state after {first_state * 1000:.0f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0])
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    for rate in a.rates:
        measure(rate, a.seconds)


if __name__ == "__main__":
    main()
