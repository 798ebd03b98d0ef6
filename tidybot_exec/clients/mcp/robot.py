"""The node as tidybot-mcp's tools reach it, over ROS like any client.

A TidybotClient (on the server's own node, spun by a thread of its own) for goals, lease
and services (the estop too); and the robot's state and camera topics, read on demand:
a tool that wants a reading subscribes, takes the first message and unsubscribes, so an
idle server receives nothing (the cameras render only while someone subscribes). Every
method blocks: the async tools call them in worker threads.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, JointState
from tidybot_interfaces.msg import GripperState

from tidybot_exec.clients.client import TidybotClient, TidybotClientError
from tidybot_exec.clients.mcp import models as m
from tidybot_exec.clients.mcp.lease import ServerLease

# The node publishes its state and camera topics RELIABLE, VOLATILE; one message is all a
# reading needs.
READING = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
STATE_WAIT_S = 3.0      # for each state topic's first message (they come at 20..100 Hz)
IMAGE_WAIT_S = 10.0     # the node asks its camera source within 0.5 s, then a frame is rendered
DISCOVERY_S = 5.0       # for a new participant to learn the node's topics
SETTLE_S = 0.5          # ... one by one: a list unchanged this long is complete
LOOKUP_S = 5.0          # for a camera's topic to be discovered before it is called unknown
COMPRESSED = re.compile(r"/cameras/([^/]+)/color/image_raw/compressed")


class Unreachable(Exception):
    """No tidybot_exec node answers in this namespace and ROS domain."""


@dataclass
class Frame:
    jpeg: bytes         # the node's compressed topic is always JPEG (camera_topics.py)
    age_s: float


def age(stamp: Any) -> float:
    return round(time.time() - (stamp.sec + stamp.nanosec * 1e-9), 3)


def roll_pitch_yaw(q: Any) -> tuple[float, float, float]:
    """A quaternion as the SDK's angles: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    roll = math.atan2(2 * (q.w * q.x + q.y * q.z), 1 - 2 * (q.x * q.x + q.y * q.y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (q.w * q.y - q.z * q.x))))
    yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
    return roll, pitch, yaw


class Robot:
    """One tidybot_exec node, as seen from the MCP server."""

    def __init__(self, client: TidybotClient, namespace: str, holder: str,
                 release_after_s: float = 0.0, wait_server_s: float = 10.0,
                 resources: Sequence[str] = ()) -> None:
        self.client, self.node = client, client.node
        self.namespace = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
        self.holder = holder
        self.closing = threading.Event()       # set on exit: nothing new starts, waiters leave
        self.lease = ServerLease(client, holder, self.closing, release_after_s, resources)
        self._wait_server_s = wait_server_s
        self._started = time.monotonic()
        self._met = False
        self._met_lock = threading.Lock()

    def topic(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def ready(self) -> None:
        """Until the node has answered this client once (TidybotClient.wait_for_server);
        raises Unreachable."""
        with self._met_lock:
            if not self._met and not self.client.wait_for_server(self._wait_server_s):
                raise Unreachable(
                    f"no tidybot_exec node answers in namespace {self.namespace or '/'} within "
                    f"{self._wait_server_s:g}s: is it running, in this ROS_DOMAIN_ID?")
            self._met = True

    # ------------------------------------------------------------ topics
    def _first_messages(self, topics: dict[str, tuple[type, str]], timeout_s: float
                        ) -> dict[str, Any]:
        """The first message of each topic that has one within ``timeout_s``."""
        got: dict[str, Any] = {}
        complete = threading.Event()

        def keep(key: str):
            def on_message(msg: Any) -> None:
                got.setdefault(key, msg)
                if len(got) == len(topics):
                    complete.set()
            return on_message
        subscriptions = [self.node.create_subscription(msg_type, name, keep(key), READING)
                         for key, (msg_type, name) in topics.items()]
        try:
            complete.wait(timeout_s)
        finally:
            for subscription in subscriptions:
                self.node.destroy_subscription(subscription)
        return dict(got)

    def state(self) -> m.RobotState:
        topics = {"arm joints": (JointState, self.topic("joint_states")),
                  "end effector": (PoseStamped, self.topic("arm/ee_pose")),
                  "base": (Odometry, self.topic("base/odom")),
                  "gripper": (GripperState, self.topic("gripper/state"))}
        self.ready()
        got = self._first_messages(topics, STATE_WAIT_S)
        joints, pose, odom, grip = (got.get(k) for k in topics)
        execution, lease = self.client.status(timeout_s=2.0)
        return m.RobotState(
            arm_joints=joints and m.JointState(
                positions=dict(zip(joints.name, joints.position)), age_s=age(joints.header.stamp)),
            end_effector=pose and m.EndEffector(
                x=pose.pose.position.x, y=pose.pose.position.y, z=pose.pose.position.z,
                **dict(zip(("roll", "pitch", "yaw"), roll_pitch_yaw(pose.pose.orientation))),
                age_s=age(pose.header.stamp)),
            base=odom and m.BasePose(
                x=odom.pose.pose.position.x, y=odom.pose.pose.position.y,
                theta=2 * math.atan2(odom.pose.pose.orientation.z, odom.pose.pose.orientation.w),
                vx=odom.twist.twist.linear.x, vy=odom.twist.twist.linear.y,
                wz=odom.twist.twist.angular.z, age_s=age(odom.header.stamp)),
            gripper=grip and m.Gripper(
                width_m=None if math.isnan(grip.width_m) else grip.width_m,
                position=grip.position, is_activated=grip.is_activated,
                is_moving=grip.is_moving, object_detected=grip.object_detected,
                fault=grip.fault_message, age_s=age(grip.header.stamp)),
            unavailable=[f"{k}: no message on {topics[k][1]} within {STATE_WAIT_S:g}s (its "
                         f"backend is down or stale)" for k in topics if k not in got],
            execution=execution and m.ExecutionState(
                state=execution.state, execution_id=execution.execution_id,
                holder=execution.holder, label=execution.label,
                elapsed_s=execution.elapsed_s, estopped=execution.estopped),
            lease=lease and m.LeaseState(
                held=lease.held, holder=lease.holder,
                ours=lease.held and lease.holder == self.holder,
                seconds_to_lapse=lease.seconds_to_lapse,
                waiting_holders=list(lease.waiting_holders)))

    def cameras(self) -> list[str]:
        """The cameras the node publishes (their topics appear once it has its camera list).
        A server just started is still discovering the node's topics, one by one: until
        DISCOVERY_S after the start, the list is read again until it stopped growing."""
        names, steady_since = self._camera_topics(), time.monotonic()
        while time.monotonic() < self._started + DISCOVERY_S and (
                not names or time.monotonic() - steady_since < SETTLE_S):
            time.sleep(0.1)
            if (now := self._camera_topics()) != names:
                names, steady_since = now, time.monotonic()
        return names

    def _camera_topics(self) -> list[str]:
        return sorted(found.group(1) for topic, _ in self.node.get_topic_names_and_types()
                      if topic.startswith(self.namespace + "/")
                      and (found := COMPRESSED.fullmatch(topic[len(self.namespace):])))

    def image(self, camera: str) -> Frame:
        """A fresh colour frame of ``camera`` as the node's compressed topic carries it."""
        self.ready()
        deadline = time.monotonic() + LOOKUP_S
        while camera not in (known := self._camera_topics()):
            if time.monotonic() > deadline:
                raise TidybotClientError(f"no camera {camera!r}: the cameras are "
                                         f"{', '.join(known) or 'none'}")
            time.sleep(0.1)
        name = self.topic(f"cameras/{camera}/color/image_raw/compressed")
        msg = self._first_messages({camera: (CompressedImage, name)}, IMAGE_WAIT_S).get(camera)
        if msg is None:
            raise TidybotClientError(f"no frame from camera {camera!r} within {IMAGE_WAIT_S:g}s "
                                     f"(is its camera server running?)")
        return Frame(bytes(msg.data), age(msg.header.stamp))
