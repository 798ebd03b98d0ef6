"""ZMQ transport for the backend protocols: request/reply with timeouts, latest-state
subscription with staleness, and the arm's command stream.

Used by the SDK, the node's state bridge and the tests. A request that times out
leaves a REQ socket unusable, so the socket is closed and recreated ("lazy pirate");
the predecessor's client never did that and stayed broken after one slow reply.
"""
from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Mapping

import zmq

from .errors import unavailable
from .protocol import ProtocolError, decode, encode


def endpoint(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


POLL_SLICE_S = 0.05     # how soon a request in flight sees that it was abandoned
Gate = Callable[[], AbstractContextManager[bool]]


class GateClosed(Exception):
    """The request's gate said no: nothing was sent (the socket is still usable), or, once
    sent, the request was interrupted (``RequestClient.interrupt``)."""


class RequestClient:
    """REQ socket to a backend's REP command port."""

    def __init__(self, address: str, name: str, timeout_s: float = 2.0) -> None:
        self.address, self.name, self.timeout_s = address, name, timeout_s
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._lock = threading.Lock()     # one request in flight per client
        self._abandoned = threading.Event()
        self._interrupted = threading.Event()

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        return self._sock

    def request(self, msg: Mapping[str, Any], timeout_s: float | None = None,
                gate: Gate | None = None) -> dict[str, Any]:
        """Send one command and return the decoded reply.

        ``gate``: entered around the send only, it says whether the message may still go;
        whoever closes it can wait for a send in progress (the guard's ``refuse_motion``)
        without waiting for the reply, and ``interrupt`` the wait for the reply of a gated
        request. Raises GateClosed when the gate says no or the wait was interrupted,
        BackendUnavailable when no reply comes within the timeout, and ProtocolError when
        the reply is not a protocol message.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._check_abandoned()
            sock = self._socket()
            # an interrupt meant for an earlier request is forgotten; one meant for this
            # request comes after the gate was closed, so the gate refuses it
            self._interrupted.clear()
            try:
                with (gate or _open)() as may_send:
                    if not may_send:
                        raise GateClosed(f"{self.name}: not sent, its gate is closed")
                    sock.send(encode(msg))
                deadline = time.monotonic() + timeout
                while not sock.poll(int(1000 * max(0.0, min(
                        POLL_SLICE_S, deadline - time.monotonic())))):
                    self._check_abandoned()
                    if gate is not None and self._interrupted.is_set():
                        self._reset()
                        raise GateClosed(f"{self.name}: the reply is no longer waited for")
                    if time.monotonic() >= deadline:
                        raise unavailable(self.name, f"{self.name} backend at {self.address} "
                                                     f"did not answer within {timeout:g}s")
                return decode(sock.recv())
            except GateClosed:
                raise
            except BaseException:
                self._reset()    # a REQ socket left between send and recv is unusable
                raise

    def _check_abandoned(self) -> None:
        if self._abandoned.is_set():
            raise unavailable(self.name, f"{self.name} backend at {self.address}: request "
                                         f"abandoned, its client is closing")

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (its reply came, or it failed); False when one
        still is after ``timeout_s``."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        self._lock.release()
        return True

    def interrupt(self) -> None:
        """Make a gated request in flight stop waiting for its reply (within POLL_SLICE_S):
        a blocking gripper move is not waited for once motion is refused."""
        self._interrupted.set()

    def abandon(self) -> None:
        """Make the request in flight (within POLL_SLICE_S) and every later one fail with
        BackendUnavailable: an owner that is closing never waits for a dead backend."""
        self._abandoned.set()

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        self.abandon()
        with self._lock:
            self._reset()


def _open() -> AbstractContextManager[bool]:
    return nullcontext(True)


class StateSubscriber:
    """Keeps the latest state message of a backend's PUB socket, with its arrival time.

    A background thread drains the socket so reads never block and never return an old
    message as if it were new; ``latest(max_age_s)`` refuses stale state.
    """

    def __init__(self, address: str, name: str,
                 on_message: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.address, self.name = address, name
        self._on_message = on_message     # called in the subscriber's thread for each message
        self._msg: dict[str, Any] | None = None
        self._received_at = 0.0
        self._count = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-state", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 10)
        sock.connect(self.address)
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                try:
                    msg = decode(sock.recv())
                except ProtocolError:
                    continue
                with self._cond:
                    self._msg, self._received_at = msg, time.monotonic()
                    self._count += 1
                    self._cond.notify_all()
                if self._on_message is not None:
                    self._on_message(msg)
        finally:
            sock.close()

    @property
    def count(self) -> int:
        """How many state messages arrived so far (tests use it to see publishing stop)."""
        return self._count

    def age(self) -> float:
        """Seconds since the last state message (inf before the first)."""
        return time.monotonic() - self._received_at if self._msg is not None else float("inf")

    def latest(self, max_age_s: float) -> dict[str, Any]:
        """The newest state, or BackendUnavailable when none arrived in ``max_age_s``."""
        with self._cond:
            msg, age = self._msg, self.age()
        if msg is None:
            raise unavailable(
                self.name, f"no state from the {self.name} backend at {self.address} yet")
        if age > max_age_s:
            raise unavailable(self.name, f"{self.name} state is stale: last message {age:.2f}s "
                                         f"ago (limit {max_age_s:g}s)")
        return msg

    def last(self) -> dict[str, Any] | None:
        """The newest state however old (what a backend said before it went silent)."""
        with self._cond:
            return self._msg

    def wait_next(self, timeout_s: float) -> dict[str, Any]:
        """Block until a state message newer than the current one arrives."""
        with self._cond:
            seen = self._count
            if not self._cond.wait_for(lambda: self._count > seen, timeout_s):
                raise unavailable(
                    self.name, f"no state from the {self.name} backend at {self.address} "
                    f"within {timeout_s:g}s")
            return self._msg  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class StreamPublisher:
    """PUB socket connected to the arm's SUB stream port (CONFLATE on the server: latest wins)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 2)
        self._sock.connect(address)
        self._lock = threading.Lock()

    def send(self, msg: Mapping[str, Any]) -> None:
        with self._lock:
            self._sock.send(encode(msg), zmq.NOBLOCK)

    def close(self) -> None:
        with self._lock:
            self._sock.close(linger=0)
