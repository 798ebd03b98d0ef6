"""The cameras as one execution's code sees them: its SDK's camera requests, answered by
the node through the code's guard (proto.NodeMsg CAMERAS, CAMERA_FRAME).

The sandbox has no network: frames reach the code only here, raw (rgb8, depth 16UC1 mm),
bounded by a per-execution byte budget and a staleness limit — a frame older than
``max_age_s`` is never given, the code gets SensorUnavailable with the reason instead.
A dry run's requests go to its private simulator's camera server, opened on first use.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from tidybot_sdk.protocol import NodeMsg

from .source import CameraUnavailable, Frame

CAMERA_MSGS = (NodeMsg.CAMERAS, NodeMsg.CAMERA_FRAME)
KINDS = ("color", "depth", "info")


class Source(Protocol):
    """What the node reads frames from (source.CameraServerSource, or ROS topics)."""

    @property
    def cameras(self) -> list[str]: ...
    @property
    def error(self) -> str: ...
    def wait_cameras(self, wait_s: float) -> list[str]: ...
    def world(self, timeout_s: float) -> dict[str, Any] | None: ...
    def frame(self, camera: str, stream: str, max_age_s: float, wait_s: float) -> Frame: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class CameraSettings:
    """The node's camera parameters that bound what code may read."""

    max_age_s: float = 1.0              # camera_max_age_s
    wait_s: float = 2.0                 # how long a request waits for a fresh frame
    budget_bytes: int = 256 * 2 ** 20   # camera_budget_mb
    rate_hz: float = 5.0                # camera_rate_hz (a dry run's private cameras)
    frame_prefix: str = ""


def frame_id(prefix: str, camera: str) -> str:
    """The colour optical frame of ``camera`` (depth is aligned to it: the same frame)."""
    return f"{prefix}{camera}_color_optical_frame"


class CodeCameras:
    """Answers one execution's camera requests from a source (made on first use by
    ``open_source``; closed with this object when ``owned``)."""

    def __init__(self, open_source: Callable[[], Source | None], settings: CameraSettings,
                 owned: bool) -> None:
        self._open, self.limits, self._owned = open_source, settings, owned
        self._prefix = settings.frame_prefix
        self._source: Source | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.bytes_sent = 0

    def _src(self) -> Source | None:
        with self._lock:
            if self._source is None and not self._closed:
                self._source = self._open()
            return self._source

    def answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        source = self._src()
        if source is None:
            return {"error": "this robot has no cameras configured (node parameter cameras)",
                    "unavailable": True}
        if msg.get("msg_type") == NodeMsg.CAMERAS:
            cameras = source.wait_cameras(self.limits.wait_s)
            if not cameras:
                return {"error": f"no camera list from the camera source: {source.error}",
                        "unavailable": True}
            return {"cameras": cameras}
        camera, kind = str(msg.get("camera", "")), str(msg.get("stream", "color"))
        if kind not in KINDS:
            return {"error": f"stream must be one of {', '.join(KINDS)}, got {kind!r}"}
        try:
            frame = source.frame(camera, "color" if kind == "info" else kind,
                                 self.limits.max_age_s, self.limits.wait_s)
            reply = {"camera": camera, "stamp": frame.stamp, "width": frame.width,
                     "height": frame.height, "frame_id": frame_id(self._prefix, camera),
                     "intrinsics": dict(frame.header.get("intrinsics") or {}),
                     "T_base_camera": None if frame.T_base_camera is None
                     else frame.T_base_camera.flatten().tolist()}
            if kind == "info":
                return reply
            if self.bytes_sent + frame.nbytes > self.limits.budget_bytes:   # before any copy
                return {"error": f"this execution's camera budget of "
                                 f"{self.limits.budget_bytes / 2 ** 20:g} MiB is used up "
                                 f"({self.bytes_sent / 2 ** 20:.1f} MiB read; node parameter "
                                 f"camera_budget_mb)"}
            data = frame.image.tobytes()
        except CameraUnavailable as exc:
            return {"error": str(exc), "unavailable": True}
        except (ValueError, OSError) as exc:   # an unknown camera, a frame that does not decode
            return {"error": str(exc)}
        self.bytes_sent += len(data)
        return {**reply, "stream": kind, "encoding": frame.encoding, "data": data}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            source, self._source = self._source, None
        if source is not None and self._owned:
            source.close()
