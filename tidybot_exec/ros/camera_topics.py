"""Camera topics: each camera's frames republished for ROS tools (rqt_image_view, rviz).

For each camera NAME, under the node's namespace (DESIGN §11.2):
``cameras/NAME/color/image_raw`` (rgb8), ``.../color/image_raw/compressed`` (jpeg, the
server's own bytes, not re-encoded), ``cameras/NAME/depth/image_raw`` (16UC1 mm, 0 = no
reading, aligned to colour) and ``cameras/NAME/camera_info`` (of the colour image). A
stream is subscribed at the source only while one of its topics has a subscriber (checked
every DEMAND_PERIOD_S), so an idle node makes the camera server render nothing. Frames are
published from the source's thread, stamped with when the frame was taken; frame ids are
``<prefix>NAME_color_optical_frame``, tied to the robot on /tf_static (the mounts of
robot_model.MOUNTS) where tf2_msgs exists.
"""
from __future__ import annotations

from typing import Any, Callable

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from tidybot_exec.cameras import protocol as cp
from tidybot_exec.cameras.for_code import Source, frame_id
from tidybot_exec.cameras.robot_model import MOUNTS
from tidybot_exec.cameras.source import ArmTrack, CameraServerSource, Frame
from tidybot_exec.ros.backend_monitor import Level
from tidybot_exec.ros.driver_cameras import DriverCameras
from tidybot_exec.ros.params import CAMERA_NAME, DRIVER_SCHEME, driver_topics, frame_prefix
from tidybot_exec.ros.state_topics import STATE_QOS, TFMessage, quaternion, status

DEMAND_PERIOD_S = 0.5
STATIC_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        reliability=ReliabilityPolicy.RELIABLE)


def make_source(node: Node, spec: str, rate_hz: float, arm: ArmTrack,
                on_frame: Callable[[Frame], None], log: Callable[[str], None]) -> Source | None:
    """The ``cameras`` parameter's source: a camera server's ws:// address, a driver's
    topics (ros:NAME=NAMESPACE,...) or none (""); params.validate refused anything else."""
    spec = spec.strip()
    if spec.startswith(DRIVER_SCHEME):
        return DriverCameras(node, driver_topics(spec), arm, on_frame, log)
    return CameraServerSource(spec, rate_hz, arm, on_frame, log) if spec else None


class _Publishers:
    def __init__(self, node: Node, name: str) -> None:
        base = f"cameras/{name}"
        self.color = node.create_publisher(Image, f"{base}/color/image_raw", STATE_QOS)
        self.compressed = node.create_publisher(
            CompressedImage, f"{base}/color/image_raw/compressed", STATE_QOS)
        self.depth = node.create_publisher(Image, f"{base}/depth/image_raw", STATE_QOS)
        self.info = node.create_publisher(CameraInfo, f"{base}/camera_info", STATE_QOS)

    def wanted(self) -> list[str]:
        color = any(p.get_subscription_count() for p in (self.color, self.compressed, self.info))
        return ["color"] * color + ["depth"] * bool(self.depth.get_subscription_count())


class CameraTopics:
    """Owns the node's camera source (``source``, shared with the executions' code), the
    camera publishers and the cameras' /diagnostics entries."""

    def __init__(self, node: Node, p: dict[str, Any]) -> None:
        self.node = node
        self.prefix = frame_prefix(p["frame_prefix"], node.get_namespace())
        self._pubs: dict[str, _Publishers] = {}
        self._skipped: set[str] = set()
        logger = node.get_logger()

        def log(line: str) -> None:       # (rclpy wants one severity per call site)
            if line.endswith(": connected"):
                logger.info(line)
            else:
                logger.warning(line)
        self.arm = ArmTrack()        # fed with the arm's states by the node's live-state feed
        self.source = make_source(node, p["cameras"], p["camera_rate_hz"], self.arm,
                                  self._on_frame, log)
        self._max_age_s = p["camera_max_age_s"]
        self._timer = None
        if self.source is None:
            return
        self._timer = node.create_timer(DEMAND_PERIOD_S, self._renew_demand)
        if TFMessage is not None and p["publish_tf"]:
            node.create_publisher(TFMessage, "/tf_static", STATIC_QOS).publish(
                TFMessage(transforms=[mount_tf(self.prefix, name, node.get_clock().now().to_msg())
                                      for name in MOUNTS]))

    def _renew_demand(self) -> None:
        for name in self.source.cameras:
            if not CAMERA_NAME.fullmatch(name):
                if name not in self._skipped:        # a serial number, a name with spaces
                    self._skipped.add(name)
                    self.node.get_logger().warning(
                        f"camera {name!r}: not a ROS name, so it has no topics (code can "
                        f"still read it)")
                continue
            pubs = self._pubs.get(name) or self._pubs.setdefault(name, _Publishers(self.node, name))
            for stream in pubs.wanted():
                self.source.want(name, stream, 3 * DEMAND_PERIOD_S)

    def _on_frame(self, frame: Frame) -> None:
        """Publish ``frame`` on the topics that have subscribers (the source's thread)."""
        pubs = self._pubs.get(frame.camera)
        if pubs is None or not self.node.context.ok():
            return
        seconds = frame.stamp              # when it was taken (ROS: the acquisition time)
        header = Header(stamp=Time(sec=int(seconds), nanosec=int(seconds % 1.0 * 1e9)),
                        frame_id=frame_id(self.prefix, frame.camera))
        try:
            raw = pubs.depth if frame.stream == "depth" else pubs.color
            if raw.get_subscription_count():
                raw.publish(Image(header=header, height=frame.height, width=frame.width,
                                  encoding=frame.encoding, step=frame.step,
                                  data=frame.image.tobytes()))
            if frame.stream == "depth":
                return
            if pubs.compressed.get_subscription_count():
                jpeg = frame.data if frame.header.get("format") == "jpeg" else cp.encode_jpeg(
                    frame.image)
                pubs.compressed.publish(CompressedImage(header=header, format="jpeg", data=jpeg))
            if pubs.info.get_subscription_count() and (frame.header.get("intrinsics") or {}).get("fx"):
                pubs.info.publish(camera_info(header, frame))     # (none without intrinsics)
        except Exception as exc:  # noqa: BLE001 - a bad frame or a shutdown: the next one comes
            if self.node.context.ok():
                self.node.get_logger().warning(f"camera {frame.camera}: frame not published: {exc!r}")

    def diagnostics(self) -> list[DiagnosticStatus]:
        """One entry per camera: ERROR while the source has a problem, else OK (streaming
        or idle), with its rate, the newest frame's age and the source."""
        if self.source is None:
            return []
        cameras = self.source.status()
        if not cameras:
            return [status("cameras", Level.ERROR, self.source.error or "no cameras yet")]
        out = []
        for name, s in cameras.items():
            late = s["wanted"] and s["age_s"] > max(2.0, self._max_age_s)
            level = Level.ERROR if s["error"] else Level.WARN if late else Level.OK
            message = s["error"] or (f"no frame for {s['age_s']:.1f}s" if late else
                                     "streaming" if s["wanted"] else "idle (no subscriber)")
            out.append(status(f"camera {name}", level, message, source=s["source"],
                              rate_hz=f"{s['rate_hz']:.1f}", age_s=f"{s['age_s']:.2f}"))
        return out

    def close(self) -> None:
        if self._timer is not None:       # no demand renewed, no publisher made, after this
            self.node.destroy_timer(self._timer)
        if self.source is not None:
            self.source.close()


def mount_tf(prefix: str, name: str, stamp) -> TransformStamped:
    """Camera ``name``'s optical frame on the link it is mounted on (/tf_static)."""
    mount = MOUNTS[name]
    tf = TransformStamped(header=Header(stamp=stamp, frame_id=prefix + mount.link),
                          child_frame_id=frame_id(prefix, name))
    t = tf.transform.translation
    t.x, t.y, t.z = (float(v) for v in mount.optical[:3, 3])
    tf.transform.rotation = quaternion(mount.optical[:3, :3])
    return tf


def camera_info(header: Header, frame: Frame) -> CameraInfo:
    """The colour image's pinhole model (no distortion unless the server gives one)."""
    k = frame.header.get("intrinsics") or {}
    fx, fy, cx, cy = (float(k.get(n, 0.0)) for n in ("fx", "fy", "cx", "cy"))
    return CameraInfo(header=header, height=frame.height, width=frame.width,
                      distortion_model="plumb_bob",
                      d=[float(v) for v in (k.get("coeffs") or [0.0] * 5)],
                      k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])

