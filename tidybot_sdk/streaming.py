"""Timing for motions: quintic time scaling and a fixed-rate pacer on an absolute schedule.

The pacer computes every tick from the start time (t0 + k/rate) instead of sleeping a
period after each send, so lateness never accumulates into drift; a late tick is sent at
once and the schedule goes on.
"""
from __future__ import annotations

import time
from typing import Iterator

QUINTIC_PEAK = 15.0 / 8.0   # peak of ds/dtau for the quintic below


def quintic(tau: float) -> float:
    """Smooth 0 -> 1 over tau in [0, 1], zero velocity and acceleration at both ends."""
    tau = min(max(tau, 0.0), 1.0)
    return tau ** 3 * (10.0 + tau * (-15.0 + 6.0 * tau))


class Pacer:
    """Yields tick times at ``rate_hz`` on an absolute schedule; records lateness."""

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / rate_hz
        self.start = time.monotonic()
        self.lateness: list[float] = []   # seconds each tick was yielded after its due time
        self._k = 0

    def ticks(self) -> Iterator[float]:
        """Endless ticks; yields seconds since start (the scheduled time of the tick)."""
        while True:
            due = self.start + self._k * self.period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.lateness.append(max(0.0, time.monotonic() - due))
            yield self._k * self.period
            self._k += 1
