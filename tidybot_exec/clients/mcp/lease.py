"""The robot's lease as tidybot-mcp holds it for its client: the server's, never the model's.

The server takes the lease (holder ``mcp:<name>``) the first time a tool needs it; the
TidybotClient renews it while the node spins; when it ended anyway (a lapse, max_lease_s, an
operator's lease/take) the next tool that needs it takes it again. It is released when the
server exits (with stdio: when the client closes it) and, with ``release_after_s`` (HTTP,
where a client can vanish without a word), once nothing has used it for that long. The token
stays in the TidybotClient: no result, error or log line shows it.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from tidybot_exec.clients.client import TidybotClient, TidybotClientError

log = logging.getLogger("tidybot-mcp")
ACTIVE_STATES = ("running", "stopping", "rewinding")


class RobotBusy(Exception):
    """The lease was not granted; the message says who holds it and when it lapses."""


class ServerLease:
    """Hands out a valid lease token to the server's goals and services, taking one when needed."""

    def __init__(self, client: TidybotClient, holder: str, closing: threading.Event,
                 release_after_s: float = 0.0, resources: Sequence[str] = ()) -> None:
        self.client, self.holder, self._closing = client, holder, closing
        self.resources = tuple(resources)        # none: the whole robot
        self._release_after_s = release_after_s
        self._lock = threading.RLock()          # the lease itself: held across ROS calls
        self._use_lock = threading.Lock()       # who uses it: never held across a wait
        self._granted_under = None      # the lease/status message that was current at the grant
        self._forgotten = False
        self._users = 0
        self._idle: threading.Timer | None = None

    def token(self) -> str:
        """A valid token, acquired now if there is none (raises RobotBusy when the robot is
        someone else's, and once the server is closing: what it takes then would outlive
        it). Blocks: call it from a worker thread."""
        with self._lock:
            if self._closing.is_set():
                raise RobotBusy("tidybot-mcp is shutting down: nothing more is started")
            if not self._valid():
                self._acquire()
            return self.client.lease_id

    def forget(self) -> None:
        """The node refused our token (it ended under us): the next token() takes a new one."""
        with self._lock:
            self._forgotten = True

    def _valid(self) -> bool:
        if not self.client.lease_id or self._forgotten:
            return False
        _, status = self.client.status(timeout_s=0)
        if status is None or status is self._granted_under or (
                status.held and status.holder == self.holder):
            return True
        try:        # the status says it is not ours: ask the node, which knows
            self.client.renew()
            return True
        except TidybotClientError:
            return False

    def _acquire(self) -> None:
        if self.client.lease_id:    # one that ended: drop its renew timer ("not current")
            self._release_quietly()
        _, self._granted_under = self.client.status(timeout_s=0)
        try:
            self.client.acquire(self.holder, resources=self.resources)
        except TidybotClientError as exc:
            raise RobotBusy(self._busy(str(exc))) from None
        self._forgotten = False
        log.info("lease acquired as %s", self.holder)

    def _busy(self, refusal: str) -> str:
        """Who holds the lease and when it lapses, from the latched status topics."""
        execution, lease = self.client.status(timeout_s=2.0)
        if lease is None or not lease.held:
            return f"the robot's lease was not granted: {refusal}"
        if execution is not None and execution.state in ACTIVE_STATES and (
                execution.holder == lease.holder):
            when = (f"it is {execution.state} {execution.label or execution.execution_id} "
                    f"({execution.elapsed_s:.0f}s so far), and a lease does not lapse while "
                    f"its code runs (this one ends in {lease.seconds_to_lapse:.0f}s at most)")
        else:
            when = (f"it lapses in about {lease.seconds_to_lapse:.0f}s unless its holder "
                    f"renews or uses it")
        waiting = (f"; waiting for it: {', '.join(lease.waiting_holders)}"
                   if lease.waiting_holders else "")
        return (f"the robot is busy: its lease is held by {lease.holder!r}; {when}{waiting}. "
                f"Try again then, or ask its holder to release it.")

    # ------------------------------------------------------------ idle release
    @contextmanager
    def in_use(self) -> Iterator[None]:
        """While inside, the lease is not released for being idle (a goal runs under it).
        Never waits for the lease's own lock: the event loop may enter it."""
        with self._use_lock:
            self._users += 1
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
        try:
            yield
        finally:
            with self._use_lock:
                self._users -= 1
                if self._users == 0 and self._release_after_s > 0:
                    self._idle = threading.Timer(self._release_after_s, self._release_if_idle)
                    self._idle.daemon = True
                    self._idle.start()

    def _release_if_idle(self) -> None:
        with self._lock:                # (the one place both locks are held: this order)
            with self._use_lock:
                idle = self._users == 0
            if idle and self.client.lease_id:
                log.info("lease unused for %gs: releasing it", self._release_after_s)
                self.release()

    def release(self) -> None:
        """Give the lease back (the node stops any code still running under it)."""
        with self._lock:
            with self._use_lock:
                if self._idle is not None:
                    self._idle.cancel()
                    self._idle = None
            if self.client.lease_id:
                self._release_quietly()
                log.info("lease released")

    def _release_quietly(self) -> None:
        try:
            self.client.release(timeout_s=5.0)
        except TidybotClientError as exc:       # its message never holds the token
            log.warning("%s", exc)
