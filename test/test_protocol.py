"""Wire format: golden encodings of every message type, and the field checks."""
from __future__ import annotations

import math

import pytest

from tidybot_sdk.protocol import (ArmMsg, BaseMsg, GripperMsg, ProtocolError, decode, encode,
                                  parse_command)

HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
POSE = [1.0, 0, 0, 0, 0, -1.0, 0, 0, 0, 0, -1.0, 0, 0.3, 0, 0.5, 1.0]

# (message, its bytes on the wire). msgpack maps in insertion order, floats as float64,
# strings as str (use_bin_type). A change here breaks compatibility with real servers.
GOLDEN = [
    (ArmMsg, {"msg_type": 10, "q": HOME},
     "82a86d73675f747970650aa17197cb0000000000000000cbbfe91eb851eb851fcb0000000000000000"
     "cbc002d916872b020ccb0000000000000000cb3ff922d0e5604189cb3fe91eb851eb851f"),
    (ArmMsg, {"msg_type": 11, "dq": [0.0] * 7},
     "82a86d73675f747970650ba2647197" + "cb0000000000000000" * 7),
    (ArmMsg, {"msg_type": 13, "pose": POSE},
     "82a86d73675f747970650da4706f7365dc0010cb3ff000000000000000000000cbbff000000000000000"
     "000000cbbff000000000000000cb3fd333333333333300cb3fe0000000000000cb3ff0000000000000"),
    (ArmMsg, {"msg_type": 14, "twist": [0.1, 0, 0, 0, 0, 0]},
     "82a86d73675f747970650ea5747769737496cb3fb999999999999a0000000000"),
    (ArmMsg, {"msg_type": 20, "control_mode": 7},
     "82a86d73675f7479706514ac636f6e74726f6c5f6d6f646507"),
    (ArmMsg, {"msg_type": 21, "cartesian_stiffness": [375, 375, 375, 25, 25, 25]},
     "82a86d73675f7479706515b363617274657369616e5f73746966666e65737396cd0177cd0177cd0177191919"),
    (ArmMsg, {"msg_type": 22}, "81a86d73675f7479706516"),
    (ArmMsg, {"msg_type": 24}, "81a86d73675f7479706518"),
    (GripperMsg, {"msg_type": 10, "reset_first": True},
     "82a86d73675f747970650aab72657365745f6669727374c3"),
    (GripperMsg, {"msg_type": 11}, "81a86d73675f747970650b"),
    (GripperMsg, {"msg_type": 12, "position": 128, "speed": 255, "force": 100},
     "84a86d73675f747970650ca8706f736974696f6ecc80a57370656564ccffa5666f72636564"),
    (GripperMsg, {"msg_type": 13, "speed": 255, "force": 255},
     "83a86d73675f747970650da57370656564ccffa5666f726365ccff"),
    (GripperMsg, {"msg_type": 14, "speed": 64, "force": 50},
     "83a86d73675f747970650ea5737065656440a5666f72636532"),
    (GripperMsg, {"msg_type": 15}, "81a86d73675f747970650f"),
    (GripperMsg, {"msg_type": 16, "open_mm": 85.0, "close_mm": 0.0},
     "83a86d73675f7479706510a76f70656e5f6d6dcb4055400000000000a8636c6f73655f6d6dcb0000000000000000"),
    (BaseMsg, {"msg_type": 30, "base_pose": [1.0, -0.5, math.pi / 2]},
     "82a86d73675f747970651ea9626173655f706f736593cb3ff0000000000000cbbfe0000000000000"
     "cb3ff921fb54442d18"),
    (BaseMsg, {"msg_type": 31, "velocity": [0.1, 0.0, 0.0], "frame": "local"},
     "83a86d73675f747970651fa876656c6f6369747993cb3fb999999999999acb0000000000000000"
     "cb0000000000000000a56672616d65a56c6f63616c"),
    (BaseMsg, {"msg_type": 32}, "81a86d73675f7479706520"),
    (BaseMsg, {"msg_type": 33}, "81a86d73675f7479706521"),
    (BaseMsg, {"msg_type": 34}, "81a86d73675f7479706522"),
]


@pytest.mark.parametrize("types,msg,wire", GOLDEN,
                         ids=[f"{t.__name__}-{t(m['msg_type']).name}" for t, m, _ in GOLDEN])
def test_golden_encoding(types, msg, wire):
    assert encode(msg).hex() == wire
    assert decode(bytes.fromhex(wire)) == msg
    msg_type, _ = parse_command(decode(bytes.fromhex(wire)), types)
    assert msg_type == msg["msg_type"]


def test_every_command_type_has_a_golden_vector():
    covered = {(t, m["msg_type"]) for t, m, _ in GOLDEN}
    commands = {(t, int(v)) for t in (ArmMsg, GripperMsg, BaseMsg) for v in t
                if v != GripperMsg.RESPONSE}
    assert commands == covered


def test_the_gripper_refuses_unknown_fields_as_its_server_does():
    """The real server builds MoveCmd(**fields): an unknown key is its TypeError; the arm
    and base take extra keys (timestamp...), and so does the gripper for timestamp."""
    with pytest.raises(ProtocolError, match="MoveCmd.__init__.. got an unexpected keyword "
                                            "argument 'foo'"):
        parse_command({"msg_type": 12, "position": 3, "foo": 1}, GripperMsg)
    _, fields = parse_command({"msg_type": 12, "position": 3, "timestamp": 1.0}, GripperMsg)
    assert fields == {"position": 3}
    assert parse_command({"msg_type": 32, "foo": 1}, BaseMsg) == (BaseMsg.STOP, {})


def test_gripper_reply_encoding():
    reply = {"msg_type": 100, "success": True, "message": "done",
             "data": {"position": 255, "object_detected": True}}
    assert encode(reply).hex() == (
        "84a86d73675f7479706564a773756363657373c3a76d657373616765a4646f6e65a46461746182a870"
        "6f736974696f6eccffaf6f626a6563745f6465746563746564c3")


@pytest.mark.parametrize("data,error", [
    (b"\xc1", "not msgpack"),
    (encode([1, 2]), "expected a map"),
    (encode({"q": HOME}), "unknown msg_type None"),
    (encode({"msg_type": 12}), "unknown msg_type 12"),
    (encode({"msg_type": 10}), "JOINT_POSITION needs field 'q'"),
    (encode({"msg_type": 10, "q": HOME[:6]}), "q must be a list of 7 numbers"),
    (encode({"msg_type": 10, "q": HOME[:6] + ["x"]}), "q[6] must be a number"),
    (encode({"msg_type": 10, "q": HOME[:6] + [float("nan")]}), "q[6] must be finite"),
    (encode({"msg_type": 20, "control_mode": 1.5}), "control_mode must be an integer"),
    (encode({"msg_type": 20, "control_mode": True}), "control_mode must be a number"),
])
def test_malformed_arm_commands_are_named(data, error):
    with pytest.raises(ProtocolError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_command(decode(data), ArmMsg)


def test_fields_are_normalised_and_aliases_accepted():
    ints = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0.3, 0, 0.5, 1]
    _, fields = parse_command({"msg_type": 13, "O_T_EE": ints, "timestamp": 1}, ArmMsg)
    assert fields == {"pose": POSE}
    assert all(type(v) is float for v in fields["pose"])
    with pytest.raises(ProtocolError, match="frame must be one of global, local"):
        parse_command({"msg_type": 31, "velocity": [0, 0, 0], "frame": "robot"}, BaseMsg)
