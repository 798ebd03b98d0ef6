"""A connection to one backend: commands over REQ, state over SUB, both opened on first use."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .errors import SAFETY, BackendUnavailable, ResourceNotLeased, TidybotError, unavailable
from .protocol import ProtocolError, RobotMode
from .transport import RequestClient, StateSubscriber, StreamPublisher

# What to do when the arm's state stops after a reflex (the real server stops publishing)
ARM_RECOVERY = ("nothing moves until the arm is recovered: on the robot, stop the arm server, "
                "run `python3 -m franka_server.recover --ip <robot-ip>`, start the server again "
                "and wait for its state (docs/real-robot.md); in tidybot-sim, restart its arm "
                "server (control socket: {\"cmd\": \"restart\", \"server\": \"arm\"})")

# How long the first state may take: a new subscriber's connection and the backend's next
# publish (under load over 1 s was seen); only a backend that is down waits all of it.
FIRST_STATE_WAIT_S = 5.0


class Backend:
    """Lazily connected client of one backend; shared by the API objects that use it."""

    def __init__(self, name: str, endpoints: dict[str, str], request_timeout_s: float,
                 max_state_age_s: float) -> None:
        self.name, self.endpoints = name, endpoints
        self.request_timeout_s, self.max_state_age_s = request_timeout_s, max_state_age_s
        self._lock = threading.Lock()
        self._cmd: RequestClient | None = None
        self._state: StateSubscriber | None = None
        self._stream: StreamPublisher | None = None

    def _client(self) -> RequestClient:
        with self._lock:
            if self._cmd is None:
                self._cmd = RequestClient(self.endpoints["cmd"], self.name, self.request_timeout_s)
            return self._cmd

    def _subscriber(self) -> StateSubscriber:
        with self._lock:
            if self._state is None:
                self._state = StateSubscriber(self.endpoints["state"], self.name)
            return self._state

    def stream(self) -> StreamPublisher:
        with self._lock:
            if self._stream is None:
                self._stream = StreamPublisher(self.endpoints["stream"])
            return self._stream

    def request(self, msg_type: int, timeout_s: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send a command; BackendUnavailable on timeout, TidybotError on a garbled reply,
        SafetyError when the node's safety guard refused it."""
        try:
            reply = self._client().request({"msg_type": int(msg_type), **fields}, timeout_s)
        except ProtocolError as exc:
            raise TidybotError(f"{self.name} backend sent an invalid reply: {exc}") from None
        if "not_leased" in reply:
            raise ResourceNotLeased(f"refused by the safety guard: {reply['safety_error']}",
                                    self.name, str(reply["not_leased"]))
        if "safety_error" in reply:
            raise SAFETY[self.name](f"refused by the safety guard: {reply['safety_error']}")
        return reply

    def state(self, max_age_s: float | None = None) -> dict[str, Any]:
        """The newest state; waits up to FIRST_STATE_WAIT_S for the first message."""
        sub = self._subscriber()
        limit = self.max_state_age_s if max_age_s is None else max_age_s
        if sub.count == 0:
            try:
                return sub.wait_next(max(limit, FIRST_STATE_WAIT_S))
            except BackendUnavailable:
                raise unavailable(
                    self.name, f"no state from the {self.name} backend at {self.endpoints['state']}: is it "
                    f"running? (nothing is reported as zeros; check the backend and retry)") from None
        try:
            return sub.latest(limit)
        except BackendUnavailable as exc:
            last = sub.last()
            if self.name != "arm" or last is None:
                raise
            if in_reflex(last) or last.get("last_error"):     # its last words said why
                raise unavailable(self.name, f"the arm stopped in a reflex ({reflex_reason(last)}) "
                                             f"and its state stream stopped ({exc}); "
                                             f"{ARM_RECOVERY}") from None
            # the real server may go silent without a last state that says why
            raise unavailable(self.name, f"{exc}; if the arm stopped in a reflex, its server "
                                         f"stops publishing: {ARM_RECOVERY}") from None

    def next_state(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """Wait for a state message newer than the last one."""
        return self._subscriber().wait_next(timeout_s)

    def close(self) -> None:
        with self._lock:
            for part in (self._cmd, self._state, self._stream):
                if part is not None:
                    part.close()
            self._cmd = self._state = self._stream = None


def in_reflex(arm_state: dict[str, Any]) -> bool:
    return arm_state.get("robot_mode") == RobotMode.REFLEX


def reflex_reason(arm_state: dict[str, Any]) -> str:
    """Why the arm is in reflex, as its state says (``last_error``)."""
    return arm_state.get("last_error") or "reflex"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _catch_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so a motion stops the robot before the process ends
    (the default action would end it mid-stream). Only in the main thread, and only where
    nobody else handles SIGTERM (a ROS node, say, keeps its own handler)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


@contextmanager
def _repeats_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM meanwhile (main thread only; elsewhere a no-op): a second
    interrupt must not cut the stop command short. The executor escalates to SIGKILL after
    its grace period whatever the code does, and the interrupt being handled is re-raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextmanager
def stop_on_interrupt(stop: Callable[[], object]) -> Iterator[None]:
    """Run a motion; if anything interrupts it (KeyboardInterrupt from the executor's SIGINT,
    SystemExit from SIGTERM, an exception), command ``stop`` before the error propagates."""
    _catch_sigterm()
    try:
        yield
    except BaseException:
        with _repeats_ignored():
            try:
                stop()
            except Exception:  # the backend may be why we are here; the original error wins
                pass
        raise
