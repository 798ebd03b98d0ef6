"""The SDK's base and gripper against the simulator over real sockets."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from support import sdk_config_for
from tidybot_sdk import Robot
from tidybot_sdk.errors import BaseError, GripperError, SafetyError, SensorError
from tidybot_sdk.protocol import GripperMsg


def base_pose(wire) -> np.ndarray:
    return np.array(wire.state("base")["base_pose"])


def test_base_moves_to_a_pose_and_by_deltas(robot):
    _, wire, sdk = robot
    sdk.base.move_to_pose(0.3, -0.2, math.pi / 4)
    assert np.allclose(base_pose(wire), [0.3, -0.2, math.pi / 4], atol=0.02)
    sdk.base.forward(0.2)            # along the heading of pi/4
    expected = [0.3 + 0.2 * math.cos(math.pi / 4), -0.2 + 0.2 * math.sin(math.pi / 4), math.pi / 4]
    assert np.allclose(base_pose(wire), expected, atol=0.02)
    sdk.base.rotate_degrees(-45)
    assert base_pose(wire)[2] == pytest.approx(0.0, abs=0.03)
    sdk.base.strafe(0.1)
    assert base_pose(wire)[1] == pytest.approx(expected[1] + 0.1, abs=0.02)
    sdk.base.move_delta(dx=-0.1, frame="global")
    assert base_pose(wire)[0] == pytest.approx(expected[0] - 0.1, abs=0.02)
    assert sdk.base.get_state()["base_pose"] == pytest.approx(list(base_pose(wire)), abs=1e-3)


def test_base_paths_stay_within_the_bases_acceleration_limits(robot):
    """The real base accelerates at most 0.25 m/s² (0.79 rad/s²): a path planned faster leaves
    it lagging its target, then settling. Judged by the simulated base (same limits)."""
    simulator, _, sdk = robot
    lags: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            with simulator.base.lock:
                if simulator.base.active and not simulator.base.velocity_mode:
                    lags.append(float(np.hypot(*(simulator.base.target_pose[:2]
                                                 - simulator.base.pose[:2]))))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        start = time.monotonic()
        sdk.base.forward(0.2)
        took = time.monotonic() - start
    finally:
        done.set()
        watcher.join()
    assert took > 2.3                 # a quintic over 0.2 m within 0.8 × 0.25 m/s²: 2.4 s
    # A base that must be able to stop at each 10 Hz target trails it by about v²/2a: 5 cm
    # at this path's 0.16 m/s peak (measured 4.6). The 1 s path (1.15 m/s² peak) left it 13 cm
    # behind.
    assert len(lags) > 50 and max(lags) < 0.10, max(lags)


def test_base_local_pose_target(robot):
    _, wire, sdk = robot
    sdk.base.rotate(math.pi / 2)
    sdk.base.move_to_pose(0.2, 0.0, 0.0, frame="local")     # 0.2 m ahead = +y in odometry
    x, y, theta = base_pose(wire)          # within the SDK's arrival tolerances (0.02 m, 0.03 rad)
    assert np.allclose([x, y], [0.0, 0.2], atol=0.02) and abs(theta - math.pi / 2) < 0.03


def test_base_drive_resends_past_the_watchdog_then_stops(robot):
    _, wire, sdk = robot
    sdk.base.drive(0.2, duration=1.5)          # 1.5 s is six watchdog periods
    state = wire.state("base")
    assert state["base_pose"][0] > 0.15
    assert state["active"] is False            # stopped at the end


def test_base_safety_and_argument_errors(robot):
    simulator, wire, sdk = robot
    with pytest.raises(SafetyError, match="outside the base workspace"):
        sdk.base.move_to_pose(6.0, 0.0, 0.0)
    with pytest.raises(SafetyError, match="exceeds the caps"):
        sdk.base.drive(0.6, duration=1)
    with pytest.raises(BaseError, match="frame must be 'global' or 'local'"):
        sdk.base.move_delta(dx=1, frame="map")
    with pytest.raises(BaseError, match="finite"):
        sdk.base.move_to_pose(math.inf, 0, 0)
    assert simulator.base.received["EXECUTE_ACTION"] == 0
    assert simulator.base.received["SET_TARGET_VELOCITY"] == 0


def test_gripper_grasp_returns_true_or_false(sim_factory):
    simulator, wire = sim_factory(object_width_mm=30.0)
    sdk = Robot(sdk_config_for(simulator.config))
    try:
        sdk.gripper.activate()          # active since the server started: nothing is sent
        assert simulator.gripper.received["ACTIVATE"] == 0
        assert wire.req("gripper", GripperMsg.RESET)["success"]
        with pytest.raises(GripperError, match="Gripper not activated"):
            sdk.gripper.close()
        sdk.gripper.activate()          # not active: reset and activate (the fingers move)
        assert simulator.gripper.received["ACTIVATE"] == 1
        sdk.gripper.open()
        assert sdk.gripper.grasp() is True
        assert sdk.sensors.is_gripper_holding() is True
        sdk.gripper.open()
        simulator.control({"cmd": "object_width_mm", "server": "gripper", "value": None})
        assert sdk.gripper.grasp() is False          # nothing there: no exception
        assert sdk.sensors.get_gripper_position() == 255
    finally:
        sdk.close()


def test_a_move_the_server_calls_a_success_but_that_did_not_arrive_is_an_error(robot):
    """The real server gives up after 10 s and replies success; the state says otherwise."""
    simulator, _, sdk = robot
    simulator.control({"cmd": "gripper_jam", "server": "gripper", "value": True})
    start = time.monotonic()
    with pytest.raises(GripperError, match=r"did not reach position 0 within 10 s: it is at 255 "
                                           r"and still moving.*'Open complete'"):
        sdk.gripper.open()
    assert 9.5 < time.monotonic() - start < 14.0


def test_gripper_width_uses_the_calibration(robot):
    _, wire, sdk = robot
    sdk.gripper.activate()
    with pytest.raises(GripperError, match="needs a calibrated gripper"):
        sdk.gripper.move(width=0.04)
    with pytest.raises(SensorError, match="calibrate"):
        sdk.sensors.get_gripper_width()
    sdk.gripper.calibrate(open_mm=80.0, close_mm=5.0)
    sdk.gripper.move(width=0.05)
    assert sdk.sensors.get_gripper_position() == round(255 * (80 - 50) / 75)
    assert sdk.sensors.get_gripper_width() == pytest.approx(0.05, abs=0.0005)
    with pytest.raises(GripperError, match="outside the gripper's range"):
        sdk.gripper.move(width=0.082)
    state = sdk.gripper.get_state()
    assert state["is_calibrated"] and state["open_mm"] == 80.0


def test_gripper_limits_and_arguments(robot):
    simulator, _, sdk = robot
    sdk.gripper.activate()
    with pytest.raises(SafetyError, match="above the cap 150"):
        sdk.gripper.close(force=255)
    with pytest.raises(GripperError, match="exactly one of"):
        sdk.gripper.move()
    with pytest.raises(GripperError, match="position must be an integer 0..255"):
        sdk.gripper.move(position=256)
    with pytest.raises(GripperError, match="speed must be an integer"):
        sdk.gripper.open(speed=1.5)
    assert simulator.gripper.received["CLOSE"] == 0 and simulator.gripper.received["MOVE"] == 0
    sdk.gripper.move(position=100, force=10)
    sdk.gripper.stop()
    assert simulator.gripper.received["STOP"] == 1
