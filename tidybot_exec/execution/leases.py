"""Robot leases, one per set of resources: whoever holds a resource drives it (no rclpy).

* A lease holds a subset of ``RESOURCES`` (arm, gripper, base); none named means all three,
  the one lease for the whole robot that callers who name none get. Leases whose resources
  are disjoint are held at once, so a base agent and an arm agent need not wait for each
  other.
* A grant gives all the asked resources at once or none: nobody holds one part while
  waiting for another, so no two waiters can wait for each other (no deadlock).
* ``acquire`` grants at once when the resources are free and no earlier waiter wants any of
  them, fails at once when not and ``wait_s`` is 0, and otherwise queues the caller for up to
  ``wait_s`` (capped by ``max_wait_s``). Waiters whose resources overlap are served in FIFO
  order; a later waiter goes ahead only past waiters it overlaps none of, so one that waits for
  a busy part cannot be starved by a stream of later requests for its other parts. It answers
  through a callback, exactly once (granted, or refused when its wait ends), so a waiting
  caller holds no thread.
* ``take`` (operator override) ends the leases that overlap the asked resources (only those)
  and puts its caller first in line with no deadline: it is answered once the ended leases'
  code has stopped, whatever ``max_wait_s`` is.
* Each lease lapses ``ttl_s`` after its last renew or activity — never while an execution
  runs under it — and in any case ``max_lease_s`` after it was granted.
* A lapse, release or take-over calls ``on_end(binding, reason)`` so the code running under
  that lease is stopped (and, with ``keep_after_end``, the robot reset before the next grant:
  the lease stays draining until ``end_execution`` is called once more for it). Its resources
  are granted to the next waiter only once every execution bound to the ended lease has ended
  (``end_execution``): its code is dead and the robot was told to hold before anyone else may
  drive those parts. Meanwhile the lease is *draining*.
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable

from tidybot_exec.execution.validation import duration_error
from tidybot_sdk.protocol import RESOURCES, resource_set  # noqa: F401 - the core's names too



def _on(resources: Iterable[str]) -> str:
    """" on arm, base" for the messages; "" for the whole robot, which reads as before."""
    named = [r for r in RESOURCES if r in set(resources)]
    return "" if len(named) == len(RESOURCES) else f" on {', '.join(named)}"


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
    resources: tuple[str, ...] = ()       # what the lease holds (empty unless success)


@dataclass(frozen=True)
class ResourceHold:
    """Who holds one resource (``holder`` and ``execution_id`` empty when nobody does)."""

    resource: str
    holder: str = ""
    execution_id: str = ""


@dataclass(frozen=True)
class LeaseStatus:
    """``holds`` has one entry per resource. The single-lease fields describe the most
    recently granted lease still held (as one lease did before), so a reader that knows of
    one lease only sees a holder while any resource is held; ``waiting_holders`` is the
    whole line in order."""

    held: bool
    holder: str
    seconds_to_lapse: float
    waiting_holders: list[str]
    holds: list[ResourceHold]


@dataclass(eq=False)          # a lease is itself: two are never the same by their fields
class _Lease:
    token: str
    holder: str
    ttl_s: float
    granted_at: float
    last_activity: float
    resources: tuple[str, ...] = RESOURCES
    running: int = 0          # executions bound to this lease (they keep it alive)
    execution_id: str = ""    # the one running under it, as the service names it (status)
    serial: int = field(default_factory=itertools.count(1).__next__)   # names it, not secret


Binding = _Lease     # what begin_execution hands out and end_execution takes back


@dataclass(eq=False)
class _Waiter:
    holder: str
    ttl_s: float
    deadline: float
    answer: Callable[[Grant], None]
    resources: tuple[str, ...] = RESOURCES


class LeaseManager:
    def __init__(self, *, default_ttl_s: float, max_lease_s: float, max_wait_s: float,
                 on_end: Callable[["Binding", str], None] = lambda binding, reason: None,
                 on_change: Callable[[], None] = lambda: None,
                 on_grant: Callable[[int, list[int], tuple[str, ...]], None] = (
                     lambda serial, others, resources: None),
                 keep_after_end: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.default_ttl_s, self.max_lease_s, self.max_wait_s = default_ttl_s, max_lease_s, max_wait_s
        self._on_end, self._on_change, self._clock = on_end, on_change, clock
        self._on_grant = on_grant     # called under the lock: it must take no lock of ours
        # an ended lease keeps its resources until end_execution is called once more for it
        # (the service's reset on release), decided under the lock so no grant slips in between
        self._keep_after_end = keep_after_end
        self._cond = threading.Condition()
        self._leases: list[_Lease] = []       # held, in the order they were granted
        self._draining: list[_Lease] = []     # ended, but code bound to them still stopping
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="lease-clock", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- requests
    def acquire(self, holder: str, ttl_s: float, wait_s: float,
                answer: Callable[[Grant], None], resources: Iterable[str] | None = None) -> None:
        """Answer (now or later, exactly once) with a Grant for ``holder`` of ``resources``
        (none: all three)."""
        holder = holder.strip() or "anonymous"
        ttl = min(ttl_s if ttl_s > 0 else self.default_ttl_s, self.max_lease_s)
        try:
            wanted = resource_set(resources)
        except ValueError as exc:
            answer(Grant(False, message=str(exc)))
            return
        if problem := _check(ttl_s, wait_s):
            answer(Grant(False, message=problem))
            return
        with self._cond:
            if self._in_the_way(wanted) is None:
                grant = self._grant(holder, ttl, wanted)
            elif wait_s <= 0:
                grant = Grant(False, message=self._busy_message(wanted))
            else:
                wait = min(wait_s, self.max_wait_s)
                self._waiters.append(_Waiter(holder, ttl, self._clock() + wait, answer, wanted))
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

    def take(self, holder: str, ttl_s: float, answer: Callable[[Grant], None],
             resources: Iterable[str] | None = None) -> None:
        """Operator override: end the leases that overlap ``resources`` (none: all three)
        and put ``holder`` first in line. The grant comes (through ``answer``) once the ended
        leases' code has stopped; leases on other resources are left alone."""
        holder = holder.strip() or "anonymous"
        try:
            wanted = resource_set(resources)
        except ValueError as exc:
            answer(Grant(False, message=str(exc)))
            return
        if problem := _check(ttl_s):
            answer(Grant(False, message=problem))
            return
        ttl = min(ttl_s if ttl_s > 0 else self.default_ttl_s, self.max_lease_s)
        with self._cond:
            overlapping = [lease for lease in self._leases
                           if not set(lease.resources).isdisjoint(wanted)]
            # No deadline: the take is answered once the ended leases' code has stopped (the
            # service bounds that), whatever max_wait_s is; or at close.
            self._waiters.appendleft(_Waiter(holder, ttl, math.inf, answer, wanted))
        for lease in overlapping:
            self._end(lease, f"lease revoked: taken over by {holder!r}")
        self._grant_next()

    def resources_of(self, token: str) -> tuple[str, ...] | None:
        """The parts ``token``'s lease holds, or None when it is no current lease."""
        with self._cond:
            lease = self._match(token)
            return lease.resources if lease is not None else None

    def holder_of(self, token: str) -> str | None:
        """The holder when ``token`` is a current lease, else None. Counts as activity."""
        with self._cond:
            lease = self._match(token)
            if lease is None:
                return None
            lease.last_activity = self._clock()
            return lease.holder

    def begin_execution(self, token: str) -> Binding | None:
        """Bind an execution to the lease ``token`` names (None when it is not a current
        lease). The lease cannot lapse by ttl while bound; once it ends for another reason its
        resources are not handed on until every binding is given back with
        ``end_execution``."""
        with self._cond:
            lease = self._match(token)
            if lease is not None:
                lease.running += 1
                lease.last_activity = self._clock()
            return lease

    def name_execution(self, binding: Binding, execution_id: str) -> None:
        """Show ``execution_id`` as running under ``binding`` in ``status().holds`` (the
        service knows the id only after it bound the execution); cleared when the last
        binding is given back."""
        with self._cond:
            binding.execution_id = execution_id
        self._on_change()

    def end_execution(self, binding: Binding) -> None:
        """The execution bound by ``binding`` has ended (code dead, hold commanded)."""
        with self._cond:
            binding.running = max(0, binding.running - 1)
            binding.last_activity = self._clock()
            done = binding.running == 0
            named, drained = done and bool(binding.execution_id), done and binding in self._draining
            if done:
                binding.execution_id = ""
            if drained:
                self._draining.remove(binding)
            self._cond.notify_all()
        if drained:
            self._grant_next()
        elif named:
            self._on_change()          # the status no longer names the execution

    def status(self) -> LeaseStatus:
        with self._cond:
            latest = self._leases[-1] if self._leases else None
            holding = {r: lease for lease in self._leases for r in lease.resources}
            holds = [ResourceHold(r, holding[r].holder, holding[r].execution_id)
                     if r in holding else ResourceHold(r) for r in RESOURCES]
            return LeaseStatus(held=latest is not None, holder=latest.holder if latest else "",
                               seconds_to_lapse=self._remaining(latest) if latest else 0.0,
                               waiting_holders=[w.holder for w in self._waiters], holds=holds)

    def count(self) -> int:
        """How many leases are held now."""
        with self._cond:
            return len(self._leases)

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
        if not token:
            return None
        return next((lease for lease in self._leases
                     if hmac.compare_digest(lease.token.encode(), token.encode())), None)

    def _in_the_way(self, resources: tuple[str, ...], waiter: _Waiter | None = None
                    ) -> _Lease | _Waiter | None:
        """What keeps ``resources`` from being granted now (None when nothing does): a held
        lease, a draining one, or a waiter in line before ``waiter`` (before anyone new when
        None) that wants any of them."""
        for lease in self._leases + self._draining:
            if not set(lease.resources).isdisjoint(resources):
                return lease
        for earlier in self._waiters:
            if earlier is waiter:
                break
            if not set(earlier.resources).isdisjoint(resources):
                return earlier
        return None

    def _busy_message(self, resources: tuple[str, ...]) -> str:
        """Why an acquire of ``resources`` with no wait is refused (something is in the way)."""
        obstacle = self._in_the_way(resources)
        on = _on(set(resources) & set(obstacle.resources))
        if isinstance(obstacle, _Waiter):
            return (f"the lease{on} is promised to {obstacle.holder!r}; pass wait_s > 0 to "
                    f"wait in line")
        if obstacle in self._draining:
            return (f"the lease of {obstacle.holder!r}{on} ended and the robot is not handed "
                    f"on yet (its code is stopping, or the robot is reset to where that lease "
                    f"began); pass wait_s > 0 to wait in line")
        when = ("it does not lapse while its code runs" if obstacle.running else
                f"it lapses in {self._remaining(obstacle):.0f}s unless renewed or used")
        return (f"the lease{on} is held by {obstacle.holder!r} ({when}); pass wait_s > 0 "
                f"to wait in line. A lost lease_id is never shown again: wait for the lapse, "
                f"or have an operator in override_holders call lease/take")

    def _grant(self, holder: str, ttl: float, resources: tuple[str, ...]) -> Grant:
        now = self._clock()
        # hex: a token never starts with '-', which a command line takes for an option
        lease = _Lease(secrets.token_hex(32), holder, ttl, now, now, resources)
        self._leases.append(lease)
        self._on_grant(lease.serial, [other.serial for other in self._leases + self._draining
                                      if other is not lease], resources)
        self._cond.notify_all()
        return Grant(True, lease.token, f"granted to {holder!r}{_on(resources)} for {ttl:g}s "
                                        f"(renew to keep it)", ttl, resources)

    def _remaining(self, lease: _Lease) -> float:
        now = self._clock()
        hard = lease.granted_at + self.max_lease_s - now
        soft = hard if lease.running else lease.last_activity + lease.ttl_s - now
        return max(0.0, min(hard, soft))

    def _end(self, lease: _Lease, reason: str) -> None:
        with self._cond:
            if lease not in self._leases:
                return
            self._leases.remove(lease)
            lease.running += self._keep_after_end
            if lease.running:
                self._draining.append(lease)
            self._cond.notify_all()
        self._on_end(lease, reason)
        self._grant_next()

    def _grant_next(self) -> None:
        """Grant, in line order, every waiter whose resources are free and wanted by no
        waiter before it; refuse those whose wait ended on the way."""
        answers = []
        with self._cond:
            now = self._clock()
            for waiter in list(self._waiters):
                if waiter.deadline <= now:
                    answers.append((waiter, self._gave_up(waiter)))
                elif self._in_the_way(waiter.resources, waiter) is None:
                    answers.append((waiter, self._grant(waiter.holder, waiter.ttl_s,
                                                        waiter.resources)))
                else:
                    continue
                self._waiters.remove(waiter)
        for waiter, grant in answers:
            waiter.answer(grant)
        self._on_change()

    def _gave_up(self, waiter: _Waiter) -> Grant:
        """The answer to ``waiter`` (still in line) whose wait ended (every waiter gets one)."""
        obstacle = self._in_the_way(waiter.resources, waiter)
        if obstacle is None:
            return Grant(False, message="gave up waiting: the wait ended as the lease came free")
        on = _on(set(waiter.resources) & set(obstacle.resources))
        if isinstance(obstacle, _Waiter):
            return Grant(False, message=f"gave up waiting: the lease{on} is promised to "
                                        f"{obstacle.holder!r}, ahead in line")
        return Grant(False, message=f"gave up waiting: the lease{on} is still held by "
                                    f"{obstacle.holder!r}")

    def _watch(self) -> None:
        """Lapse leases and time out waiters at their deadlines."""
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self._clock()
                expired = [lease for lease in self._leases if self._remaining(lease) <= 0.0]
                timed_out = [w for w in self._waiters if w.deadline <= now]
                if not expired and not timed_out:
                    deadlines = ([w.deadline - now for w in self._waiters]
                                 + [self._remaining(lease) for lease in self._leases])
                    self._cond.wait(min(deadlines + [1.0]))
                    continue
                refusals = []
                for waiter in timed_out:         # each told what it waited behind
                    refusals.append((waiter, self._gave_up(waiter)))
                    self._waiters.remove(waiter)
            for waiter, refusal in refusals:
                waiter.answer(refusal)
            for lease in expired:
                why = ("lease reached max_lease_s" if self._clock() - lease.granted_at
                       >= self.max_lease_s else "lease lapsed: no renew or activity within ttl")
                self._end(lease, why)
            # a waiter that left may have been all that kept a later one waiting
            self._grant_next()
