"""Wire protocols of the three TidyBot backends: one definition for the SDK and the simulator.

All three speak ZMQ with msgpack-encoded dicts keyed by an integer ``msg_type``
(docs/protocols.md is the reference). This module holds the message types, default ports,
encoding and the field checks; it imports neither the SDK objects nor the simulator so both
sides use exactly the same definitions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterable, Mapping, Sequence, TypedDict

import msgpack


class ProtocolError(ValueError):
    """A message that does not follow the protocol (bad encoding, type or field)."""


# ---------------------------------------------------------------------------------- arm
class ArmMsg(IntEnum):
    JOINT_POSITION = 10     # {q: [7] rad}
    JOINT_VELOCITY = 11     # {dq: [7] rad/s}
    CARTESIAN_POSE = 13     # {pose: [16] column-major O_T_EE}
    CARTESIAN_VELOCITY = 14  # {twist: [6] vx vy vz m/s, wx wy wz rad/s, arm base frame}
    SET_CONTROL_MODE = 20   # {control_mode}
    SET_GAINS = 21          # {joint_stiffness?, joint_damping?, cartesian_stiffness?, cartesian_damping?}
    STOP = 22               # decelerate, hold, and go to mode IDLE
    GET_STATE = 24          # reply is the state message


class ControlMode(IntEnum):
    IDLE = 0                 # commands are ignored
    JOINT_POSITION = 1
    JOINT_VELOCITY = 2
    TORQUE = 3
    CARTESIAN_POSE = 4
    CARTESIAN_VELOCITY = 5
    CARTESIAN_IMPEDANCE = 7


class RobotMode(IntEnum):
    """libfranka's franka::RobotMode values, as in the state's ``robot_mode``."""

    OTHER = 0
    IDLE = 1
    MOVE = 2
    GUIDING = 3
    REFLEX = 4
    USER_STOPPED = 5
    AUTOMATIC_ERROR_RECOVERY = 6


ARM_CMD_PORT, ARM_STATE_PORT, ARM_STREAM_PORT = 5555, 5556, 5557
ARM_STREAM_TYPES = frozenset({ArmMsg.JOINT_POSITION, ArmMsg.JOINT_VELOCITY,
                              ArmMsg.CARTESIAN_POSE, ArmMsg.CARTESIAN_VELOCITY})
ARM_HOLD_AFTER_S = 0.1      # stream silence after which the arm holds its pose

# ------------------------------------------------------------------------------ gripper
class GripperMsg(IntEnum):
    ACTIVATE = 10    # {reset_first}
    RESET = 11
    MOVE = 12        # {position, speed, force} 0..255
    OPEN = 13        # {speed, force}
    CLOSE = 14       # {speed, force}
    STOP = 15
    CALIBRATE = 16   # {open_mm, close_mm}
    RESPONSE = 100   # every reply: exactly {msg_type: 100, success, message, data}
                     # (state broadcasts carry no msg_type: exactly the state's 15 keys)


GRIPPER_CMD_PORT, GRIPPER_STATE_PORT = 5570, 5571
GRIPPER_TYPE_2F85 = 1
# The real driver polls a move (and an activation) this long, then replies success anyway
# with wherever the fingers are: "success" says the command ran, not that it arrived.
GRIPPER_MOVE_TIMEOUT_S = 10.0

# ---------------------------------------------------------------------------------- base
class BaseMsg(IntEnum):
    EXECUTE_ACTION = 30        # {base_pose: [x, y, theta]} global frame, m and rad
    SET_TARGET_VELOCITY = 31   # {velocity: [vx, vy, wz]} m/s and rad/s, {frame: "global"|"local"}
    STOP = 32                  # decelerate and hold the current pose
    RESET = 33                 # restart the controller; odometry origin becomes the current pose
    GET_STATE = 34             # reply is the state message


BASE_CMD_PORT, BASE_STATE_PORT = 5590, 5591
BASE_WATCHDOG_S = 0.25
BASE_MAX_VEL = (0.5, 0.5, 1.57)
BASE_MAX_ACCEL = (0.25, 0.25, 0.79)

# ----------------------------------------------------------------------------- endpoints
Endpoints = dict[str, dict[str, str]]      # backend -> socket role -> ZMQ address
SOCKETS = {"arm": ("cmd", "state", "stream"), "gripper": ("cmd", "state"),
           "base": ("cmd", "state")}
DEFAULT_PORTS = {"arm": (ARM_CMD_PORT, ARM_STATE_PORT, ARM_STREAM_PORT),
                 "gripper": (GRIPPER_CMD_PORT, GRIPPER_STATE_PORT),
                 "base": (BASE_CMD_PORT, BASE_STATE_PORT)}


def tcp_endpoints(host: str = "127.0.0.1",
                  ports: Mapping[str, Sequence[int]] = DEFAULT_PORTS) -> Endpoints:
    """Every backend socket on ``host``, ports in SOCKETS order."""
    return {backend: {role: f"tcp://{host}:{port}" for role, port in zip(roles, ports[backend])}
            for backend, roles in SOCKETS.items()}


def ipc_endpoints(directory: str) -> Endpoints:
    """Every backend socket as a unix socket in ``directory`` (a dry run's private robot)."""
    return {backend: {role: f"ipc://{directory}/{backend}-{role}" for role in roles}
            for backend, roles in SOCKETS.items()}


def node_endpoint(directory: str) -> str:
    """Where code asks the node itself (rewind, in the guard's directory); requests are
    ``{"msg_type": NodeMsg...}`` and answered like the backends' (``error`` when refused)."""
    return f"ipc://{directory}/node-cmd"


CAMERA_SOCKET = "cameras.sock"   # a dry run's private camera server, in its ipc directory


class GripperSeed(TypedDict, total=False):
    """Where a dry run's private gripper starts (field names as in the gripper's state)."""

    position: int
    is_activated: bool
    is_calibrated: bool
    open_mm: float
    close_mm: float
    object_detected: bool    # an object is held: it stays between the fingers


class NodeMsg(IntEnum):
    REWIND = 60               # {target, amount, parts: [str], dry_run} -> RewindResult fields
    REWIND_STATUS = 61        # -> {trajectory_length, is_rewinding}
    TRAJECTORY_INFO = 62      # -> {length, duration_s, executions, parts}
    CLEAR_TRAJECTORY = 63     # -> {success, cleared}
    CAMERAS = 70              # -> {cameras: [str]}
    CAMERA_FRAME = 71         # {camera, stream: color|depth|info} -> {width, height, encoding,
                              #  data, stamp, frame_id, intrinsics, T_base_camera: 16 | None}
    SKILL = 80                # {name, version: 0 latest as of the goal's start} -> {name,
                              #  version, code} | {error}; the node records what was imported


# ------------------------------------------------------------------------------ encoding
def encode(msg: Mapping[str, Any]) -> bytes:
    """msgpack-encode a message dict (binary type kept distinct from str)."""
    return msgpack.packb(msg, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    """Decode one message; raise ProtocolError unless it is a msgpack map."""
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"not msgpack: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"expected a map, got {type(msg).__name__}")
    return msg


# ------------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class Field:
    """A required (or optional) field: a number, or a list of ``length`` numbers."""

    length: int | None = None   # None: a scalar
    kind: type = float          # float, int, bool or str
    required: bool = True
    choices: tuple = ()

    def parse(self, name: str, value: Any) -> Any:
        if self.length is None:
            return _scalar(name, value, self.kind, self.choices)
        if not isinstance(value, (list, tuple)) or len(value) != self.length:
            raise ProtocolError(f"{name} must be a list of {self.length} numbers")
        return [_scalar(f"{name}[{i}]", v, float) for i, v in enumerate(value)]


def _scalar(name: str, value: Any, kind: type, choices: tuple = ()) -> Any:
    if kind is str:
        if not isinstance(value, str) or (choices and value not in choices):
            raise ProtocolError(f"{name} must be one of {', '.join(choices)}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ProtocolError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{name} must be a number")
    if not math.isfinite(value):
        raise ProtocolError(f"{name} must be finite")
    if kind is int:
        if value != int(value):
            raise ProtocolError(f"{name} must be an integer")
        return int(value)
    return float(value)


_GAINS = {"joint_stiffness": Field(7, required=False), "joint_damping": Field(7, required=False),
          "cartesian_stiffness": Field(6, required=False),
          "cartesian_damping": Field(6, required=False)}
_SPEED_FORCE = {"speed": Field(kind=int, required=False), "force": Field(kind=int, required=False)}

# Message types of different backends share numbers, so each backend has its own table.
SCHEMAS: dict[type[IntEnum], dict[int, dict[str, Field]]] = {
    ArmMsg: {
        ArmMsg.JOINT_POSITION: {"q": Field(7)},
        ArmMsg.JOINT_VELOCITY: {"dq": Field(7)},
        ArmMsg.CARTESIAN_POSE: {"pose": Field(16)},
        ArmMsg.CARTESIAN_VELOCITY: {"twist": Field(6)},
        ArmMsg.SET_CONTROL_MODE: {"control_mode": Field(kind=int)},
        ArmMsg.SET_GAINS: _GAINS,
        ArmMsg.STOP: {},
        ArmMsg.GET_STATE: {},
    },
    GripperMsg: {
        GripperMsg.ACTIVATE: {"reset_first": Field(kind=bool, required=False)},
        GripperMsg.RESET: {},
        GripperMsg.MOVE: {"position": Field(kind=int), **_SPEED_FORCE},
        GripperMsg.OPEN: _SPEED_FORCE,
        GripperMsg.CLOSE: _SPEED_FORCE,
        GripperMsg.STOP: {},
        GripperMsg.CALIBRATE: {"open_mm": Field(required=False), "close_mm": Field(required=False)},
    },
    BaseMsg: {
        BaseMsg.EXECUTE_ACTION: {"base_pose": Field(3)},
        BaseMsg.SET_TARGET_VELOCITY: {"velocity": Field(3),
                                      "frame": Field(kind=str, required=False,
                                                     choices=("global", "local"))},
        BaseMsg.STOP: {},
        BaseMsg.RESET: {},
        BaseMsg.GET_STATE: {},
    },
}

# The arm's cartesian pose command also arrives as O_T_EE / o_t_ee from some clients.
_ALIASES = {ArmMsg.CARTESIAN_POSE: {"O_T_EE": "pose", "o_t_ee": "pose"}}
# The real gripper server builds each command from the message's keys, so it refuses any
# key its command does not have (msg_type and timestamp aside); the arm and base take extras.
_STRICT = {GripperMsg: frozenset({"msg_type", "timestamp"})}


def parse_command(msg: Mapping[str, Any], types: type[IntEnum]) -> tuple[IntEnum, dict[str, Any]]:
    """Check a decoded command against its schema.

    Returns (message type, the checked fields with numbers as float/int); raises
    ProtocolError naming the bad field. Unknown extra fields are ignored (``timestamp``...),
    except by the gripper, which refuses them as its real server does.
    """
    raw_type = msg.get("msg_type")
    try:
        msg_type = types(raw_type)
    except ValueError:
        raise ProtocolError(f"unknown msg_type {raw_type!r}") from None
    schema = SCHEMAS[types].get(msg_type)
    if schema is None:
        raise ProtocolError(f"msg_type {raw_type} is not a command")
    aliases = _ALIASES.get(msg_type, {})
    fields = {aliases.get(k, k): v for k, v in msg.items()}
    if types in _STRICT:
        for name in fields.keys() - schema.keys() - _STRICT[types]:
            # the real server's own words (its command dataclass's TypeError)
            raise ProtocolError(f"{msg_type.name.title()}Cmd.__init__() got an unexpected "
                                f"keyword argument {name!r}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        if name in fields:
            out[name] = spec.parse(name, fields[name])
        elif spec.required:
            raise ProtocolError(f"{msg_type.name} needs field {name!r}")
    return msg_type, out


def check_byte(name: str, value: int) -> int:
    """Robotiq register values are 0..255."""
    if not 0 <= value <= 255:
        raise ProtocolError(f"{name} must be 0..255, got {value}")
    return value


# The robot's parts, as leases name them (DESIGN §12.3).
RESOURCES = ("arm", "gripper", "base")


def resource_set(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """The resources ``names`` asks for, in ``RESOURCES`` order; none: all three. A string
    is a comma-separated list (a command line's ``--resources arm,gripper``). Raises
    ValueError naming the unknown ones (a typo must not become a lease on something else)."""
    if isinstance(names, str):
        names = [name for name in names.split(",") if name.strip()]
    wanted = {name.strip() for name in names or ()}
    if unknown := sorted(wanted - set(RESOURCES)):
        raise ValueError(f"unknown resource{'s' * (len(unknown) > 1)} "
                         f"{', '.join(map(repr, unknown))}: a lease holds any of "
                         f"{', '.join(RESOURCES)} (none named: all three)")
    return tuple(r for r in RESOURCES if r in wanted) or RESOURCES
