"""Every writer of the robot in one registry, so that a stop reaches all of them (no rclpy).

A *writer* is anything that may send the robot a motion command: an execution (its code,
through its guard) and a rewind from any entry point — the action, ``on_failure``,
``reset_on_release`` or the code's own ``rewind.*`` calls (DESIGN §12.0). Each carries the
guards its motion passes through; a guard is added *before* anything is sent through it.

The estop must not wait for any lock the service may hold (admission starts processes under
it), and "nothing moves after the estop's reply" must hold by construction, not by timing.
So the registry is read without a lock: the list of writers and each writer's guards are
tuples replaced whole (one read is a consistent snapshot), and the two sides of every race
are ordered so that neither can miss the other:

    halt():       set ``halted``  → stop every execution it sees, refuse every guard it sees
                                  → cancel every rewind
    add/guard():  append          → check ``halted`` (and the writer's cancel): refuse if set
    on_halt set:  set             → check ``halted``: call it if set (the service does this)

An execution's ``on_halt`` records the estop as its stop (its result says so, not a
SafetyError the code saw first) and refuses its guard; the kill itself happens in the
execution's own thread, concurrently with the hold.

Whichever runs second sees the other's write (the interpreter orders them), so a guard is
never left open after a halt. ``Guard.refuse_motion`` returns only once no motion command
is being handed to a backend through it, so after ``halt()`` returns none is sent.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

from tidybot_exec.execution.steps import attempt
from tidybot_sdk.protocol import RESOURCES

EXECUTION = "execution"
REWIND = "rewind"
# where a rewind came from
FROM_ACTION, FROM_FAILURE, FROM_RESET, FROM_CODE = "action", "on_failure", "reset_on_release", "code"


class Refusable(Protocol):
    """What the registry needs of a guard (guard/relay.py's Guard)."""

    def refuse_motion(self) -> None: ...
    def settle(self, timeout_s: float) -> bool: ...


@dataclass(eq=False)
class Writer:
    """One writer of the robot. Created by the registry (``Writers.add``)."""

    kind: str                       # EXECUTION or REWIND
    origin: str                     # a rewind's entry point (FROM_*); "goal"/"dry run" for code
    holder: str = ""
    lease_token: str = ""
    execution_id: str = ""          # the execution it is (or, a rewind, runs for)
    resources: tuple[str, ...] = RESOURCES     # the parts it may drive (its lease's)
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    on_halt: Callable[[], object] | None = None     # an execution's hard stop for the estop
    _guards: tuple[Refusable, ...] = ()
    _registry: "Writers | None" = None
    _ended: bool = False
    _end_lock: threading.Lock = field(default_factory=threading.Lock)

    def guard(self, guard: Refusable) -> None:
        """``guard`` carries this writer's motion from now on; call before sending through it."""
        self._guards = (*self._guards, guard)
        if self.cancelled.is_set() or self._ended or (self._registry and self._registry.halted):
            guard.refuse_motion()

    def refuse_motion(self) -> None:
        for guard in self._guards:
            guard.refuse_motion()

    @property
    def ended(self) -> bool:
        return self._ended

    def cancel(self) -> None:
        """Stop this writer's motion at once (a rewind's driver also sees ``cancelled``)."""
        self.cancelled.set()
        self.refuse_motion()

    def unless_ended(self, action: Callable[[], list[str]]) -> list[str]:
        """Run ``action`` (a hold) only while the writer has not been ended by its owner:
        once ``end`` returned, a late hold of this writer would land on whoever drives next."""
        with self._end_lock:
            return [] if self._ended else action()

    def end(self) -> None:
        """Its owner is done with it: nothing of it may move or hold the robot any more
        (waits for a hold of it in progress)."""
        with self._end_lock:
            self._ended = True
        self.refuse_motion()

    def describe(self) -> str:
        """One line for execution/status: "rewind (code) for execution 1a2b by alice"."""
        what = f"{self.kind} {self.execution_id}" if self.kind == EXECUTION else \
            f"{self.kind} ({self.origin})" + (f" for execution {self.execution_id}"
                                              if self.execution_id else "")
        return what + (f" by {self.holder}" if self.holder else "")


class Writers:
    """The registry: who may move the robot now."""

    def __init__(self) -> None:
        self._all: tuple[Writer, ...] = ()
        self._lock = threading.Lock()      # writers only: adding and removing
        self.halted = False                # an estop (or shutdown) latched: every writer refused

    def add(self, kind: str, origin: str, **fields: object) -> Writer:
        writer = Writer(kind, origin, _registry=self, **fields)  # type: ignore[arg-type]
        with self._lock:
            self._all = (*self._all, writer)
        if self.halted:
            writer.cancel()
        return writer

    def remove(self, writer: Writer) -> None:
        writer.done.set()
        with self._lock:
            self._all = tuple(w for w in self._all if w is not writer)

    def __iter__(self) -> Iterator[Writer]:
        """The writers that may still move the robot (an ended one cannot, even while its
        thread finishes)."""
        return iter([w for w in self._all if not w.ended])

    def driving(self, resources: Sequence[str]) -> Writer | None:
        """The first writer that may drive any of ``resources``, or None."""
        return next((w for w in self if set(w.resources) & set(resources)), None)

    def rewinds(self, lease_token: str | None = None, execution_id: str | None = None,
                origin: str | None = None) -> list[Writer]:
        """The rewinds running (bound to ``lease_token``, run for ``execution_id``, from
        ``origin``, when given)."""
        return [w for w in self if w.kind == REWIND
                and (lease_token is None or w.lease_token == lease_token)
                and (execution_id is None or w.execution_id == execution_id)
                and (origin is None or w.origin == origin)]

    def halt(self, log: Callable[[str], None], settle_s: float) -> list[str]:
        """The estop's first steps, in order and without the service's lock: latch, stop
        every execution (``on_halt``) and refuse motion on every live guard, wait (at most
        ``settle_s`` in all) for the commands in flight to be answered, cancel every rewind.
        A step that fails for one writer is logged and the rest go on. Returns the ids of
        the executions stopped."""
        self.halted = True
        writers = self._all
        stopped: list[str] = []
        problems: list[str] = []
        for writer in writers:
            if writer.on_halt is not None and not attempt(
                    problems, f"estop: stopping {writer.describe()}", writer.on_halt):
                stopped.append(writer.execution_id)
            attempt(problems, f"estop: refusing {writer.describe()}", writer.refuse_motion)
        deadline = time.monotonic() + settle_s
        for writer in writers:
            for guard in writer._guards:
                attempt(problems, f"estop: settling {writer.describe()}",
                        lambda: guard.settle(max(0.0, deadline - time.monotonic())))
        for writer in writers:
            if writer.kind == REWIND:
                attempt(problems, f"estop: cancelling {writer.describe()}", writer.cancel)
        for problem in problems:
            log(problem)
        return stopped

    def resume(self) -> None:
        self.halted = False

    def describe(self) -> list[str]:
        return [w.describe() for w in self]

