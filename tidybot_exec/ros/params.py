"""The node's parameters: one table that the node declares, validates and documents.

Kept free of rclpy so the table can be checked against ``config/tidybot_exec.yaml`` and the
README by plain tests. Each parameter is read-only at run time: limits and endpoints must
not change under a running execution.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

Value = bool | int | float | str | list[float]
CAMERA_SCHEMES = ("ws://", "ws+unix://")
DRIVER_SCHEME = "ros:"
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")            # a name a topic can carry
ROS_NAMESPACE = re.compile(r"/?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*/?")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, unit-bearing description and allowed range."""

    name: str
    default: Value
    description: str
    minimum: float | None = None
    maximum: float | None = None
    allow_empty: bool = False       # strings only

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is unacceptable, or None when it is fine."""
        if isinstance(self.default, list):
            if (not isinstance(value, (list, tuple)) or len(value) != len(self.default)
                    or not all(isinstance(v, float) for v in value)):
                return f"{self.name} must be a list of {len(self.default)} floats, got {value!r}"
            return None
        if type(value) is not type(self.default):
            return f"{self.name} must be {type(self.default).__name__}, got {value!r}"
        if isinstance(value, str):
            return None if value.strip() or self.allow_empty else f"{self.name} must not be empty"
        if self.minimum is not None and value < self.minimum:
            return f"{self.name} = {value} is below its minimum {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name} = {value} is above its maximum {self.maximum:g}"
        return None


# what may serve each backend (<backend>_served_by): the base may be the real base's bridge
SERVED_BY = {"arm": ("simulator", "hardware"), "gripper": ("simulator", "hardware"),
             "base": ("simulator", "hardware", "bridge")}


def _port(name: str, default: int, what: str) -> ParamSpec:
    return ParamSpec(name, default, f"TCP port of the {what}", 1, 65535)


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("arm_host", "127.0.0.1", "host of the arm backend (franka_server)"),
    _port("arm_cmd_port", 5555, "arm REP command socket"),
    _port("arm_state_port", 5556, "arm PUB state socket"),
    _port("arm_stream_port", 5557, "arm SUB command-stream socket"),
    ParamSpec("gripper_host", "127.0.0.1", "host of the gripper backend (gripper_server)"),
    _port("gripper_cmd_port", 5570, "gripper REP command socket"),
    _port("gripper_state_port", 5571, "gripper PUB state socket"),
    ParamSpec("base_host", "127.0.0.1", "host of the mobile base backend"),
    _port("base_cmd_port", 5590, "base REP command socket"),
    _port("base_state_port", 5591, "base PUB state socket"),
    # what serves each backend: said by the ready line and /diagnostics (set by the launch)
    *(ParamSpec(f"{backend}_served_by", "", f"what serves the {backend} backend "
                f"({' | '.join(kinds)}), as the ready line and /diagnostics say; '': not "
                f"stated (the launch sets it to what it started)", allow_empty=True)
      for backend, kinds in SERVED_BY.items()),
    ParamSpec("request_timeout_s", 2.0, "seconds to wait for a backend's reply", 0.05, 60.0),
    # executions
    ParamSpec("default_timeout_s", 60.0, "wall-clock limit of a goal whose timeout_s is <= 0, s",
              0.1, 86400.0),
    ParamSpec("max_timeout_s", 3600.0, "upper bound of any goal's timeout_s, s", 0.1, 86400.0),
    ParamSpec("max_code_bytes", 262144, "largest accepted code, bytes", 1, 16 * 1024 ** 2),
    ParamSpec("max_output_bytes", 1048576,
              "output kept per stream in the result (head + tail beyond it), bytes", 1024,
              256 * 1024 ** 2),
    ParamSpec("feedback_rate_hz", 20.0, "most feedback messages per second per goal", 0.5, 200.0),
    ParamSpec("feedback_max_bytes", 65536, "most text in one feedback message, bytes", 1024,
              16 * 1024 ** 2),
    ParamSpec("stop_grace_s", 1.0,
              "after SIGINT, seconds the code has to stop before its process tree is killed",
              0.0, 30.0),
    ParamSpec("child_address_space_mb", 4096, "address-space limit of the code process, MiB "
              "(0: none)", 0, 1024 ** 2),
    ParamSpec("child_open_files", 1024, "open-file limit of the code process", 16, 1048576),
    ParamSpec("child_file_size_mb", 256, "largest file the code may write, MiB (0: none)", 0,
              1024 ** 2),
    ParamSpec("child_disk_mb", 256, "the sandbox's writable /tmp (holding the code's working "
              "directory), a tmpfs of this size, MiB", 1, 1024 ** 2),
    ParamSpec("child_max_processes", 64, "most processes (threads count) the code may run at "
              "once", 4, 100000),
    ParamSpec("warm_worker", True, "keep the next execution's sandboxed code process started "
              "(SDK imported) so a goal's code starts in milliseconds; false: every goal starts "
              "a fresh interpreter (about 0.2 s)"),
    ParamSpec("allow_unsandboxed", False, "start even where no sandbox can be made (UNSAFE: the "
              "code can then reach the network, see other processes and write files)"),
    ParamSpec("result_keep_s", 60, "how long a finished goal's result stays available to "
              "get_result after the goal ended, s (whole seconds)", 1, 86400),
    ParamSpec("history_dir", "~/.ros/tidybot_exec", "directory of the execution history "
              "database (history.sqlite3); a node in a namespace keeps its own in "
              "<history_dir>/<namespace>"),
    ParamSpec("history_max_records", 1000, "finished executions kept in the history", 1, 1000000),
    ParamSpec("require_lease", True, "goals and execution/stop need the current lease token"),
    ParamSpec("lease_default_ttl_s", 120.0,
              "a lease lapses this long after its last renew, goal or stop, never while its "
              "code runs (acquire with ttl_s <= 0), s; long enough to type the next goal",
              1.0, 86400.0),
    ParamSpec("max_lease_s", 1800.0, "a lease ends this long after it was granted, whatever, s",
              1.0, 604800.0),
    ParamSpec("reset_on_release", False,
              "when a lease ends, rewind the robot to where it began before the next holder "
              "is granted (off by default: a robot that moves when nobody commanded it "
              "surprises the people near it)"),
    ParamSpec("override_holders", "",
              "comma-separated holder names that may take the lease over with lease/take "
              "(trust-based: ROS does not authenticate callers); empty: nobody",
              allow_empty=True),
    ParamSpec("lease_max_wait_s", 300.0, "longest wait_s an acquire may wait in line, s", 0.0,
              86400.0),
    # safety limits passed to the SDK in the code process (see docs/sdk.md)
    ParamSpec("joint_speed_cap", 1.0, "fastest joint speed of SDK arm moves, rad/s", 0.01, 2.6),
    ParamSpec("cartesian_speed_cap", 0.25, "fastest end-effector speed of SDK moves, m/s", 0.001,
              1.7),
    ParamSpec("cartesian_angular_speed_cap", 1.0,
              "fastest end-effector rotation of SDK moves, rad/s", 0.01, 2.5),
    ParamSpec("ee_box_min", [-0.2, -0.7, 0.02],
              "end-effector workspace box, lower corner x y z in the arm base frame, m"),
    ParamSpec("ee_box_max", [0.9, 0.7, 1.2],
              "end-effector workspace box, upper corner x y z in the arm base frame, m"),
    ParamSpec("base_speed_cap", 0.5, "fastest base translation, m/s", 0.01, 0.5),
    ParamSpec("base_angular_speed_cap", 1.57, "fastest base rotation, rad/s", 0.01, 1.57),
    ParamSpec("base_box_min", [-5.0, -5.0], "base workspace, lower corner x y in odometry, m"),
    ParamSpec("base_box_max", [5.0, 5.0], "base workspace, upper corner x y in odometry, m"),
    ParamSpec("gripper_max_force", 150, "largest gripper force byte SDK code may use (0..255)",
              0, 255),
    ParamSpec("keep_out", "auto", "boxes the arm is kept out of: a YAML file of {name, center, "
              "size, yaw} in odometry (docs/world.md); 'auto': the simulator scene's table when "
              "the node's camera source is the simulator's, none otherwise; '': none (the floor "
              "and the robot's own base and mast are always kept out)", allow_empty=True),
    ParamSpec("keep_out_margin_m", 0.01, "closest the arm's collision geometry may come to a "
              "kept-out body, m", 0.0, 0.2),
    # state topics and diagnostics
    ParamSpec("joint_state_rate_hz", 100.0, "most joint_states messages per second", 1.0, 1000.0),
    ParamSpec("state_rate_hz", 20.0,
              "most arm/ee_pose, arm/wrench, base/odom and gripper/state messages per second",
              1.0, 1000.0),
    ParamSpec("state_stale_after_s", 0.5,
              "a backend whose state is older than this is stale: its topics stop, s", 0.05, 10.0),
    ParamSpec("expected_arm_state_hz", 100.0, "arm state rate below half of which is a warning",
              0.1, 1000.0),
    ParamSpec("expected_gripper_state_hz", 10.0, "gripper state rate, as above", 0.1, 1000.0),
    ParamSpec("expected_base_state_hz", 50.0, "base state rate, as above", 0.1, 1000.0),
    ParamSpec("arm_joint_prefix", "panda_joint", "arm joint names are this prefix plus 1..7"),
    ParamSpec("gripper_joint_name", "finger_joint", "joint_states name of the gripper joint "
              "(0 rad open .. 0.8 rad closed)"),
    ParamSpec("arm_base_frame", "panda_link0", "frame of arm/ee_pose and arm/wrench"),
    ParamSpec("odom_frame", "odom", "frame of base/odom"),
    ParamSpec("base_frame", "base_link", "child frame of base/odom (and of /tf when tf2_msgs is "
              "installed)"),
    ParamSpec("publish_tf", True, "publish odom -> base_link on /tf (needs tf2_msgs)"),
    # cameras (docs/cameras.md)
    ParamSpec("cameras", "ws://127.0.0.1:5580",
              "where camera frames come from: a TidyBot camera server's ws://HOST:PORT (the "
              "simulator serves one on 5580); a ROS camera driver's topics, "
              "ros:NAME=NAMESPACE[,NAME=NAMESPACE...] (realsense2_camera: NAMESPACE/color/"
              "image_raw, NAMESPACE/aligned_depth_to_color/image_raw, NAMESPACE/color/"
              "camera_info); or '' for no cameras", allow_empty=True),
    ParamSpec("camera_rate_hz", 5.0, "frames per second asked of the camera source while a "
              "camera topic has a subscriber or code reads that camera", 0.1, 30.0),
    ParamSpec("camera_max_age_s", 1.0, "code never gets a frame older than this: "
              "SensorUnavailable instead, s", 0.05, 10.0),
    ParamSpec("camera_budget_mb", 256, "camera bytes one execution's code may read, MiB", 1,
              65536),
    ParamSpec("frame_prefix", "auto", "put before every frame id (base/odom, arm/ee_pose, "
              "arm/wrench, /tf): 'auto' is '<namespace>/' for a node in a namespace and nothing "
              "otherwise; '' is nothing", allow_empty=True),
)

BY_NAME: Mapping[str, ParamSpec] = {p.name: p for p in PARAMS}


def robot_history_dir(history_dir: str, namespace: str) -> Path:
    """Where a node in ``namespace`` keeps its history: each robot of a fleet its own."""
    return Path(history_dir).expanduser() / namespace.strip("/")


def driver_topics(spec: str) -> dict[str, str]:
    """``ros:NAME=NAMESPACE,...`` (the ``cameras`` parameter) as {NAME: /NAMESPACE}."""
    out = {}
    for pair in (p.strip() for p in spec[len(DRIVER_SCHEME):].split(",")):
        name, sep, namespace = (part.strip() for part in pair.partition("="))
        if not sep or not CAMERA_NAME.fullmatch(name) or not ROS_NAMESPACE.fullmatch(namespace):
            raise ValueError(f"cameras: {pair!r} is not NAME=NAMESPACE with ROS names (e.g. "
                             f"ros:wrist=/wrist_camera/camera)")
        if name in out:
            raise ValueError(f"cameras: camera {name!r} is named twice")
        out[name] = "/" + namespace.strip("/")
    return out


def frame_prefix(value: str, namespace: str) -> str:
    """The frame id prefix for the ``frame_prefix`` parameter of a node in ``namespace``."""
    if value != "auto":
        return value
    namespace = namespace.strip("/")
    return f"{namespace}/" if namespace else ""


def validate(values: Mapping[str, Any]) -> list[str]:
    """Return every problem with ``values`` (name -> value); empty when all are acceptable."""
    problems = [err for name, value in values.items()
                if name in BY_NAME and (err := BY_NAME[name].check(value))]
    ports = [(n, v) for n, v in values.items() if n.endswith("_port")]
    for low, high in (("ee_box_min", "ee_box_max"), ("base_box_min", "base_box_max")):
        if low in values and high in values and not all(
                a < b for a, b in zip(values[low], values[high])):
            problems.append(f"{low} must be below {high} on every axis")
    cameras = str(values.get("cameras", "")).strip()
    if cameras.startswith(DRIVER_SCHEME):
        try:
            driver_topics(cameras)
        except ValueError as exc:
            problems.append(str(exc))
    elif cameras and not cameras.startswith(CAMERA_SCHEMES):
        problems.append(f"cameras must be '', a camera server's address ws://HOST:PORT or "
                        f"ros:NAME=NAMESPACE,..., got {cameras!r}")
    for backend, kinds in SERVED_BY.items():
        value = values.get(f"{backend}_served_by", "")
        if value and value not in kinds:
            problems.append(f"{backend}_served_by must be {', '.join(kinds)} or '', "
                            f"got {value!r}")
    if values.get("default_timeout_s", 0) > values.get("max_timeout_s", float("inf")):
        problems.append("default_timeout_s must not exceed max_timeout_s")
    seen: dict[tuple[str, int], str] = {}
    for name, port in ports:
        host = values.get(name.split("_")[0] + "_host", "")
        other = seen.setdefault((host, port), name)
        if other != name:
            problems.append(f"{name} and {other} both use {host}:{port}")
    return problems
