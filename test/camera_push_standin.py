"""A stand-in for a TidyBot camera server as its own stand-ins behave (REAL-SERVERS.md §4),
written here from those facts: it pushes its state unasked on connect, its replies echo
nothing of the request (no ``action``, no ``device_id``; the payload in ``data``, with a
reply ``type`` only if asked to), its cameras are described with the stand-ins' names
(``serial_number``, ``streams``, ``width``...) or the TidyBot client's (``serial``,
``is_streaming``, ``supported_streams``), and each camera has intrinsics of its own, named
``ppx/ppy`` (RealSense) or ``cx/cy``. While subscribed it streams each subscribed camera's
colour frames, headers without intrinsics, so the client must use the camera's own.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tidybot_exec.cameras import protocol as cp

W, H = 32, 24
PERIOD_S = 0.05


@dataclass
class StandIn:
    """``cameras``: device id -> name. Camera i's fx is 100 + 10 i and its principal point
    (W/2 + i, H/2 + i), so a camera given another's intrinsics is seen at once."""

    cameras: dict[str, str]
    push_state: bool = True
    typed: bool = False                  # replies carry the type dialect's reply type
    principal: tuple[str, str] = ("ppx", "ppy")
    c1_names: bool = False               # describe cameras with the TidyBot client's names
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server = None
        self._thread: threading.Thread | None = None
        self._jpeg = cp.encode_jpeg(np.full((H, W, 3), 90, np.uint8))

    def intrinsics(self, device: str) -> dict[str, Any]:
        i = list(self.cameras).index(device)
        px, py = self.principal
        return {"fx": 100.0 + 10 * i, "fy": 100.0 + 10 * i, px: W / 2 + i, py: H / 2 + i,
                "width": W, "height": H, "depth_scale": 0.001}

    def state(self) -> dict[str, Any]:
        cameras = [({"device_id": d, "name": n, "serial": d, "is_streaming": False,
                     "supported_streams": ["color"]} if self.c1_names else
                    {"device_id": d, "name": n, "serial_number": d, "streams": ["color"],
                     "width": W, "height": H, "fps": 30})
                   for d, n in self.cameras.items()]
        return self._reply(cp.STATE, {"cameras": cameras, "is_streaming": False, "error": ""})

    def _reply(self, kind: int, data: Any = None, **fields: Any) -> str:
        reply = {"type": kind} if self.typed else {}
        if data is not None:
            reply["data"] = data
        return json.dumps({**reply, **fields})

    # ---------------------------------------------------------------- the server
    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def __enter__(self) -> "StandIn":
        from websockets.sync.server import serve   # noqa: PLC0415 - camera dependency
        self._server = serve(self._handle, "127.0.0.1", 0, compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def _handle(self, conn) -> None:
        from websockets.exceptions import ConnectionClosed   # noqa: PLC0415
        subscribed: set[str] = set()
        try:
            if self.push_state:
                conn.send(self.state())
            while True:
                try:
                    msg = json.loads(conn.recv(timeout=PERIOD_S))
                except TimeoutError:
                    msg = None
                if msg is not None:
                    self.requests.append(msg)
                    self._answer(conn, msg, subscribed)
                for device in sorted(subscribed):
                    header = {"camera_id": device, "stream": "color", "timestamp": 1.0,
                              "width": W, "height": H, "format": "jpeg"}
                    conn.send(cp.pack_frame(header, self._jpeg))
        except ConnectionClosed:
            pass

    def _answer(self, conn, msg: dict[str, Any], subscribed: set[str]) -> None:
        action = msg.get("action") or cp.ACTIONS.get(msg.get("type"))
        device = msg.get("device_id")
        if action == "get_state":
            conn.send(self.state())
        elif action == "get_intrinsics":
            first = next(iter(self.cameras))
            conn.send(self._reply(cp.INTRINSICS, self.intrinsics(
                first if device in (None, "any", "all") else device)))
        elif action in ("subscribe", "unsubscribe"):
            devices = set(self.cameras) if device in (None, "all") else {device}
            subscribed.update(devices) if action == "subscribe" else subscribed.difference_update(devices)
            conn.send(self._reply(cp.ACK, success=True, message=f"{action}d"))
        else:
            conn.send(self._reply(cp.ERROR, error=f"unknown request {msg}"))
