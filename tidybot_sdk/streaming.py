"""Timing for motions: quintic time scaling and a fixed-rate pacer on an absolute schedule.

The pacer computes every tick from the start time (t0 + k/rate) instead of sleeping a
period after each send, so lateness never accumulates into drift. A tick that comes late
is sent at once; ticks missed altogether (the process was not scheduled: a busy machine)
are skipped, not sent in a burst.

A stream's *motion time* (``Pacer.motion``) advances with the clock but by at most
``max_advance`` per tick, and by one period after a silence longer than ``restart_after``
(the backend's hold-off, after which the guard starts judging from the measured state):
after a stall the path goes on from where it was instead of jumping ahead. A jump would be
a step the guard's speed gate refuses (more motion than the cap allows between two
targets), and every later target would be as far from the last admitted one, so the motion
would never arrive; the cost is that a motion slowed by stalls takes as much longer as the
stalls lasted.
"""
from __future__ import annotations

import math
import time
from typing import Iterator

QUINTIC_PEAK = 15.0 / 8.0   # peak of ds/dtau for the quintic below
QUINTIC_ACCEL_PEAK = 10.0 / math.sqrt(3.0)   # peak of |d2s/dtau2| (at tau = 0.5 -+ sqrt(3)/6)


def quintic(tau: float) -> float:
    """Smooth 0 -> 1 over tau in [0, 1], zero velocity and acceleration at both ends."""
    tau = min(max(tau, 0.0), 1.0)
    return tau ** 3 * (10.0 + tau * (-15.0 + 6.0 * tau))


def quintic_duration(distance: float, speed: float, accel: float) -> float:
    """The shortest quintic over ``distance`` whose peak speed and acceleration stay
    within ``speed`` and ``accel``."""
    return max(QUINTIC_PEAK * distance / speed, math.sqrt(QUINTIC_ACCEL_PEAK * distance / accel))


class Pacer:
    """Yields tick times at ``rate_hz`` on an absolute schedule; records lateness.

    ``max_advance`` (s, default two periods): the most motion time one tick may add;
    ``restart_after`` (s): a silence after which a tick adds only one period."""

    def __init__(self, rate_hz: float, max_advance: float | None = None,
                 restart_after: float = math.inf) -> None:
        self.period = 1.0 / rate_hz
        self.max_advance = 2.0 * self.period if max_advance is None else max_advance
        self.restart_after = restart_after
        self.start = time.monotonic()
        self.lateness: list[float] = []   # seconds each tick was yielded after its due time
        self.motion = 0.0                 # motion time of the last tick (s)
        self._k = 0

    def ticks(self) -> Iterator[float]:
        """Endless ticks; yields seconds since start (the scheduled time of the tick) and
        keeps ``motion`` up to date."""
        previous = None
        while True:
            due = self.start + self._k * self.period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
                now = time.monotonic()
            elif now - due >= self.period:          # whole ticks missed: skip them
                self._k = math.floor((now - self.start) / self.period)
                due = self.start + self._k * self.period
            self.lateness.append(max(0.0, now - due))
            if previous is not None:
                gap = now - previous
                self.motion += self.period if gap > self.restart_after else min(gap, self.max_advance)
            previous = now
            yield self._k * self.period
            self._k += 1
