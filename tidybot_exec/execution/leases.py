"""The robot lease: exactly one operator drives the robot at a time (no rclpy).

* ``acquire`` grants at once when free, fails at once when held and ``wait_s`` is 0, and
  otherwise queues the caller FIFO for up to ``wait_s`` (capped by ``max_wait_s``). It
  answers through a callback, exactly once (granted, or refused when its wait ends), so a
  waiting caller holds no thread.
* ``take`` (operator override) puts its caller first in line with no deadline: it is
  answered once the ended lease's code has stopped, whatever ``max_wait_s`` is.
* The lease lapses ``ttl_s`` after the last renew or activity — never while an execution
  runs under it — and in any case ``max_lease_s`` after it was granted.
* A lapse, release or take-over calls ``on_end(binding, reason)`` so the code running under
  that lease is stopped (and, with ``keep_after_end``, the robot reset before the next grant:
  the lease stays draining until ``end_execution`` is called once more for it). The next waiter is granted only once every execution bound to the
  ended lease has ended (``end_execution``): its code is dead and the robot was told to hold
  before anyone else may drive it. Meanwhile the lease is *draining*.
* Tokens are 256-bit random, compared in constant time, and never part of any status.
* A ttl_s between 0 and 0.1 s is refused rather than granted to lapse at once: it is almost
  always a mistake (validation.duration_error says why).
"""
from __future__ import annotations

import hmac
import itertools
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from tidybot_exec.execution.validation import duration_error


def _check(ttl_s: float, wait_s: float = 0.0) -> str:
    """Why these durations make no sense ("" when they do)."""
    if math.isnan(wait_s):
        return "wait_s must be a number of seconds"
    return duration_error("ttl_s", ttl_s)


@dataclass(frozen=True)
class Grant:
    """The answer to one acquire."""

    success: bool
    lease_id: str = ""
    message: str = ""
    ttl_s: float = 0.0


@dataclass(frozen=True)
class LeaseStatus:
    held: bool
    holder: str
    seconds_to_lapse: float
    waiting_holders: list[str]


@dataclass
class _Lease:
    token: str
    holder: str
    ttl_s: float
    granted_at: float
    last_activity: float
    running: int = 0          # executions bound to this lease (they keep it alive)
    serial: int = field(default_factory=itertools.count(1).__next__)   # names it, not secret


Binding = _Lease     # what begin_execution hands out and end_execution takes back


@dataclass
class _Waiter:
    holder: str
    ttl_s: float
    deadline: float
    answer: Callable[[Grant], None]


class LeaseManager:
    def __init__(self, *, default_ttl_s: float, max_lease_s: float, max_wait_s: float,
                 on_end: Callable[["Binding", str], None] = lambda binding, reason: None,
                 on_change: Callable[[], None] = lambda: None,
                 on_grant: Callable[[int], None] = lambda serial: None,
                 keep_after_end: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default_ttl_s, self.max_lease_s, self.max_wait_s = default_ttl_s, max_lease_s, max_wait_s
        self._on_end, self._on_change, self._clock = on_end, on_change, clock
        self._on_grant = on_grant     # called under the lock: it must take no lock of ours
        # an ended lease keeps the robot until end_execution is called once more for it (the
        # service's reset on release), decided under the lock so no grant slips in between
        self._keep_after_end = keep_after_end
        self._cond = threading.Condition()
        self._lease: _Lease | None = None
        self._draining: _Lease | None = None    # ended, but code bound to it still stopping
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="lease-clock", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- requests
    def acquire(self, holder: str, ttl_s: float, wait_s: float,
                answer: Callable[[Grant], None]) -> None:
        """Answer (now or later, exactly once) with a Grant for ``holder``."""
        holder = holder.strip() or "anonymous"
        ttl = min(ttl_s if ttl_s > 0 else self.default_ttl_s, self.max_lease_s)
        if problem := _check(ttl_s, wait_s):
            answer(Grant(False, message=problem))
            return
        with self._cond:
            if self._free() and not self._waiters:
                grant = self._grant(holder, ttl)
            elif wait_s <= 0:
                grant = Grant(False, message=self._busy_message())
            else:
                wait = min(wait_s, self.max_wait_s)
                self._waiters.append(_Waiter(holder, ttl, self._clock() + wait, answer))
                self._cond.notify_all()
                grant = None
        self._on_change()
        if grant is not None:
            answer(grant)

    def renew(self, token: str) -> tuple[bool, str, float]:
        """(success, message, remaining_s): resets the ttl countdown."""
        with self._cond:
            lease = self._match(token)
            if lease is None:
                return False, "not the current lease (expired, released or wrong token)", 0.0
            lease.last_activity = self._clock()
            self._cond.notify_all()
            remaining = self._remaining(lease)
        self._on_change()
        return True, "renewed", remaining

    def release(self, token: str) -> tuple[bool, str]:
        with self._cond:
            lease = self._match(token)
            if lease is None:
                return False, "not the current lease (expired, released or wrong token)"
        self._end(lease, "lease released")
        return True, "released"

    def take(self, holder: str, ttl_s: float, answer: Callable[[Grant], None]) -> None:
        """Operator override: end the current lease (if any) and put ``holder`` first in line.
        The grant comes (through ``answer``) once the ended lease's code has stopped."""
        holder = holder.strip() or "anonymous"
        if problem := _check(ttl_s):
            answer(Grant(False, message=problem))
            return
        ttl = min(ttl_s if ttl_s > 0 else self.default_ttl_s, self.max_lease_s)
        with self._cond:
            lease = self._lease
            # No deadline: the take is answered once the ended lease's code has stopped (the
            # service bounds that), whatever max_wait_s is; or at close.
            self._waiters.appendleft(_Waiter(holder, ttl, math.inf, answer))
        if lease is not None:
            self._end(lease, f"lease revoked: taken over by {holder!r}")
        else:
            self._grant_next()

    def holder_of(self, token: str) -> str | None:
        """The holder when ``token`` is the current lease, else None. Counts as activity."""
        with self._cond:
            lease = self._match(token)
            if lease is None:
                return None
            lease.last_activity = self._clock()
            return lease.holder

    def begin_execution(self, token: str) -> Binding | None:
        """Bind an execution to the lease ``token`` names (None when it is not the current
        lease). The lease cannot lapse by ttl while bound; once it ends for another reason it
        is not handed on until every binding is given back with ``end_execution``."""
        with self._cond:
            lease = self._match(token)
            if lease is not None:
                lease.running += 1
                lease.last_activity = self._clock()
            return lease

    def end_execution(self, binding: Binding) -> None:
        """The execution bound by ``binding`` has ended (code dead, hold commanded)."""
        with self._cond:
            binding.running = max(0, binding.running - 1)
            binding.last_activity = self._clock()
            drained = binding is self._draining and binding.running == 0
            if drained:
                self._draining = None
            self._cond.notify_all()
        if drained:
            self._grant_next()

    def status(self) -> LeaseStatus:
        with self._cond:
            lease = self._lease
            return LeaseStatus(held=lease is not None, holder=lease.holder if lease else "",
                               seconds_to_lapse=self._remaining(lease) if lease else 0.0,
                               waiting_holders=[w.holder for w in self._waiters])

    def check_deadlines(self) -> None:
        """Look at the deadlines now: for a clock that jumps (tests' fake clocks)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            waiters, self._waiters = list(self._waiters), deque()
            self._cond.notify_all()
        for w in waiters:
            w.answer(Grant(False, message="the node is shutting down"))
        self._thread.join(timeout=2)

    # --------------------------------------------------------------- internals
    def _match(self, token: str) -> _Lease | None:
        lease = self._lease
        if lease is None or not token:
            return None
        return lease if hmac.compare_digest(lease.token.encode(), token.encode()) else None

    def _free(self) -> bool:
        return self._lease is None and self._draining is None

    def _busy_message(self) -> str:
        if self._lease is None and self._draining is not None:
            return (f"the lease of {self._draining.holder!r} ended and the robot is not handed "
                    f"on yet (its code is stopping, or the robot is reset to where that lease "
                    f"began); pass wait_s > 0 to wait in line")
        if self._lease is None:
            holder = self._waiters[0].holder if self._waiters else ""
            return f"the lease is promised to {holder!r}; pass wait_s > 0 to wait in line"
        lease = self._lease
        when = ("it does not lapse while its code runs" if lease.running else
                f"it lapses in {self._remaining(lease):.0f}s unless renewed or used")
        return (f"the lease is held by {lease.holder!r} ({when}); pass wait_s > 0 "
                f"to wait in line. A lost lease_id is never shown again: wait for the lapse, "
                f"or have an operator in override_holders call lease/take")

    def _grant(self, holder: str, ttl: float) -> Grant:
        now = self._clock()
        # hex: a token never starts with '-', which a command line takes for an option
        self._lease = _Lease(secrets.token_hex(32), holder, ttl, now, now)
        self._on_grant(self._lease.serial)
        self._cond.notify_all()
        return Grant(True, self._lease.token, f"granted to {holder!r} for {ttl:g}s (renew to "
                                               f"keep it)", ttl)

    def _remaining(self, lease: _Lease) -> float:
        now = self._clock()
        hard = lease.granted_at + self.max_lease_s - now
        soft = hard if lease.running else lease.last_activity + lease.ttl_s - now
        return max(0.0, min(hard, soft))

    def _end(self, lease: _Lease, reason: str) -> None:
        with self._cond:
            if self._lease is not lease:
                return
            self._lease = None
            lease.running += self._keep_after_end
            if lease.running:
                self._draining = lease
            self._cond.notify_all()
        self._on_end(lease, reason)
        self._grant_next()

    def _grant_next(self) -> None:
        answers = []
        with self._cond:
            now = self._clock()
            while self._free() and self._waiters:
                waiter = self._waiters.popleft()
                answers.append((waiter, self._grant(waiter.holder, waiter.ttl_s)
                                if waiter.deadline > now else self._gave_up()))
        for waiter, grant in answers:
            waiter.answer(grant)
        self._on_change()

    def _gave_up(self) -> Grant:
        """The answer to a waiter whose wait ended (every waiter gets one)."""
        holder = self._lease.holder if self._lease else (
            self._draining.holder if self._draining else "")
        return Grant(False, message=f"gave up waiting: the lease is still held by {holder!r}"
                     if holder else "gave up waiting: the wait ended as the lease came free")

    def _watch(self) -> None:
        """Lapse leases and time out waiters at their deadlines."""
        while True:
            expired_lease, timed_out = None, []
            with self._cond:
                if self._closed:
                    return
                now = self._clock()
                lease = self._lease
                if lease is not None and self._remaining(lease) <= 0.0:
                    expired_lease = lease
                while self._waiters and any(w.deadline <= now for w in self._waiters):
                    waiter = next(w for w in self._waiters if w.deadline <= now)
                    self._waiters.remove(waiter)
                    timed_out.append(waiter)
                deadlines = [w.deadline - now for w in self._waiters]
                if lease is not None and expired_lease is None:
                    deadlines.append(self._remaining(lease))
                if expired_lease is None and not timed_out:
                    self._cond.wait(min(deadlines + [1.0]))
                    continue
            if timed_out:
                with self._cond:
                    refusal = self._gave_up()
                for waiter in timed_out:
                    waiter.answer(refusal)
            if expired_lease is not None:
                why = ("lease reached max_lease_s" if self._clock() - expired_lease.granted_at
                       >= self.max_lease_s else "lease lapsed: no renew or activity within ttl")
                self._end(expired_lease, why)
            self._on_change()
