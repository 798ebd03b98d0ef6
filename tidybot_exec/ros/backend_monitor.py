"""Health of one backend's state stream: fresh or stale, rate, reconnects (no rclpy).

Feeds the diagnostics and gates the state topics: a stream that stopped is reported, and
its topics stop, instead of repeating old values or publishing zeros.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from enum import IntEnum


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


@dataclass(frozen=True)
class Health:
    level: Level
    message: str
    age_s: float
    rate_hz: float
    reconnects: int
    messages: int


# what each <backend>_served_by value is called where the node says what it drives
SERVED_BY_WORDS = {"simulator": "simulator", "hardware": "hardware", "bridge": "bridge",
                   "": "(source not stated)"}


def drives(name: str, served_by: str, address: str) -> str:
    """``name``'s part of the ready line: what serves it and where, e.g. ``arm simulator
    tcp://127.0.0.1:5555``, so that a node wired to the wrong robot shows it at once."""
    return f"{name} {SERVED_BY_WORDS[served_by]} {address}"


class BackendMonitor:
    """Counts arrivals of one state stream; thread-safe (arrivals come from ZMQ threads).

    ``served_by`` (a <backend>_served_by value, set by the node) leads every health
    message, so /diagnostics says whether the stream comes from a simulator or from
    hardware; its ``hardware_id`` carries the address."""

    def __init__(self, name: str, expected_hz: float, stale_after_s: float,
                 clock=time.monotonic) -> None:
        self.name, self.expected_hz, self.stale_after_s = name, expected_hz, stale_after_s
        self.served_by = ""
        self._clock = clock
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()
        self._last = None
        self._count = 0
        self._reconnects = 0

    def arrived(self) -> None:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last > self.stale_after_s:
                self._reconnects += 1          # the stream came back after a gap
            self._last = now
            self._count += 1
            self._arrivals.append(now)
            while self._arrivals and now - self._arrivals[0] > 2.0:
                self._arrivals.popleft()

    def fresh(self) -> bool:
        with self._lock:
            return self._last is not None and self._clock() - self._last <= self.stale_after_s

    def health(self) -> Health:
        health = self._health()
        return replace(health, message=f"{SERVED_BY_WORDS[self.served_by]}: {health.message}")

    def _health(self) -> Health:
        now = self._clock()
        with self._lock:
            while self._arrivals and now - self._arrivals[0] > 2.0:
                self._arrivals.popleft()
            rate = len(self._arrivals) / 2.0
            if self._last is None:
                return Health(Level.ERROR, "no state received yet: is the backend running?",
                              float("inf"), 0.0, self._reconnects, self._count)
            age = now - self._last
            if age > self.stale_after_s:
                return Health(Level.STALE, f"state stopped {age:.1f}s ago", age, rate,
                              self._reconnects, self._count)
        if rate < 0.5 * self.expected_hz:
            return Health(Level.WARN, f"state at {rate:.1f} Hz, expected {self.expected_hz:g}",
                          age, rate, self._reconnects, self._count)
        return Health(Level.OK, "state fresh", age, rate, self._reconnects, self._count)
