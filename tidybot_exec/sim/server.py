"""The plumbing every simulated backend shares: a command socket answering like REP, a PUB
state socket, a fixed-rate physics loop, fault injection and a count of the commands received.

A backend subclass supplies ``handle`` (one command -> reply), ``step`` (advance the
physics by dt seconds) and ``state`` (the state message); this class owns the sockets and
threads. Each socket is used by exactly one thread, as ZMQ requires.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import zmq

from tidybot_sdk.protocol import ProtocolError, decode, encode, parse_command



@dataclass
class Faults:
    """Fault injection for tests: set fields while the server runs."""

    freeze_state: bool = False   # stop publishing state (the physics keeps running)
    drop_replies: int = 0        # swallow this many replies (the client's request times out)
    reply_delay_s: float = 0.0   # answer every request this much later


class Received(Counter):
    """msg_type name -> count, and the last ``LOG`` arrivals (monotonic time, name), for
    tests that ask what reached the backend after a moment (the estop's reply)."""

    LOG = 20000

    def __init__(self) -> None:
        super().__init__()
        self.log: deque[tuple[float, str]] = deque(maxlen=self.LOG)

    def __setitem__(self, name: str, count: int) -> None:
        super().__setitem__(name, count)
        self.log.append((time.monotonic(), name))

    def since(self, t: float) -> list[str]:
        """The names of what arrived after monotonic time ``t``, in order."""
        return [name for at, name in list(self.log) if at > t]


class BackendServer:
    """One simulated backend on its own sockets and threads."""

    name = "backend"
    msg_types: type[IntEnum]

    def __init__(self, cmd_addr: str, state_addr: str, *, state_rate_hz: float,
                 tick_hz: float) -> None:
        self.cmd_addr, self.state_addr = cmd_addr, state_addr    # ZMQ addresses to bind
        self.state_rate_hz, self.tick_hz = state_rate_hz, tick_hz
        self.faults = Faults()
        self.received = Received()                # what arrived, for tests
        self.lock = threading.RLock()              # guards the physics state
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ctx = zmq.Context.instance()
        self._was_bound = False      # started before: a re-bind may wait for the old socket
        self._wake_addr = ""         # inproc: a handled request wakes a resting loop

    # -------------------------------------------------------------- subclass interface
    def handle(self, msg_type: IntEnum, fields: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, dt: float) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def error_reply(self, text: str) -> dict[str, Any]:
        return {"error": text}

    def resting(self) -> bool:
        """Whether nothing moves until a command arrives (under the lock): the loop then
        sleeps until the next state is due, woken at once by a message on an extra socket
        or a handled request (a wake-up costs ~0.15 ms of CPU here: the idle arm's 1 kHz
        tick was ~20 % of a core). Only for a backend whose ``handle`` does not wait on
        the loop (the gripper's moves do)."""
        return False

    def publishing(self) -> bool:
        """Whether the state goes out now (a backend that stops publishing says False)."""
        return True

    def open_extra_sockets(self) -> list[zmq.Socket]:
        """Sockets the physics thread polls (the arm's command stream)."""
        return []

    def on_extra_message(self, sock: zmq.Socket, data: bytes) -> None:
        """A message arrived on one of open_extra_sockets()."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        """Bind the sockets and start serving (again, after stop())."""
        if self.running:
            return
        self._stop.clear()
        bound: list[zmq.Socket] = []
        try:
            bound.append(rep := self._bind(zmq.ROUTER, self.cmd_addr))
            bound.append(pub := self._bind(zmq.PUB, self.state_addr))
            bound.extend(extra := self.open_extra_sockets())
        except zmq.ZMQError:
            for sock in bound:
                sock.close()
            raise
        self._was_bound = True
        self._wake_addr = f"inproc://{self.name}-wake-{id(self)}-{time.monotonic_ns()}"
        self._threads = [
            threading.Thread(target=self._serve, args=(rep,), name=f"{self.name}-rep", daemon=True),
            threading.Thread(target=self._run, args=(pub, extra), name=f"{self.name}-loop",
                             daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, wait: bool = True) -> None:
        """Close the sockets and stop the threads (a crashed or killed server, to clients);
        ``wait=False`` only tells them to (several servers then end at once: each thread
        takes up to its poll, 50 ms, to see it)."""
        self._stop.set()
        if not wait:
            return
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def _bind(self, kind: int, addr: str, **options: Any) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        for opt, value in options.items():
            sock.setsockopt(getattr(zmq, opt), value)
        # ZMQ closes sockets asynchronously: right after a restart the old socket may still
        # hold the port for a moment, so retry briefly before giving up.
        deadline = time.monotonic() + (2.0 if self._was_bound else 0.0)
        while True:
            try:
                sock.bind(addr)
                return sock
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    sock.close()
                    raise
                time.sleep(0.02)

    # -------------------------------------------------------------------- threads
    def _serve(self, rep: zmq.Socket) -> None:
        """Answer requests one at a time, as a REP server does. The socket is a ROUTER (a
        REQ client cannot tell the difference) so that a reply can be dropped on purpose."""
        wake = self._ctx.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.connect(self._wake_addr)
        try:
            while not self._stop.is_set():
                if not rep.poll(50):
                    continue
                frames = rep.recv_multipart()
                if len(frames) < 3:
                    continue                       # not from a REQ socket
                envelope, data = frames[:-1], frames[-1]
                reply = self.reply_to(data)
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass                           # woken already, not yet drained
                if self.faults.reply_delay_s and self._stop.wait(self.faults.reply_delay_s):
                    break                          # stopped meanwhile: a dead server never answers
                if self.faults.drop_replies > 0:
                    self.faults.drop_replies -= 1
                    continue
                rep.send_multipart([*envelope, encode(reply)])
        finally:
            wake.close()
            rep.close()

    def reply_to(self, data: bytes) -> dict[str, Any]:
        """Decode, check and handle one request; every failure becomes an error reply."""
        try:
            msg_type, fields = parse_command(decode(data), self.msg_types)
        except ProtocolError as exc:
            self.received["invalid"] += 1
            return self.error_reply(str(exc))
        self.received[msg_type.name] += 1
        try:
            return self.handle(msg_type, fields)   # takes self.lock itself, as briefly as it can
        except ProtocolError as exc:
            return self.error_reply(str(exc))
        except Exception as exc:  # a bug must not take the server down: answer and go on
            self.received["internal_error"] += 1
            return self.error_reply(f"internal error: {type(exc).__name__}: {exc}")

    def _run(self, pub: zmq.Socket, extra: list[zmq.Socket]) -> None:
        period = 1.0 / self.tick_hz
        publish_every = 1.0 / self.state_rate_hz
        wake = self._ctx.socket(zmq.PULL)
        wake.setsockopt(zmq.LINGER, 0)
        wake.bind(self._wake_addr)
        poller = zmq.Poller()
        for sock in (*extra, wake):
            poller.register(sock, zmq.POLLIN)
        last = next_tick = next_pub = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for sock, _ in poller.poll(0):
                    if sock is wake:
                        sock.recv()
                    else:
                        self.on_extra_message(sock, sock.recv())
                with self.lock:
                    self.step(min(now - last, 10 * period))
                    due = (now >= next_pub and not self.faults.freeze_state
                           and self.publishing())
                    msg = self.state() if due else None
                    resting = self.resting()
                last = now
                if msg is not None:
                    pub.send(encode(msg))
                if now >= next_pub:
                    next_pub = max(next_pub + publish_every, now)
                next_tick = next_pub if resting else next_tick + period
                delay = next_tick - time.monotonic()
                if delay > 0 and resting:
                    poller.poll(math.ceil(delay * 1000.0))     # whole ms; woken by a message
                elif delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()   # overloaded: do not try to catch up
        finally:
            wake.close()
            pub.close()
            for sock in extra:
                sock.close()
