"""The SDK's arm and sensors against the simulator over real sockets."""
from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

from support import wait_until
from tidybot_sdk import kinematics as kin
from tidybot_sdk.errors import ArmError, BackendUnavailable, SafetyError
from tidybot_sdk.limits import SafetyLimits
from tidybot_sdk.protocol import ControlMode


def sim_q(wire) -> np.ndarray:
    return np.array(wire.state("arm")["q"])


def sim_pose(wire) -> np.ndarray:
    return kin.matrix_from_column_major(wire.state("arm")["O_T_EE"])


def motion_messages(simulator) -> int:
    r = simulator.arm.received
    return sum(n for k, n in r.items() if k.startswith("stream_") or k == "SET_CONTROL_MODE")


def test_move_joints_reaches_the_target_and_settles(robot):
    _, wire, sdk = robot
    target = kin.HOME_Q + np.array([0.3, 0.1, -0.2, 0.2, 0.1, -0.1, 0.3])
    start = time.monotonic()
    sdk.arm.move_joints(target.tolist(), duration=1.0)
    assert time.monotonic() - start >= 1.0
    assert np.allclose(sim_q(wire), target, atol=0.005)
    assert max(map(abs, wire.state("arm")["dq"])) < 0.02
    sdk.arm.go_home()
    assert np.allclose(sim_q(wire), kin.HOME_Q, atol=0.005)


def test_move_to_pose_checks_position_and_orientation(robot):
    _, wire, sdk = robot
    x, y, z = sdk.sensors.get_ee_position()
    sdk.arm.move_to_pose(x=x + 0.05, y=y - 0.05, z=z + 0.05, yaw=0.5)
    T = sim_pose(wire)
    assert np.allclose(T[:3, 3], [x + 0.05, y - 0.05, z + 0.05], atol=0.005)
    assert kin.matrix_to_rpy(T[:3, :3])[2] == pytest.approx(0.5, abs=0.02)


def test_partial_rpy_keeps_the_current_angles(robot):
    _, wire, sdk = robot
    sdk.arm.move_delta(droll=0.2, dpitch=-0.15)           # leave home's roll=pi, pitch=0
    roll0, pitch0, _ = sdk.sensors.get_ee_rpy()
    position0 = np.array(sdk.sensors.get_ee_position())
    sdk.arm.move_to_pose(yaw=0.3)                          # only yaw given
    roll, pitch, yaw = kin.matrix_to_rpy(sim_pose(wire)[:3, :3])
    assert yaw == pytest.approx(0.3, abs=0.02)
    assert abs(kin.wrap_angle(roll - roll0)) < 0.02 and pitch == pytest.approx(pitch0, abs=0.02)
    assert np.allclose(sim_pose(wire)[:3, 3], position0, atol=0.005)


def test_move_delta_in_base_and_ee_frames(robot):
    _, wire, sdk = robot
    before = sim_pose(wire)
    sdk.arm.move_delta(dx=0.04, frame="base")
    assert np.allclose(sim_pose(wire)[:3, 3], before[:3, 3] + [0.04, 0, 0], atol=0.005)
    before = sim_pose(wire)
    sdk.arm.move_delta(dz=0.05, frame="ee")   # at home the gripper points down: ee z = -base z
    moved = sim_pose(wire)[:3, 3] - before[:3, 3]
    assert np.allclose(moved, before[:3, :3] @ [0, 0, 0.05], atol=0.005)
    assert moved[2] < -0.04
    with pytest.raises(ArmError, match="frame must be 'base' or 'ee'"):
        sdk.arm.move_delta(dx=0.01, frame="world")


@pytest.mark.parametrize("call,match", [
    (lambda a: a.move_joints([0, 0, 0, 0, 0, 0, 0]), "joint 4 target 0.0000 rad is outside"),
    (lambda a: a.move_joints(list(kin.HOME_Q + [1.0, 0, 0, 0, 0, 0, 0]), duration=0.5),
     "above the joint speed cap"),
    (lambda a: a.move_to_pose(z=0.0), "z=0.0000 m is outside the workspace box"),
    (lambda a: a.move_to_pose(x=1.5), "outside the workspace box"),
    (lambda a: a.move_delta(dx=0.2, duration=0.3), "above the caps"),
])
def test_safety_violations_raise_before_any_command(robot, call, match):
    simulator, wire, sdk = robot
    q0 = sim_q(wire)
    before = motion_messages(simulator)
    with pytest.raises(SafetyError, match=match):
        call(sdk.arm)
    time.sleep(0.2)
    assert motion_messages(simulator) == before
    assert np.array_equal(sim_q(wire), q0)


def test_an_arm_resting_just_under_the_floor_can_go_home_but_not_deeper(sim_factory):
    """The arm can come to rest a hair outside the box (pressed into the floor); every
    motion back in is allowed, none farther out, and a joint path is judged the same way."""
    from support import sdk_config_for
    from tidybot_sdk import Robot

    simulator, wire = sim_factory()
    q0 = sim_q(wire)
    home_z = float(sim_pose(wire)[2, 3])
    box = list(SafetyLimits().ee_box)
    box[2] = (home_z + 0.001, box[2][1])        # the floor 1 mm above where the hand is
    sdk = Robot(sdk_config_for(simulator.config, ee_box=tuple(box)))
    try:
        with pytest.raises(SafetyError, match="farther out than the end effector is now"):
            sdk.arm.move_delta(dz=-0.01)
        assert np.array_equal(sim_q(wire), q0)
        sdk.arm.move_delta(dz=0.02)
        assert float(sim_pose(wire)[2, 3]) > home_z + 0.015
        with pytest.raises(SafetyError, match="outside the workspace box z"):
            sdk.arm.go_home()                   # now inside: home is out again
    finally:
        sdk.close()


def test_bad_arguments_are_arm_errors(robot):
    _, _, sdk = robot
    with pytest.raises(ArmError, match="q must be 7 finite numbers"):
        sdk.arm.move_joints([0.0] * 6)
    with pytest.raises(ArmError, match="finite"):
        sdk.arm.move_joints([math.nan] * 7)
    with pytest.raises(ArmError, match="duration must be a positive"):
        sdk.arm.go_home(duration=0)


def test_stop_and_get_state(robot):
    simulator, wire, sdk = robot
    state = sdk.arm.get_state()
    assert set(state) >= {"q", "dq", "ee_pose", "ee_wrench", "control_mode"}
    assert np.allclose(state["ee_pose"], kin.column_major(kin.fk(state["q"])), atol=1e-6)
    sdk.arm.stop()
    assert simulator.arm.received["STOP"] == 1
    assert wire.state("arm")["control_mode"] == ControlMode.IDLE


def test_sensors_match_the_simulator(robot):
    simulator, wire, sdk = robot
    simulator.control({"cmd": "inject_wrench", "server": "arm", "value": [1, 2, 3, 0, 0, 0.5]})
    time.sleep(0.05)
    s = sdk.sensors
    assert np.allclose(s.get_arm_joints(), kin.HOME_Q)
    assert s.get_arm_velocities() == [0.0] * 7
    assert np.allclose(s.get_ee_matrix(), kin.fk(kin.HOME_Q))
    assert s.get_ee_pose() == kin.column_major(s.get_ee_matrix())
    assert np.allclose(s.get_ee_xyzrpy()[:3], s.get_ee_position())
    assert s.get_ee_wrench() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.5]
    assert s.get_base_pose() == (0.0, 0.0, 0.0)
    assert set(s.get_all_state()) == {"arm", "base", "gripper"}


def test_stale_or_dead_backends_raise_instead_of_zeros(robot):
    simulator, wire, sdk = robot
    sdk.sensors.get_arm_joints()
    simulator.control({"cmd": "freeze_state", "server": "arm", "value": True})
    time.sleep(0.4)
    with pytest.raises(BackendUnavailable, match="arm state is stale"):
        sdk.sensors.get_arm_joints()
    with pytest.raises(BackendUnavailable):
        sdk.arm.move_joints(kin.HOME_Q.tolist())
    simulator.control({"cmd": "kill", "server": "base"})
    with pytest.raises(BackendUnavailable):
        sdk.sensors.get_base_pose()
    with pytest.raises(BackendUnavailable, match="did not answer"):
        sdk.base.stop()
    simulator.control({"cmd": "freeze_state", "server": "arm", "value": False})
    simulator.control({"cmd": "restart", "server": "base"})
    time.sleep(0.3)
    assert sdk.sensors.get_base_pose() == (0.0, 0.0, 0.0)
    sdk.base.stop()                       # the command socket recovered too


def test_a_reflex_during_a_move_is_an_arm_error(robot):
    """Limits configured wider than the hardware: the backend's reflex still stops the move."""
    simulator, wire, sdk = robot
    wide = list(kin.Q_MAX)
    wide[6] = 3.5
    sdk.arm._limits = SafetyLimits(joint_max=tuple(wide))
    with pytest.raises(ArmError, match="reflex.*joint position limit.*franka_server.recover"):
        sdk.arm.move_joints(list(kin.HOME_Q[:6]) + [3.4])
    assert wire.states["arm"].last()["q"][6] <= kin.Q_MAX[6]
    # the state stream has stopped: every later read says why, and what to do
    def stale_error() -> Exception | None:
        try:
            sdk.sensors.get_arm_joints()
        except BackendUnavailable as exc:
            return exc
        return None

    error = wait_until(stale_error, 3, "a stale-state error")
    assert re.search("reflex.*state stream stopped.*franka_server.recover.*restart", str(error))
    assert simulator.control({"cmd": "restart", "server": "arm"})["ok"]
    wait_until(lambda: stale_error() is None, 5, "the restarted arm's state")
    sdk.arm.move_joints(list(kin.HOME_Q))
