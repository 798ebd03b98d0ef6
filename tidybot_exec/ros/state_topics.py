"""State topics and diagnostics: the backends' state streams republished for ROS tools.

Each backend's ZMQ state stream is read once, in its own thread, by the core's live-state
feed (execution/live_state.py), which also feeds the recorder and the cameras' arm track;
every message is converted and published from that thread, throttled to the configured
rate, so publishing never waits on the action server or the services, and they never wait
on it.
Nothing is published for a backend whose stream has stopped: its topics go quiet and
/diagnostics says why.

QoS: RELIABLE, VOLATILE, depth 10 — the ROS default, which robot_state_publisher, rviz,
rqt and rosbag all subscribe with (a reliable publisher also serves best-effort readers).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Quaternion, TransformStamped, WrenchStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from tidybot_interfaces.msg import GripperState

from tidybot_exec.ros.backend_monitor import BackendMonitor, Health, Level
from tidybot_exec.ros.params import frame_prefix
from tidybot_exec.execution.live_state import LiveState

try:  # tf2_msgs is not on every install (not on PyPI); without it no /tf is published
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the install
    TFMessage = None

TF_MISSING = ("publish_tf is true but tf2_msgs is not installed: nothing is published on "
              "/tf (install ros-<distro>-tf2-msgs, or set publish_tf:=false)")
STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
GRIPPER_CLOSED_RAD = 0.8      # Robotiq 2F-85 URDF finger_joint at position 255


class Throttle:
    """Lets at most ``rate_hz`` events through, on a schedule that tolerates jitter."""

    def __init__(self, rate_hz: float) -> None:
        self.period = 1.0 / rate_hz
        self._due = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now < self._due - 0.25 * self.period:
            return False
        self._due = max(self._due + self.period, now - self.period)
        return True


def quaternion(R: np.ndarray) -> Quaternion:
    """Unit quaternion of a rotation matrix (Shepperd's method, numerically safe)."""
    t = np.trace(R)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        return Quaternion(w=0.25 * s, x=(R[2, 1] - R[1, 2]) / s, y=(R[0, 2] - R[2, 0]) / s,
                          z=(R[1, 0] - R[0, 1]) / s)
    i = int(np.argmax(np.diag(R)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = math.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k]) * 2
    q = [0.0, 0.0, 0.0]
    q[i] = 0.25 * s
    q[j] = (R[j, i] + R[i, j]) / s
    q[k] = (R[k, i] + R[i, k]) / s
    return Quaternion(x=q[0], y=q[1], z=q[2], w=(R[k, j] - R[j, k]) / s)


class StateTopics:
    """Owns the state subscribers, the state publishers and /diagnostics."""

    def __init__(self, node: Node, live: LiveState, p: dict[str, Any],
                 extra_status: Callable[[], list[DiagnosticStatus]]) -> None:
        self.node, self.p = node, p
        # a fleet's robots share /tf and /diagnostics: their frames and entries carry the
        # robot's namespace (docs/fleet.md)
        prefix = frame_prefix(p["frame_prefix"], node.get_namespace())
        self._frame = {k: prefix + p[k] for k in ("arm_base_frame", "odom_frame", "base_frame")}
        namespace = node.get_namespace().strip("/")
        self._diagnostics_prefix = f"{namespace}/" if namespace else ""
        self.extra_status = extra_status
        stale = p["state_stale_after_s"]
        self.monitors = {
            "arm": BackendMonitor("arm", p["expected_arm_state_hz"], stale),
            "gripper": BackendMonitor("gripper", p["expected_gripper_state_hz"], stale),
            "base": BackendMonitor("base", p["expected_base_state_hz"], stale)}
        self.joint_names = [f"{p['arm_joint_prefix']}{i}" for i in range(1, 8)]
        self._joint_pub = node.create_publisher(JointState, "joint_states", STATE_QOS)
        self._pose_pub = node.create_publisher(PoseStamped, "arm/ee_pose", STATE_QOS)
        self._wrench_pub = node.create_publisher(WrenchStamped, "arm/wrench", STATE_QOS)
        self._odom_pub = node.create_publisher(Odometry, "base/odom", STATE_QOS)
        self._gripper_pub = node.create_publisher(GripperState, "gripper/state", STATE_QOS)
        self._tf_pub = (node.create_publisher(TFMessage, "/tf", STATE_QOS)
                        if TFMessage is not None and p["publish_tf"] else None)
        # publish_tf asked for but impossible: say so once in the log, always in /diagnostics
        self._tf_missing = p["publish_tf"] and TFMessage is None
        if self._tf_missing:
            node.get_logger().warning(TF_MISSING)
        self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", STATE_QOS)
        self._joint_throttle = Throttle(p["joint_state_rate_hz"])
        self._arm_throttle = Throttle(p["state_rate_hz"])
        self._base_throttle = Throttle(p["state_rate_hz"])
        self._gripper_throttle = Throttle(p["state_rate_hz"])
        self._latest: dict[str, dict[str, Any]] = {}     # backend -> its newest state message
        self._live = live
        live.on("arm", self._guarded("arm", self._on_arm))
        live.on("gripper", self._guarded("gripper", self._on_gripper))
        live.on("base", self._guarded("base", self._on_base))

    def _guarded(self, name: str, *handlers: Callable[[dict[str, Any]], None]
                 ) -> Callable[[dict[str, Any]], None]:
        """Record ``name``'s newest state, then republish it, keeping the subscriber thread
        alive whatever one message does. Once the context is shut down (SIGINT reaches rclpy
        before the node is destroyed) publishing fails by design and is ignored; anything
        else is logged."""
        def guarded(msg: dict[str, Any]) -> None:
            self._latest[name] = msg
            try:
                for handler in handlers:
                    handler(msg)
            except Exception as exc:
                if self.node.context.ok():
                    self.node.get_logger().error(f"state message not republished: {exc!r}",
                                                 throttle_duration_sec=5.0)
        return guarded

    # -------------------------------------------------------------- arrivals
    def _on_arm(self, s: dict[str, Any]) -> None:
        self.monitors["arm"].arrived()
        if self._joint_throttle.ready():
            names, positions = list(self.joint_names), [float(v) for v in s["q"]]
            velocities = [float(v) for v in s["dq"]]
            gripper = self._latest.get("gripper") if self.monitors["gripper"].fresh() else None
            if gripper is not None:
                names.append(self.p["gripper_joint_name"])
                positions.append(GRIPPER_CLOSED_RAD * gripper["position"] / 255.0)
                velocities.append(0.0)
            self._joint_pub.publish(JointState(
                header=self._header(""), name=names, position=positions, velocity=velocities))
        if self._arm_throttle.ready():
            T = np.asarray(s["O_T_EE"], dtype=float).reshape(4, 4).T
            pose = PoseStamped(header=self._header(self._frame["arm_base_frame"]))
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, T[:3, 3])
            pose.pose.orientation = quaternion(T[:3, :3])
            self._pose_pub.publish(pose)
            w = [float(v) for v in s["O_F_ext_hat_K"]]
            wrench = WrenchStamped(header=self._header(self._frame["arm_base_frame"]))
            wrench.wrench.force.x, wrench.wrench.force.y, wrench.wrench.force.z = w[:3]
            wrench.wrench.torque.x, wrench.wrench.torque.y, wrench.wrench.torque.z = w[3:]
            self._wrench_pub.publish(wrench)

    def _on_gripper(self, s: dict[str, Any]) -> None:
        self.monitors["gripper"].arrived()
        if self._gripper_throttle.ready():
            calibrated = bool(s.get("is_calibrated"))
            self._gripper_pub.publish(GripperState(
                header=self._header(""), position=int(s["position"]),
                width_m=float(s["position_mm"]) / 1000.0 if calibrated else math.nan,
                is_calibrated=calibrated, is_activated=bool(s["is_activated"]),
                is_moving=bool(s["is_moving"]), object_detected=bool(s["object_detected"]),
                current_ma=float(s.get("current_ma", 0.0)), fault_code=int(s.get("fault_code", 0)),
                fault_message=str(s.get("fault_message", ""))))

    def _on_base(self, s: dict[str, Any]) -> None:
        self.monitors["base"].arrived()
        if not self._base_throttle.ready():
            return
        x, y, theta = (float(v) for v in s["base_pose"])
        vx, vy, wz = (float(v) for v in s["base_velocity"])
        odom = Odometry(header=self._header(self._frame["odom_frame"]),
                        child_frame_id=self._frame["base_frame"])
        odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
        odom.pose.pose.orientation = Quaternion(z=math.sin(theta / 2), w=math.cos(theta / 2))
        c, sn = math.cos(theta), math.sin(theta)          # twist is in the child (robot) frame
        odom.twist.twist.linear.x, odom.twist.twist.linear.y = c * vx + sn * vy, -sn * vx + c * vy
        odom.twist.twist.angular.z = wz
        self._odom_pub.publish(odom)
        if self._tf_pub is not None:
            tf = TransformStamped(header=odom.header, child_frame_id=self._frame["base_frame"])
            tf.transform.translation.x, tf.transform.translation.y = x, y
            tf.transform.rotation = odom.pose.pose.orientation
            self._tf_pub.publish(TFMessage(transforms=[tf]))

    def _header(self, frame: str) -> Header:
        return Header(stamp=self.node.get_clock().now().to_msg(), frame_id=frame)

    # ----------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        statuses = [self._backend_status(name, m.health()) for name, m in self.monitors.items()]
        if self._tf_missing:
            statuses.append(status("tf", Level.WARN, TF_MISSING))
        statuses += self.extra_status()
        for entry in statuses:
            entry.name = self._diagnostics_prefix + entry.name
        self._diag_pub.publish(DiagnosticArray(header=self._header(""), status=statuses))

    def _backend_status(self, name: str, h: Health) -> DiagnosticStatus:
        return DiagnosticStatus(
            level=bytes([int(h.level)]), name=f"tidybot_exec: {name} backend",
            message=h.message, hardware_id=self._live.address(name),
            values=[KeyValue(key="state age s", value=f"{h.age_s:.3f}"),
                    KeyValue(key="state rate Hz", value=f"{h.rate_hz:.1f}"),
                    KeyValue(key="reconnects", value=str(h.reconnects)),
                    KeyValue(key="messages", value=str(h.messages))])


def status(name: str, level: Level, message: str, **values: Any) -> DiagnosticStatus:
    """A DiagnosticStatus for the node's own parts (executor, lease)."""
    return DiagnosticStatus(level=bytes([int(level)]), name=f"tidybot_exec: {name}",
                            message=message, hardware_id="tidybot_exec",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
