"""The code's requests to the node (proto.NodeMsg): rewinds and camera frames.

The node serves them on a socket of the code's guard (``SdkConfig.node``); a script run
by hand, without the node, has none and is told so. One channel per SDK: its requests
go one at a time, as the guard answers them.
"""
from __future__ import annotations

import threading
from typing import Any

from .errors import TidybotError
from .protocol import ProtocolError
from .transport import RequestClient


class NodeChannel:
    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._client: RequestClient | None = None
        self._lock = threading.Lock()

    def request(self, msg: dict[str, Any], timeout_s: float, error: type[TidybotError],
                what: str) -> dict[str, Any]:
        """The node's reply to ``msg`` (it may carry ``error``: the caller decides); raises
        ``error`` when there is no node or it does not answer."""
        if not self._endpoint:
            raise error(f"{what} is served by the tidybot_exec node: run this code through "
                        f"it (execute_code, tidybot-run)")
        with self._lock:
            if self._client is None:
                self._client = RequestClient(self._endpoint, "node", timeout_s)
            client = self._client
        try:
            return client.request(msg, timeout_s)
        except ProtocolError as exc:
            raise error(f"the node sent an invalid reply: {exc}") from None
        except TidybotError as exc:
            raise error(f"the node did not answer: {exc}") from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
