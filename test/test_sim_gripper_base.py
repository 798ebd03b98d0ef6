"""Simulated gripper and base over real sockets."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from support import wait_until
from tidybot_sdk.protocol import BaseMsg, GripperMsg

# ---------------------------------------------------------------------------- gripper


def test_gripper_state_and_replies_have_exactly_the_real_servers_keys(sim):
    """The real client rebuilds state and reply from their keys: an extra key breaks it.
    The server starts activated and closed (it activates the gripper at start-up), and
    nothing is calibrated: millimetres read 0.0 until CALIBRATE."""
    _, wire = sim
    state = wire.state("gripper")
    assert set(state) == {
        "timestamp", "gripper_type", "position", "position_mm", "position_request", "current",
        "current_ma", "is_activated", "is_moving", "object_detected", "is_calibrated",
        "open_mm", "close_mm", "fault_code", "fault_message"}
    assert state["is_activated"] is True and state["position"] == 255
    assert (state["position_mm"], state["open_mm"], state["close_mm"]) == (0.0, 0.0, 0.0)
    assert (state["fault_code"], state["fault_message"]) == (0, "No fault")
    assert wire.req("gripper", GripperMsg.STOP) == {
        "msg_type": 100, "success": True, "message": "Stopped", "data": None}
    assert wire.req("gripper", GripperMsg.OPEN) == {
        "msg_type": 100, "success": True, "message": "Open complete",
        "data": {"position": 0, "object_detected": False}}


def test_gripper_refuses_unknown_fields_and_clamps_bytes(sim):
    simulator, wire = sim
    reply = wire.req("gripper", GripperMsg.MOVE, position=10, foo=1)
    assert reply == {"msg_type": 100, "success": False, "data": None, "message":
                     "MoveCmd.__init__() got an unexpected keyword argument 'foo'"}
    assert simulator.gripper.position == 255                  # nothing moved
    reply = wire.req("gripper", GripperMsg.MOVE, position=300, timestamp=time.time())
    assert reply["success"] is True and reply["data"]["position"] == 255   # 300 -> 255


def test_gripper_refuses_motion_until_activated_and_activation_moves_the_fingers(sim):
    simulator, wire = sim
    assert wire.req("gripper", GripperMsg.RESET)["message"] == "Reset complete"
    reply = wire.req("gripper", GripperMsg.OPEN)
    assert reply == {"msg_type": 100, "success": False, "message": "Gripper not activated",
                     "data": None}
    assert wire.req("gripper", GripperMsg.CALIBRATE)["message"] == "Calibration failed"
    state = wire.state("gripper")
    assert state["fault_code"] == 0 and state["position"] == 255   # fault unchanged
    start = time.monotonic()
    activation = threading.Thread(target=lambda: replies.append(
        wire.req("gripper", GripperMsg.ACTIVATE, reset_first=True)))
    replies: list[dict] = []
    activation.start()
    positions = []
    while activation.is_alive():                 # the fingers, sampled while it activates
        with simulator.gripper.lock:
            positions.append(simulator.gripper.position)
        time.sleep(0.005)
    activation.join()
    took = time.monotonic() - start
    assert replies[0]["success"] is True and replies[0]["message"] == "Activation complete"
    assert 1.8 < took < 6.0          # the 0.5 s reset wait, then 1.5 s of activation
    assert min(positions) == 0       # the fingers opened fully on the way ...
    state = wire.state("gripper")
    assert state["is_activated"] is True and state["position"] == 255   # ... and closed
    # an active gripper activated without reset_first answers at once and does not move
    start = time.monotonic()
    assert wire.req("gripper", GripperMsg.ACTIVATE, reset_first=False)["success"] is True
    assert time.monotonic() - start < 1.0


def test_activation_and_calibration_drop_what_the_fingers_hold(sim_factory):
    simulator, wire = sim_factory(object_width_mm=40.0)
    assert wire.req("gripper", GripperMsg.OPEN)["success"]
    assert wire.req("gripper", GripperMsg.CLOSE)["data"]["object_detected"] is True
    simulator.control({"cmd": "object_width_mm", "server": "gripper", "value": None})
    assert wire.req("gripper", GripperMsg.CALIBRATE, open_mm=85.0, close_mm=0.0)["success"]
    state = wire.state("gripper")
    assert state["object_detected"] is False and state["position"] == 255   # ends closed
    assert state["is_calibrated"] and state["position_mm"] == pytest.approx(0.0)
    simulator.control({"cmd": "object_width_mm", "server": "gripper", "value": 40.0})
    assert wire.req("gripper", GripperMsg.OPEN)["success"]
    assert wire.req("gripper", GripperMsg.CLOSE)["data"]["object_detected"] is True
    simulator.control({"cmd": "object_width_mm", "server": "gripper", "value": None})
    assert wire.req("gripper", GripperMsg.ACTIVATE, reset_first=True)["success"]
    assert wire.state("gripper")["object_detected"] is False


def test_gripper_close_without_object_closes_fully(sim):
    _, wire = sim
    assert wire.req("gripper", GripperMsg.OPEN)["success"] is True
    start = time.monotonic()
    reply = wire.req("gripper", GripperMsg.CLOSE, speed=255, force=100)
    took = time.monotonic() - start
    assert reply["success"] is True and reply["message"] == "Close complete"
    assert reply["data"] == {"position": 255, "object_detected": False}
    assert 0.4 < took < 2.0          # 85 mm at 150 mm/s; the reply waits for the motion
    assert wire.state("gripper")["is_moving"] is False


def test_gripper_detects_an_object_and_speed_sets_the_duration(sim_factory):
    _, wire = sim_factory(object_width_mm=40.0)
    assert wire.req("gripper", GripperMsg.OPEN)["success"] is True
    start = time.monotonic()
    reply = wire.req("gripper", GripperMsg.CLOSE, speed=0, force=50)
    took = time.monotonic() - start
    assert reply["data"]["object_detected"] is True and reply["message"] == "Object detected"
    assert reply["data"]["position"] == round(255 * (1 - 40 / 85))
    assert 1.8 < took < 4.0          # 45 mm at 20 mm/s
    state = wire.state("gripper")
    assert state["object_detected"] is True and state["current"] > 0
    assert wire.req("gripper", GripperMsg.OPEN)["data"] == {"position": 0, "object_detected": False}


def test_gripper_move_and_calibration_to_millimetres(sim):
    _, wire = sim
    assert wire.state("gripper")["is_calibrated"] is False
    assert wire.req("gripper", GripperMsg.CALIBRATE, open_mm=80.0, close_mm=2.0)["success"]
    assert wire.req("gripper", GripperMsg.MOVE, position=128, speed=255, force=10)["success"]
    state = wait_until(lambda: (s := wire.state("gripper"))["is_calibrated"] and s, 2, "state")
    assert state["position"] == 128 and state["open_mm"] == 80.0
    assert state["position_mm"] == pytest.approx(80.0 + (2.0 - 80.0) * 128 / 255, abs=1e-6)


def test_gripper_state_rate_is_about_10_hz(sim):
    _, wire = sim
    wire.state("gripper")
    first = wire.states["gripper"].count
    time.sleep(1.0)
    assert 6 <= wire.states["gripper"].count - first <= 14


# ------------------------------------------------------------------------------- base


def drive(wire, seconds: float, msg_type: BaseMsg, **fields) -> None:
    """Re-send a base command at 10 Hz, as clients must to beat the 250 ms watchdog."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert wire.req("base", msg_type, **fields)["success"] is True
        time.sleep(0.1)


def test_base_reaches_a_pose_target_within_its_limits(sim):
    _, wire = sim
    peak = np.zeros(3)
    end = time.monotonic() + 4.5
    while time.monotonic() < end:
        wire.req("base", BaseMsg.EXECUTE_ACTION, base_pose=[0.4, -0.2, math.pi / 2])
        peak = np.maximum(peak, np.abs(wire.state("base")["base_velocity"]))
        time.sleep(0.05)
    state = wire.state("base")
    assert np.allclose(state["base_pose"], [0.4, -0.2, math.pi / 2], atol=2e-3)
    assert np.all(peak <= [0.5, 0.5, 1.57]) and peak[0] > 0.2


def test_base_velocity_in_the_local_frame_is_rotated(sim_factory):
    _, wire = sim_factory(initial_base_pose=(0.0, 0.0, math.pi / 2))
    drive(wire, 1.5, BaseMsg.SET_TARGET_VELOCITY, velocity=[0.2, 0.0, 0.0], frame="local")
    x, y, _ = wire.state("base")["base_pose"]
    assert abs(x) < 0.01 and y > 0.1      # facing +y, "forward" is +y


def test_base_velocity_is_clipped_to_the_hardware_limit(sim):
    _, wire = sim
    drive(wire, 3.0, BaseMsg.SET_TARGET_VELOCITY, velocity=[2.0, 0.0, 0.0])
    assert wire.state("base")["base_velocity"][0] == pytest.approx(0.5)


def test_base_watchdog_brakes_and_holds_after_250_ms(sim):
    _, wire = sim
    drive(wire, 1.0, BaseMsg.SET_TARGET_VELOCITY, velocity=[0.2, 0.0, 0.0])
    assert wire.state("base")["base_velocity"][0] == pytest.approx(0.2)
    last_command = time.monotonic()
    # from 0.2 m/s at 0.25 m/s^2 the base needs 0.8 s to stop, after the 0.25 s watchdog
    state = wait_until(lambda: (s := wire.state("base"))["base_velocity"][0] == 0.0 and s,
                       3.0, "the base to stop")
    assert time.monotonic() - last_command > 0.25 + 0.6
    assert state["active"] is False and state["motors_enabled"] is False
    time.sleep(0.3)
    assert wire.state("base")["base_pose"] == state["base_pose"]


def test_base_stop_and_reset(sim):
    _, wire = sim
    drive(wire, 0.5, BaseMsg.SET_TARGET_VELOCITY, velocity=[0.0, 0.0, 0.5])
    assert wire.req("base", BaseMsg.STOP)["success"]
    wait_until(lambda: wire.state("base")["base_velocity"][2] == 0.0, 3, "the base to stop")
    assert wire.state("base")["base_pose"][2] > 0.05
    assert wire.req("base", BaseMsg.RESET)["success"]
    assert wire.req("base", BaseMsg.GET_STATE)["base_pose"] == [0.0, 0.0, 0.0]
