"""The simulator's camera server: the TidyBot camera-server protocol over a WebSocket,
rendering the world (render.py) — so the node speaks to the simulator exactly as to the
real server (cameras/protocol.py; docs/cameras.md).

Nothing is rendered while nobody is subscribed; with subscribers, one thread renders each
camera and stream that is due (at the rate each subscriber asked, at most MAX_FPS) once
and sends the encoded frame to every subscriber due. If offscreen GL is unavailable the
server says so once (log, ``get_state``'s ``error``, each subscribe's reply) and the
rest of the simulator keeps working. One simulator extension: ``get_world`` answers the
world's snapshot (a dry run's private simulator starts from it).

As the TidyBot camera server's stand-ins do (REAL-SERVERS.md §4), it takes both request
dialects, ``{"action": ...}`` answered with the action echoed and ``{"type": 1, 3, 4, 7}``
answered with ``type`` 2, 5, 8 (6: refused); it names intrinsics as a RealSense server
does (``ppx``/``ppy``), and pushes nothing on connect (the TidyBot client asks).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tidybot_exec.cameras import protocol as cp
from tidybot_exec.cameras.robot_model import MOUNTS, intrinsics

from .render import Pose, Renderer, describe_gl_failure
from .world import World

MAX_FPS = 30.0
DEFAULT_FPS = 15.0


@dataclass
class _Subscription:
    """One connection's subscription: which streams of which cameras, how often."""

    streams: dict[str, set[str]] = field(default_factory=dict)      # camera -> streams
    period: float = 1.0 / DEFAULT_FPS
    quality: int = 85
    due: float = 0.0


@dataclass(frozen=True)
class _Due:
    """One subscriber's frames due now, as its subscription was when they fell due."""

    conn: Any
    streams: tuple[tuple[str, str], ...]                            # (camera, stream)
    quality: int


class CameraServer:
    """Serves ``world`` seen from MOUNTS' cameras at ``width`` × ``height`` on ``port``
    of ``host``, or on the unix socket ``path`` (a dry run's private simulator)."""

    def __init__(self, world: World, robot_pose: Callable[[], Pose], *, width: int = 320,
                 height: int = 240, host: str = "127.0.0.1", port: int | None = None,
                 path: str | None = None, log: Callable[[str], None] = lambda line: None) -> None:
        self.world, self._robot_pose, self._log = world, robot_pose, log
        self.width, self.height = width, height
        self.host, self.port, self.path = host, port, path
        self.error = ""                      # why rendering is unavailable ("" until known)
        self.frames_rendered = 0             # renders since start (tests: none when idle)
        self._subs: dict[Any, _Subscription] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._server = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"ws+unix://{self.path}" if self.path else f"ws://{self.host}:{self.port}"

    def start(self) -> None:
        from websockets.sync.server import serve, unix_serve   # noqa: PLC0415 - on demand
        self._stop.clear()
        options = dict(compression=None, max_size=2 ** 16, ping_interval=None)
        self._server = (unix_serve(self._handle, self.path, **options) if self.path else
                        serve(self._handle, self.host, self.port, **options))
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True,
                                          name="camera-ws"),
                         threading.Thread(target=self._render_loop, daemon=True,
                                          name="camera-render")]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        with self._cond:
            self._subs.clear()

    # ------------------------------------------------------------------ requests
    def _handle(self, conn) -> None:
        from websockets.exceptions import ConnectionClosed   # noqa: PLC0415
        try:
            for message in conn:
                if isinstance(message, bytes):
                    continue
                msg: Any = None
                try:
                    msg = json.loads(message)
                    action = self._action(msg)
                    reply = self._reply(msg, action, data=self._answer(conn, action, msg))
                except (ValueError, KeyError, TypeError) as exc:
                    reply = self._reply(msg, None, error=str(exc))
                conn.send(json.dumps(reply))
        except ConnectionClosed:
            pass                            # a client that went away without a goodbye
        finally:
            with self._cond:
                self._subs.pop(conn, None)

    @staticmethod
    def _action(msg: Any) -> str:
        """The request's action, asked as ``action`` or as the type dialect's number."""
        if not isinstance(msg, dict) or ("action" not in msg and "type" not in msg):
            raise ValueError("a request is a JSON object with an action (or a type)")
        if "type" in msg and msg["type"] not in cp.ACTIONS:
            raise ValueError(f"unknown request type {msg['type']!r}: "
                             f"{', '.join(f'{n} ({a})' for n, a in cp.ACTIONS.items())}")
        action = msg.get("action", cp.ACTIONS.get(msg.get("type")))
        if "type" in msg and action != cp.ACTIONS[msg["type"]]:
            raise ValueError(f"action {action!r} and type {msg['type']} ask different things")
        return action

    @staticmethod
    def _reply(msg: Any, action: str | None, **body: Any) -> dict[str, Any]:
        """A reply in the request's dialect(s): its ``action`` echoed, and for a ``type``
        request the reply type (ACKs with ``success``, as the stand-ins send them)."""
        asked = msg if isinstance(msg, dict) else {}
        reply: dict[str, Any] = {}
        if "action" in asked or "type" not in asked:
            reply["action"] = asked.get("action", action)
        if "type" in asked:
            reply["type"] = cp.ERROR if "error" in body else cp.REPLY_TYPES[action]
            if reply["type"] in (cp.ACK, cp.ERROR):
                reply["success"] = "error" not in body
        return {**reply, **body}

    def _answer(self, conn, action: str, msg: dict[str, Any]) -> Any:
        if action == "get_state":
            with self._cond:
                streaming = bool(self._subs)
            data = {"cameras": [{"device_id": name, "name": name, "serial": f"sim-{name}",
                                 "is_streaming": streaming, "supported_streams": list(cp.STREAMS)}
                                for name in MOUNTS], "is_streaming": streaming,
                    "simulator": True}       # (an extension: it has a world, get_world)
            if self.error:
                data["error"] = self.error
            return data
        if action == "get_intrinsics":
            device = msg.get("device_id")          # none, "any" or "all": the first camera
            name = next(iter(MOUNTS)) if device in (None, "", "any", "all") else device
            stream = msg.get("stream", "color")
            if stream not in cp.INTRINSICS_STREAMS:
                raise ValueError(f"unknown stream {stream!r}: {', '.join(cp.INTRINSICS_STREAMS)}")
            if stream not in cp.STREAMS:
                raise ValueError(f"stream {stream!r}: the simulator's cameras have no infrared "
                                 f"imagers, only {' and '.join(cp.STREAMS)} (depth aligned "
                                 "to colour: the same intrinsics)")
            return self._intrinsics(self._cameras(name).pop())
        if action == "get_world":
            return self.world.snapshot()
        if action in ("subscribe", "unsubscribe"):
            cameras = self._cameras(msg.get("device_id"))
            streams = set(msg.get("streams", cp.STREAMS))
            if not streams <= set(cp.STREAMS):
                raise ValueError(f"streams must be among {cp.STREAMS}")
            with self._cond:
                sub = self._subs.setdefault(conn, _Subscription())
                for camera in cameras:
                    now = sub.streams.setdefault(camera, set())
                    now.difference_update(streams) if action == "unsubscribe" else now.update(streams)
                    if not now:
                        del sub.streams[camera]
                if action == "subscribe":
                    sub.period = 1.0 / min(MAX_FPS, max(0.1, float(msg.get("fps", DEFAULT_FPS))))
                    sub.quality = int(msg.get("quality", sub.quality))
                subscribed = {c: sorted(v) for c, v in sub.streams.items()}
                if not sub.streams:
                    del self._subs[conn]
                self._cond.notify_all()
            if self.error and action == "subscribe":
                raise ValueError(self.error)
            return {"subscribed": subscribed}
        raise ValueError(f"unknown action {action!r}")

    @staticmethod
    def _cameras(device_id: Any) -> set[str]:
        if device_id in (None, "all"):
            return set(MOUNTS)
        if device_id not in MOUNTS:
            raise ValueError(f"unknown device_id {device_id!r}: {', '.join(MOUNTS)}")
        return {device_id}

    def _intrinsics(self, name: str) -> dict[str, Any]:
        """``name``'s intrinsics as a RealSense server names them (REAL-SERVERS.md §4):
        the principal point is ``ppx``/``ppy``; ``depth_scale`` is metres per depth unit."""
        k = intrinsics(self.width, self.height, MOUNTS[name].fovy_deg)
        return {"fx": k["fx"], "fy": k["fy"], "ppx": k["cx"], "ppy": k["cy"],
                "width": k["width"], "height": k["height"], "depth_scale": 0.001}

    # ------------------------------------------------------------------ rendering
    def _render_loop(self) -> None:
        renderer: Renderer | None = None
        try:
            while not self._stop.is_set():
                with self._cond:
                    self._cond.wait_for(lambda: self._stop.is_set() or self._subs)
                    now = time.monotonic()
                    due = [self._take_due(conn, sub, now) for conn, sub in self._subs.items()
                           if sub.due <= now]
                    wake = min((s.due for s in self._subs.values()), default=now + 1.0)
                if self._stop.is_set():
                    break
                if not due:
                    self._stop.wait(max(0.0, wake - time.monotonic()))
                    continue
                if renderer is None and not self.error:
                    try:
                        renderer = Renderer(self.world.bodies(), self.width, self.height)
                    except Exception as exc:  # noqa: BLE001 - no GL: say why, once
                        self.error = describe_gl_failure(exc)
                        self._log(f"tidybot-sim: cameras: {self.error}")
                if renderer is None:               # tell them why, drop them until asked again
                    for plan in due:
                        with self._cond:
                            self._subs.pop(plan.conn, None)
                        try:
                            plan.conn.send(json.dumps({"action": "subscribe", "type": cp.ERROR,
                                                       "success": False, "error": self.error}))
                        except Exception:  # noqa: BLE001 - gone already
                            pass
                    continue
                try:
                    self._send_due(renderer, due)
                except Exception as exc:  # noqa: BLE001 - a GL error mid-run: say so, go on
                    self._log(f"tidybot-sim: cameras: rendering failed: {exc!r}")
                    self._stop.wait(1.0)
        finally:
            if renderer is not None:
                renderer.close()

    @staticmethod
    def _take_due(conn: Any, sub: _Subscription, now: float) -> _Due:
        """What ``sub`` gets now, copied (called under the lock: a subscribe or unsubscribe
        may change the subscription while the frames are rendered and sent), and its next
        turn."""
        sub.due = max(sub.due + sub.period, now)
        return _Due(conn, tuple(sorted((camera, stream) for camera, streams in sub.streams.items()
                                       for stream in streams)), sub.quality)

    def _send_due(self, renderer: Renderer, due: list[_Due]) -> None:
        bodies = self.world.bodies()
        renderer.place(self._robot_pose(), bodies)
        stamp = time.time()
        encoded: dict[tuple[str, str, int], bytes] = {}
        for plan in due:
            for camera, stream in plan.streams:
                key = (camera, stream, plan.quality if stream == "color" else 0)
                if key not in encoded:
                    image = renderer.render(camera, depth=stream == "depth")
                    self.frames_rendered += 1
                    header = {"camera_id": camera, "device_id": camera, "stream": stream,
                              "timestamp": stamp, "width": self.width, "height": self.height,
                              "format": "png" if stream == "depth" else "jpeg",
                              "intrinsics": self._intrinsics(camera)}
                    body = (cp.encode_depth_png(image) if stream == "depth"
                            else cp.encode_jpeg(image, plan.quality))
                    encoded[key] = cp.pack_frame(header, body)
                try:
                    plan.conn.send(encoded[key])
                except Exception:  # noqa: BLE001 - a subscriber gone: its handler ends it
                    with self._cond:
                        self._subs.pop(plan.conn, None)
                    break
