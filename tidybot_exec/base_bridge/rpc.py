"""A client of the TidyBot base server's RPC whose every call ends within a deadline.

The base server is a ``multiprocessing.managers.BaseManager`` (typeid ``Base``; HMAC authkey;
pickled arguments and numpy replies). Two APIs exist (REAL-SERVERS.md §2):

- upstream (jimmyyhwu/tidybot2): ``reset``, ``execute_action({'base_pose': ndarray})``,
  ``get_state``, ``close``; every ``Base()`` is a new object with no vehicle until ``reset()``.
- the robot's fork adds ``ensure_initialized``, ``set_target_velocity(v, frame)``, ``stop``,
  ``get_full_state`` (with ``base_velocity``) and more; ``Base()`` is one shared object.

The proxy only has the methods its server exposes, so the API is read off the proxy.

A multiprocessing connection has no timeout: a hung server blocks its caller forever. So
every call runs in a worker thread and the caller waits at most ``timeout_s``; a worker
whose call overran is left behind (its connection with it) and the next call starts a new
one, with a connection of its own (a proxy connects once per thread).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from multiprocessing import AuthenticationError
from multiprocessing.managers import BaseManager, RemoteError
from queue import SimpleQueue
from typing import Any, Callable

UPSTREAM, FORK = "upstream", "fork"
# what a reset may take on the robot: a new vehicle and its control loop coming up
INIT_TIMEOUT_S = 10.0
# errors of the connection itself (a server that is down, or died in the middle of a call)
LOST = (EOFError, OSError)


class BaseServerError(Exception):
    """The base server cannot serve this; the message says what happened and what to do."""


class ServerLost(BaseServerError):
    """Not reachable, gone, or no answer in time: worth trying again later."""


class ServerRefused(BaseServerError):
    """It answered, with a refusal: the key, a missing method, or an exception it raised."""


class _Manager(BaseManager):
    """The client side: ``Base`` is whatever the server registered under that typeid."""


_Manager.register("Base")


class _Worker:
    """A daemon thread that runs calls one at a time; a caller may stop waiting for one."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue = SimpleQueue()
        threading.Thread(target=self._run, name="base-rpc", daemon=True).start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            del job, fn, future    # the proxy in a closure must not outlive the call here

    def run(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        """``fn()``'s result or exception; TimeoutError after ``timeout_s``."""
        future: Future = Future()
        self._jobs.put((fn, future))
        return future.result(timeout_s)

    def retire(self) -> None:
        """End the thread after whatever call it is in (perhaps never: it is a daemon)."""
        self._jobs.put(None)


class BaseRpc:
    """The connection to one base server: open() it, then call() its methods."""

    def __init__(self, host: str, port: int, authkey: bytes, *, key_source: str = "the authkey",
                 timeout_s: float = 1.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.where = f"the base server at {host}:{port}"
        self._authkey, self._key_source = authkey, key_source
        self._lock = threading.Lock()       # one caller at a time picks the worker
        self._worker: _Worker | None = None
        self._proxy: Any = None
        self.api = UPSTREAM                 # or FORK: known once open
        self.poll_method = "get_state"
        self.up = False                     # open, and no call has lost the server since
        self.stuck = False                  # a call never returned (the exit must not wait)

    def has(self, method: str) -> bool:
        return self._proxy is not None and hasattr(self._proxy, method)

    # ------------------------------------------------------------------ open / close
    def open(self) -> str:
        """Connect and initialise the base as its server needs; returns the API's name.

        A proxy kept from before a lost connection is tried first: the same object (the
        same vehicle and odometry) when the server lived on. Only a new ``Base()`` is
        initialised; upstream that means ``reset()``, which zeroes the odometry.
        """
        if self._proxy is not None:
            try:
                self._call(self.poll_method)
                self.up = True
                return self.api
            except ServerRefused:          # a new server (the object is unknown there)
                self._drop_proxy()
        manager = _Manager(address=(self.host, self.port), authkey=self._authkey)
        self._proxy = self._run("connect", lambda: (manager.connect(), manager.Base())[1],
                                self.timeout_s)
        fork = self.has("ensure_initialized")
        self.api = FORK if fork else UPSTREAM
        polls = [m for m in ("get_full_state", "get_state") if self.has(m)]
        for needed in (("ensure_initialized",) if fork else ("reset", "execute_action")):
            if not self.has(needed):
                raise self._refused_for_missing(needed)
        if not polls:
            raise self._refused_for_missing("get_state")
        self.poll_method = polls[0]
        self._call("ensure_initialized" if fork else "reset", timeout_s=INIT_TIMEOUT_S)
        self.up = True
        return self.api

    def close(self) -> None:
        """Let go of the server. Upstream, ``close()`` first stops the vehicle's control loop
        that our reset() started (a later reset would find it running); the fork's shared
        vehicle is not ours to stop."""
        if self.up and self.api == UPSTREAM and self.has("close"):
            try:
                self.call("close")
            except BaseServerError:
                pass                       # gone already: nothing left to stop
        self.up = False
        self._drop_proxy()
        self._retire()

    # ------------------------------------------------------------------------ calls
    def call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """``proxy.method(*args, **kwargs)`` within the deadline.

        Raises ServerLost when the server is unreachable, died or did not answer in time
        (the connection is dropped: the next call reconnects), ServerRefused when it lacks
        the method or raised."""
        if not self.up:
            raise ServerLost(f"{self.where} is not connected")
        return self._call(method, *args, timeout_s=timeout_s, **kwargs)

    def _call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        proxy = self._proxy
        if proxy is None:                  # dropped meanwhile by a reconnection
            raise ServerLost(f"{self.where} is not connected")
        if not hasattr(proxy, method):
            raise self._refused_for_missing(method)
        return self._run(f"{method}()", lambda: getattr(proxy, method)(*args, **kwargs),
                         self.timeout_s if timeout_s is None else timeout_s)

    def _run(self, what: str, fn: Callable[[], Any], timeout_s: float) -> Any:
        with self._lock:
            if self._worker is None:
                self._worker = _Worker()
            worker = self._worker
        try:
            return worker.run(fn, timeout_s)
        except TimeoutError:
            self.stuck, self.up = True, False
            self._retire(worker)
            raise ServerLost(f"{self.where} did not answer {what} within {timeout_s:g}s") from None
        except AuthenticationError:
            raise ServerRefused(f"{self.where} refused {self._key_source}") from None
        except ConnectionRefusedError:
            self.up = False
            self._retire(worker)
            raise ServerLost(f"nothing listens at {self.host}:{self.port}: is the base server "
                             f"running?") from None
        except LOST as exc:
            self.up = False
            self._retire(worker)
            raise ServerLost(f"lost {self.where} during {what}: {type(exc).__name__}: "
                             f"{exc}") from None
        except RemoteError as exc:        # the server failed outside the method (unknown object)
            raise ServerRefused(f"{self.where} failed {what}: {str(exc).strip()}") from None
        except Exception as exc:          # the method raised on the server (same type here)
            raise ServerRefused(f"{self.where} failed {what}: {type(exc).__name__}: "
                                f"{exc}") from None

    def _refused_for_missing(self, method: str) -> ServerRefused:
        offers = ", ".join(getattr(self._proxy, "_exposed_", ())) or "nothing"
        return ServerRefused(f"{self.where} has no method {method}() (it offers {offers}): "
                             f"not a TidyBot base server this bridge knows")

    def _retire(self, worker: _Worker | None = None) -> None:
        with self._lock:
            if worker is None or worker is self._worker:
                if self._worker is not None:
                    self._worker.retire()
                self._worker = None

    def _drop_proxy(self) -> None:
        """Forget the proxy; its release on the server (a connection and a 'decref') runs in
        a worker within the deadline, not wherever the garbage collector happens to be."""
        if self._proxy is None:
            return
        box, self._proxy = [self._proxy], None
        try:
            self._run("release", box.clear, self.timeout_s)
        except BaseServerError:
            pass
