"""The safety guard's relay: the only way from submitted code to the robot (no rclpy).

The code's SDK talks to the guard over unix sockets in the execution's private directory
(the same msgpack messages as the backends); the guard re-checks **every** command against
the node's SafetyLimits and keep-out rule (envelope.py) and forwards only what is inside
the envelope, shaped to the speed caps. The SDK checks the same limits first, with the same wording, for
early friendly errors; the guard is the enforcement, so a script that patches the SDK
gains nothing. A refused request is answered ``{"error": ..., "safety_error": ...}`` (the
SDK raises SafetyError with that message); a refused stream message is dropped and the arm
held: sent the last target admitted again when one was forwarded within the hold-off (it
brakes to arrive there, inside the limits), else told to stop.

One guard per execution runs in the node (trusted; it already has numpy loaded, so a goal
pays no import for it), outside the sandbox, whose only way out are the guard's sockets;
for a dry run its upstream is the private simulator. The hold after the execution is
commanded by the node itself, straight to the backends (hold.py), never through the code.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import zmq

from tidybot_sdk import protocol as proto
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import BackendUnavailable
from tidybot_sdk.protocol import ArmMsg, BaseMsg, GripperMsg, ProtocolError
from tidybot_sdk.transport import GateClosed, RequestClient

from tidybot_exec.guard.envelope import Envelope

UPSTREAM_TIMEOUT_S = 60.0       # a gripper move blocks its reply; the SDK's own timeout rules
CLOSE_TIMEOUT_S = 2.0           # close waits at most this for the relay threads
STATE_MAX_AGE_S = 0.5           # the checks need state newer than this
# What may still pass once the execution is stopping: stop commands and state queries.
WHILE_STOPPING = {"arm": {ArmMsg.STOP, ArmMsg.GET_STATE}, "base": {BaseMsg.STOP, BaseMsg.GET_STATE},
                  "gripper": {GripperMsg.STOP}}
STOPPING_REFUSAL = "the execution is being stopped: no more motion is accepted"
# What may pass to a part the execution's lease does not hold: reading its state.
STATE_QUERIES = {"arm": {ArmMsg.GET_STATE}, "base": {BaseMsg.GET_STATE}, "gripper": set()}


NodeHandler = Callable[[dict[str, Any]], dict[str, Any]]


class GuardError(Exception):
    """The guard could not close cleanly (named in the execution's error)."""


def code_config(robot: SdkConfig, directory: str) -> SdkConfig:
    """What the code's SDK is given: ``robot``'s limits, with every backend and the node
    reached through the guard whose sockets are in ``directory`` (as the code sees it)."""
    return replace(robot.with_endpoints(proto.ipc_endpoints(directory)),
                   node=proto.node_endpoint(directory))


NODE_WAIT_S = 5.0           # a request of code that starts at once waits this for its handler


class Guard:
    """Binds the code-facing sockets in ``directory`` and relays to ``upstream``.

    One thread per command socket (a gripper move blocks only the gripper) and one for the
    arm's stream, in Python; the three state streams are relayed by libzmq itself
    (``zmq.proxy``, which holds no GIL), so a busy node never makes the code's state stale.
    The checks read the newest state from their own conflating subscriptions."""

    def __init__(self, upstream: SdkConfig, directory: str | Path,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.upstream, self.directory, self._log = upstream, Path(directory), log
        self.endpoints = proto.ipc_endpoints(str(self.directory))
        self.refusals: list[str] = []
        self._ctx = zmq.Context.instance()
        self._views: dict[str, zmq.Socket] = {}
        self._seen: dict[str, tuple[bytes, float]] = {}
        self._view_lock = threading.Lock()
        self.envelope = Envelope(upstream.limits, lambda: self.state("arm"),
                                 lambda: self.state("base"), kept_out=upstream.kept_out())
        self._clients = {name: RequestClient(getattr(upstream, name)["cmd"], name, UPSTREAM_TIMEOUT_S)
                         for name in proto.SOCKETS}
        self._threads: list[threading.Thread] = []
        self._controls: list[zmq.Socket] = []
        self._stopping = threading.Event()
        self._gate = threading.Lock()       # held while a motion command is handed upstream
        self._followers: tuple[Guard, ...] = ()   # refuse_with
        self._closed = False
        self._polled_at = {name: -math.inf for name in ("arm", "base")}
        self._ready = threading.Barrier(2 * len(proto.SOCKETS) + 3)
        self._node_handler: NodeHandler | None = None       # serve_node
        self._node_served = threading.Event()
        self._code_paused = threading.Condition()
        self._pauses = 0
        self._leased: frozenset[str] = frozenset(proto.SOCKETS)   # lease(): the parts it may command
        self._holder_of: Callable[[str], str] = lambda name: ""

    def lease(self, resources: Iterable[str], holder_of: Callable[[str], str]) -> None:
        """Commands go only to ``resources`` (the execution's lease's parts), before the
        code is handed over; any other part's commands — a STOP too: it would stop another
        holder's motion — are refused with who holds it (``holder_of``). State is read freely."""
        self._leased, self._holder_of = frozenset(resources), holder_of

    def _not_leased(self, name: str) -> str | None:
        """Why this execution may not command ``name`` (None when it may)."""
        if name in self._leased:
            return None
        holder = self._holder_of(name)
        return (f"the {name} is not leased to this execution: {holder!r} holds it" if holder else
                f"the {name} is not leased to this execution; acquire a lease with it")

    def start(self) -> "Guard":
        """Bind every socket and start relaying; returns once all are bound."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in ("arm", "base"):
            view = self._ctx.socket(zmq.SUB)
            view.setsockopt(zmq.LINGER, 0)
            view.setsockopt(zmq.CONFLATE, 1)
            view.setsockopt(zmq.SUBSCRIBE, b"")
            view.connect(getattr(self.upstream, name)["state"])
            self._views[name] = view
        targets = [(self._serve_commands, (name,)) for name in proto.SOCKETS]
        targets += [(self._relay_state, (name,)) for name in proto.SOCKETS]
        targets += [(self._relay_stream, ()), (self._serve_node, ())]
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True,
                                      name=f"guard-{target.__name__}{args}")
            thread.start()
            self._threads.append(thread)
        self._node_thread = self._threads[-1]
        self._ready.wait(10)
        # made now, so that close (on the execution's end path) only has to send
        self._controls = [self._socket(zmq.PAIR, connect=self._control(name)) for name in
                          (*proto.SOCKETS, *(f"cmd-{n}" for n in proto.SOCKETS), "stream", "node")]
        return self

    def refuse_motion(self) -> None:
        """The execution is being stopped: from now on only stop commands and state queries
        pass; every motion command is answered with an error and every streamed target is
        dropped (code that ignores the stop's SIGINT cannot move the robot in the grace).
        Returns once no motion command is being handed to a backend: one that passed the
        check before is sent already (a send takes microseconds; its reply is not waited
        for here: ``settle``). A gripper move, whose reply comes only when the fingers
        arrive, is no longer waited for: the code's call returns with the refusal. Guards
        that ``refuse_with`` this one refuse motion too."""
        self._stopping.set()
        with self._gate:
            pass
        self._clients["gripper"].interrupt()
        for guard in self._followers:
            guard.refuse_motion()
        with self._code_paused:          # requests waiting for a rewind are refused now
            self._code_paused.notify_all()

    def refuse_with(self, other: "Guard") -> None:
        """When this guard refuses motion, ``other`` does too (the guard of a rewind the
        code asked for, which drives for it); at once if it already does."""
        self._followers = (*self._followers, other)
        if self._stopping.is_set():
            other.refuse_motion()

    def settle(self, timeout_s: float) -> bool:
        """After ``refuse_motion``: wait until the arm's and the base's commands in flight
        were answered — so the backend has taken them before a hold is sent, on another
        socket, that it could otherwise read first. False when one is still unanswered after
        ``timeout_s`` (a backend that is down or hung)."""
        deadline = time.monotonic() + timeout_s
        return all(self._clients[name].wait_idle(max(0.0, deadline - time.monotonic()))
                   for name in ("arm", "base"))

    @contextmanager
    def _motion_gate(self) -> Iterator[bool]:
        """Around handing one motion command upstream: whether it may still go."""
        with self._gate:
            yield not self._stopping.is_set()

    def serve_node(self, handler: NodeHandler) -> None:
        """Answer the code's requests to the node (proto.NodeMsg) with ``handler``; one that
        came before (code that asks at once) waits for it."""
        self._node_handler = handler
        self._node_served.set()

    @property
    def stopping(self) -> threading.Event:
        """Set once the execution is being stopped (a rewind the code asked for ends then)."""
        return self._stopping

    @property
    def code_is_paused(self) -> bool:
        return self._pauses > 0

    @contextmanager
    def code_paused(self) -> Iterator[None]:
        """The node drives the robot for the code (its rewind): meanwhile the code's motion
        requests wait and its streamed targets are dropped — one writer at a time."""
        with self._code_paused:
            self._pauses += 1
        try:
            yield
        finally:
            with self._code_paused:
                self._pauses -= 1
                self._code_paused.notify_all()

    def close(self) -> None:
        """Stop every thread at once and join them: no command of this execution reaches
        the robot after close returns. A request in flight to a backend that is dead or hung
        is abandoned (the code is answered "... request abandoned ..."), so close is bounded by
        CLOSE_TIMEOUT_S whatever the backends do. Closing again does nothing.

        A request of the code to the node in progress (a rewind it asked for drives through
        a guard of its own) sees ``stopping`` and ends; its thread is not counted as stuck
        here: the service, which registered that rewind as a writer, joins it with a bound
        before it holds the robot and unbinds the lease (service.finish)."""
        self._stopping.set()
        with self._code_paused:          # a command waiting for the code's rewind ends now
            self._code_paused.notify_all()
        if self._closed:
            return
        self._closed = True
        for client in self._clients.values():
            client.abandon()
        for control in self._controls:
            control.send(b"TERMINATE")
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for thread in self._threads:          # (closing an inproc peer early drops its message)
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive() and t is not self._node_thread]
        for control in self._controls:
            control.close()
        with self._view_lock:
            for view in self._views.values():
                view.close()
        for client in self._clients.values():
            client.close()
        if stuck:
            raise GuardError(f"guard threads did not end in {CLOSE_TIMEOUT_S:g}s: {stuck}")

    # -------------------------------------------------------------- state
    def state(self, name: str) -> dict[str, Any] | None:
        """The newest state of ``name`` (None when none came within STATE_MAX_AGE_S).

        The view conflates, so a message's arrival time is not known; it is bounded: a
        message found at one poll arrived after the poll before. When that bound is too old
        to vouch for it, wait (up to STATE_MAX_AGE_S) for one that arrives now."""
        with self._view_lock:
            view, now = self._views[name], time.monotonic()
            if view.poll(0):
                self._seen[name] = (view.recv(), self._polled_at[name])
            self._polled_at[name] = now
            raw, after = self._seen.get(name, (b"", -math.inf))
            if now - after > STATE_MAX_AGE_S:
                if not view.poll(int(STATE_MAX_AGE_S * 1000)):
                    return None
                raw = view.recv()
                self._seen[name] = (raw, now)
                self._polled_at[name] = time.monotonic()
        return proto.decode(raw)

    def _socket(self, kind: int, bind: str | None = None, connect: str | None = None) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if bind:
            sock.bind(bind)
        if connect:
            sock.connect(connect)
        return sock

    def _control(self, name: str) -> str:
        return f"inproc://guard-{id(self)}-{name}"

    def _relay_state(self, name: str) -> None:
        sub = self._socket(zmq.SUB, connect=getattr(self.upstream, name)["state"])
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        pub = self._socket(zmq.PUB, bind=self.endpoints[name]["state"])
        control = self._socket(zmq.PAIR, bind=self._control(name))
        self._ready.wait()
        try:
            zmq.proxy_steerable(sub, pub, None, control)     # returns on TERMINATE
        finally:
            for sock in (sub, pub, control):
                sock.close()

    # ----------------------------------------------------------- commands
    def _refuse(self, backend: str, reason: str) -> None:
        self.refusals.append(f"{backend}: {reason}")
        self._log(f"guard refused a {backend} command: {reason}")

    def _serve_commands(self, name: str) -> None:
        sock = self._socket(zmq.REP, bind=self.endpoints[name]["cmd"])
        for _ in self._until_terminated(f"cmd-{name}", sock):
            sock.send(proto.encode(self._answer(name, sock.recv())))

    def _until_terminated(self, control_name: str, *socks: zmq.Socket) -> Iterator[None]:
        """Yield each time ``socks[0]`` has a message, until close() says TERMINATE; then
        close them all."""
        control = self._socket(zmq.PAIR, bind=self._control(control_name))
        poller = zmq.Poller()
        poller.register(socks[0], zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        self._ready.wait()
        try:
            while control not in dict(poller.poll()):
                yield
        finally:
            for sock in (*socks, control):
                sock.close()

    def _answer(self, name: str, frame: bytes) -> dict[str, Any]:
        try:
            msg = proto.decode(frame)
        except ProtocolError as exc:
            return {"error": str(exc)}
        if msg.get("msg_type") not in STATE_QUERIES[name] and (
                not_leased := self._not_leased(name)) is not None:
            self._refuse(name, not_leased)
            return {"error": not_leased, "safety_error": not_leased,
                    "not_leased": self._holder_of(name)}
        if msg.get("msg_type") not in WHILE_STOPPING[name]:
            with self._code_paused:
                self._code_paused.wait_for(lambda: not self._pauses or self._stopping.is_set())
            if self._stopping.is_set():
                return {"error": STOPPING_REFUSAL}
        reason, forward = self.envelope.admit(name, msg)
        if reason is not None:
            self._refuse(name, reason)
            return {"error": reason, "safety_error": reason}
        gate = None if msg.get("msg_type") in WHILE_STOPPING[name] else self._motion_gate
        try:
            return self._clients[name].request(forward, gate=gate)
        except GateClosed:
            return {"error": STOPPING_REFUSAL}
        except (BackendUnavailable, ProtocolError) as exc:
            return {"error": str(exc)}

    def _serve_node(self) -> None:
        """The code's requests to the node (proto.NodeMsg), answered in this thread by the
        handler given to ``serve_node``: the code's call waits for it (a rewind takes seconds)."""
        sock = self._socket(zmq.REP, bind=proto.node_endpoint(str(self.directory)))
        for _ in self._until_terminated("node", sock):
            frame = sock.recv()
            deadline = time.monotonic() + NODE_WAIT_S     # (close sets stopping: no wait then)
            while not self._node_served.wait(0.05) and not self._stopping.is_set() and (
                    time.monotonic() < deadline):
                pass
            if self._node_handler is None or self._stopping.is_set():
                reply = {"error": "the node does not serve this execution's requests"}
            else:
                try:
                    reply = self._node_handler(proto.decode(frame))
                except Exception as exc:  # noqa: BLE001 - the code gets an answer, the guard lives
                    reply = {"error": f"the node could not answer: {exc!r}"}
            sock.send(proto.encode(reply))

    def _relay_stream(self) -> None:
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.CONFLATE, 1)          # latest wins, as on the backend
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.bind(self.endpoints["arm"]["stream"])
        pub = self._socket(zmq.PUB, connect=self.upstream.arm["stream"])
        last, last_at = b"", -math.inf          # the last target forwarded, and when
        last_is_pose = False
        for _ in self._until_terminated("stream", sub, pub):
            frame = sub.recv()
            if self._stopping.is_set() or self._pauses:
                continue
            if (not_leased := self._not_leased("arm")) is not None:
                self._refuse("arm", not_leased)     # never a STOP: another holder's arm
                continue
            try:
                msg = proto.decode(frame)
            except ProtocolError:
                continue
            reason, forward = (self.envelope.admit("arm", msg) if msg.get("msg_type") in
                               proto.ARM_STREAM_TYPES else ("only motion targets may be streamed", msg))
            now = time.monotonic()
            if reason is None:
                last, last_at = frame if forward is msg else proto.encode(forward), now
                # a velocity re-sent would keep driving past the one hold-off it was checked for
                last_is_pose = msg["msg_type"] in (ArmMsg.JOINT_POSITION, ArmMsg.CARTESIAN_POSE)
                self._stream(pub, last)
                continue
            self._refuse("arm", reason)
            if now - last_at <= proto.ARM_HOLD_AFTER_S and last_is_pose:
                # The arm is on its way to the last target admitted (inside the limits):
                # it brakes to arrive there and holds when the stream goes quiet. A STOP
                # would brake from its speed wherever it is, overshooting that target.
                self._stream(pub, last)
            else:
                self._answer("arm", proto.encode({"msg_type": int(ArmMsg.STOP)}))

    def _stream(self, pub: zmq.Socket, frame: bytes) -> None:
        """Send one streamed target upstream unless motion is refused by now."""
        with self._motion_gate() as may_send:
            if may_send and not self._pauses:
                pub.send(frame, zmq.NOBLOCK)
