"""Cameras from a ROS camera driver's topics (realsense2_camera and the like), as a camera
source like the camera server's (cameras/source.py): ``cameras:=ros:NAME=NAMESPACE,...``.

For camera NAME the node reads NAMESPACE/color/image_raw (rgb8, bgr8, rgba8, bgra8 or
mono8), NAMESPACE/aligned_depth_to_color/image_raw (16UC1 mm or 32FC1 m) and
NAMESPACE/color/camera_info — realsense2_camera's names with ``align_depth.enable:=true``.
Like the camera server's streams, a topic is subscribed only while its stream is wanted
(checked every DEMAND_PERIOD_S); the subscriptions are best effort, which matches every
publisher. Frames keep the driver's pixels; ``T_base_camera`` comes from the mount of a
camera named like one of robot_model.MOUNTS (wrist, base), else it is unknown (None).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from tidybot_exec.cameras.source import ArmTrack, Frame, FrameStore

DEMAND_PERIOD_S = 0.5
TOPICS = {"color": "color/image_raw", "depth": "aligned_depth_to_color/image_raw",
          "info": "color/camera_info"}
_CHANNELS = {"rgb8": (3, None), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]),
             "bgra8": (4, [2, 1, 0]), "mono8": (1, [0, 0, 0])}
ENCODINGS = {"color": set(_CHANNELS), "depth": {"16UC1", "mono16", "32FC1"}}


def image_array(msg: Image) -> np.ndarray:
    """A colour Image as (H, W, 3) uint8 RGB, a depth Image as (H, W) uint16 mm."""
    h, w = msg.height, msg.width
    raw = np.frombuffer(bytes(msg.data), np.uint8)
    if msg.encoding in _CHANNELS:
        n, order = _CHANNELS[msg.encoding]
        pixels = raw.reshape(h, msg.step)[:, :w * n].reshape(h, w, n)
        return np.ascontiguousarray(pixels if order is None else pixels[..., order])
    if msg.encoding in ("16UC1", "mono16"):
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        return raw.reshape(h, msg.step)[:, :2 * w].copy().view(dtype).reshape(h, w).astype(np.uint16)
    if msg.encoding == "32FC1":
        dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
        metres = raw.reshape(h, msg.step)[:, :4 * w].copy().view(dtype).reshape(h, w)
        return np.clip(np.nan_to_num(metres * 1000.0, nan=0.0, posinf=0.0), 0, 65535).astype(np.uint16)
    raise ValueError(f"image encoding {msg.encoding!r} is not supported")


# These subscriptions come and go while the node spins. rclpy's default QoS event handler of
# a subscription is a waitable that the MultiThreadedExecutor may still put in a wait set
# after destroy_subscription: InvalidHandle in the spin thread (rclpy#1284, seen in CI: the
# node ended). Without event handlers there is nothing of that kind to race.
NO_EVENT_HANDLERS = SubscriptionEventCallbacks(use_default_callbacks=False)

class DriverCameras(FrameStore):
    """The cameras ``specs`` ({NAME: NAMESPACE}) of a ROS driver, read by ``node``."""

    kind = "ROS topics"

    def __init__(self, node: Node, specs: dict[str, str], arm: ArmTrack | None,
                 on_frame: Callable[[Frame], None], log: Callable[[str], None]) -> None:
        super().__init__(", ".join(f"{n}={ns}" for n, ns in specs.items()), arm, on_frame, log)
        self._node, self._specs = node, specs
        self._error = ""               # nothing to connect to: a frame that does not come is
                                       # seen by its age (diagnostics WARN)
        self._subs: dict[tuple[str, str], object] = {}
        self._info: dict[str, CameraInfo] = {}
        # The timer's callback runs on an executor thread while close may run on another:
        # the subscriptions change only under this lock, and none is made once closed.
        self._subscribing = threading.Lock()
        self._set_cameras(list(specs), {})
        self._timer = node.create_timer(DEMAND_PERIOD_S, self._refresh)

    def _refresh(self) -> None:
        """Subscribe what is wanted, drop what is not (the camera_info with the colour)."""
        with self._subscribing:
            if not self._stop.is_set():
                self._subscribe_wanted()

    def _subscribe_wanted(self) -> None:
        for name, namespace in self._specs.items():
            wanted = self.wanted(name)
            if "color" in wanted:
                wanted.add("info")
            for stream, topic in TOPICS.items():
                key = (name, stream)
                if stream in wanted and key not in self._subs:
                    self._subs[key] = self._node.create_subscription(
                        CameraInfo if stream == "info" else Image, f"{namespace}/{topic}",
                        lambda msg, name=name, stream=stream: self._got(name, stream, msg),
                        qos_profile_sensor_data, event_callbacks=NO_EVENT_HANDLERS)
                elif stream not in wanted and key in self._subs:
                    self._node.destroy_subscription(self._subs.pop(key))

    def _got(self, name: str, stream: str, msg) -> None:
        if self._stop.is_set():        # a message taken before close destroyed its subscription
            return
        if stream == "info":
            self._info[name] = msg
            return
        info = self._info.get(name)
        if stream == "color" and info is None:
            self._set_error(f"{name}: no camera_info yet on {self._specs[name]}/{TOPICS['info']}")
            return
        try:
            if msg.encoding not in ENCODINGS[stream]:
                raise ValueError(f"encoding {msg.encoding!r} is not a {stream} encoding "
                                 f"({', '.join(sorted(ENCODINGS[stream]))})")
            image = image_array(msg)
        except ValueError as exc:
            self._set_error(f"{name} {stream}: {exc}")
            return
        intrinsics = {} if info is None else {
            "fx": info.k[0], "fy": info.k[4], "cx": info.k[2], "cy": info.k[5],
            "width": info.width, "height": info.height, "coeffs": list(info.d)}
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 or time.time()
        header = {"camera_id": name, "stream": stream, "width": msg.width, "height": msg.height,
                  "format": "raw", "intrinsics": intrinsics, "timestamp": stamp}
        self._keep(Frame(name, stream, header, b"", time.monotonic(), self._pose_of(name, stamp),
                         decoded=image))
        if self.error:
            self._set_error("")

    def close(self) -> None:
        """Nothing is subscribed after this returns: a refresh under way is waited for."""
        super().close()                 # sets _stop: a later refresh subscribes nothing
        with self._subscribing:
            self._node.destroy_timer(self._timer)
            for sub in self._subs.values():
                self._node.destroy_subscription(sub)
            self._subs.clear()
