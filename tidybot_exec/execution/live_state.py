"""The robot's live state: one subscriber per backend, every consumer a handler (no rclpy).

"Where the robot is" has one answer in the node. Each backend's state stream (the arm's at
100 Hz, up to 1 kHz) is read and decoded once, in a thread of its own, and each message is
handed in that thread to every handler in the order they were added: the recorder (rewind),
the cameras' arm track, the state topics and /diagnostics; a dry run's seed reads
``latest``. A handler that raises is logged (at most once per ``ERROR_EVERY_S``) and never
stops the stream or the handlers after it. A dry run's private robot has a feed of its own.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import BackendUnavailable
from tidybot_sdk.transport import StateSubscriber

BACKENDS = ("arm", "base", "gripper")
ERROR_EVERY_S = 5.0
Handler = Callable[[dict[str, Any]], None]


class LiveState:
    def __init__(self, config: SdkConfig, log: Callable[[str], None] = lambda line: None) -> None:
        self._log = log
        self._handlers: dict[str, tuple[Handler, ...]] = {name: () for name in BACKENDS}
        self._lock = threading.Lock()              # adding handlers only
        self._logged_at = -ERROR_EVERY_S
        self._subs = {name: StateSubscriber(getattr(config, name)["state"], name,
                                            lambda msg, name=name: self._dispatch(name, msg))
                      for name in BACKENDS}

    def on(self, name: str, handler: Handler) -> None:
        """Call ``handler`` with every state message of backend ``name`` from now on."""
        with self._lock:
            self._handlers[name] = (*self._handlers[name], handler)

    def address(self, name: str) -> str:
        return self._subs[name].address

    def latest(self, name: str, max_age_s: float) -> dict[str, Any] | None:
        """The newest state of ``name`` if it arrived within ``max_age_s``, else None."""
        try:
            return self._subs[name].latest(max_age_s)
        except BackendUnavailable:
            return None

    def _dispatch(self, name: str, msg: dict[str, Any]) -> None:
        for handler in self._handlers[name]:        # one read: a tuple replaced whole
            try:
                handler(msg)
            except Exception as exc:  # noqa: BLE001 - one consumer must not starve the others
                now = time.monotonic()
                if now - self._logged_at >= ERROR_EVERY_S:
                    self._logged_at = now
                    self._log(f"a {name} state handler failed: {exc!r}")

    def close(self) -> None:
        for sub in self._subs.values():
            sub.close()
