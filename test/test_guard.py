"""The safety guard's envelope on its own (pure: no sockets), and the guard on a real
simulator with the SDK pointed at it."""
from __future__ import annotations

import numpy as np
import pytest

from support import sdk_config_for, wait_until
from tidybot_exec.guard import Envelope, Guard
from tidybot_sdk import Robot, kinematics as kin
from tidybot_sdk.errors import SafetyError
from tidybot_sdk.limits import SafetyLimits
from tidybot_sdk.protocol import ArmMsg, BaseMsg, ControlMode, GripperMsg

HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def envelope():
    clock = Clock()
    arm = {"q": HOME.tolist(), "O_T_EE": kin.fk(HOME).T.reshape(-1).tolist()}
    base = {"base_pose": [0.0, 0.0, 0.0]}
    env = Envelope(SafetyLimits(), lambda: arm, lambda: base, clock)
    return env, clock, arm, base


def joints(q) -> dict:
    return {"msg_type": int(ArmMsg.JOINT_POSITION), "q": list(map(float, q))}


def test_joint_targets_within_limits_box_and_speed(envelope):
    env, clock, _, _ = envelope
    assert "joint 2 target 2.0000 rad is outside its limit" in env.check("arm", joints(
        [0.0, 2.0, 0.0, -2.356, 0.0, 1.571, 0.785]))
    low = kin.ik(np.array([[1, 0, 0, 0.5], [0, -1, 0, 0.0], [0, 0, -1, 0.0], [0, 0, 0, 1.0]]), HOME)
    assert "end-effector target z=" in env.check("arm", joints(low))
    q = HOME.copy()
    for _ in range(50):                      # 0.018 rad every 20 ms: 0.9 rad/s, allowed
        clock.now += 0.02
        q[0] += 0.018
        assert env.check("arm", joints(q)) is None
    clock.now += 0.07                        # a tick 50 ms late with the step it missed
    q[0] += 0.063
    assert env.check("arm", joints(q)) is None
    clock.now += 0.02
    q[0] += 0.1                              # 5 rad/s: more than credit and burst allow
    assert "the joint speed cap 1 rad/s allows now" in env.check("arm", joints(q))
    clock.now += 0.3                         # a new stream starts from the measured state
    assert "joint speed cap" in env.check("arm", joints(q))     # still 0.9+ rad from HOME
    assert env.check("arm", joints(HOME + [0.02, 0, 0, 0, 0, 0, 0])) is None


def test_velocities_modes_base_and_gripper(envelope):
    env, clock, _, base = envelope
    dq = {"msg_type": int(ArmMsg.JOINT_VELOCITY), "dq": [1.5, 0, 0, 0, 0, 0, 0]}
    assert "above the joint speed cap" in env.check("arm", dq)
    twist = {"msg_type": int(ArmMsg.CARTESIAN_VELOCITY), "twist": [0.0, 0.0, -0.2, 0, 0, 0]}
    assert env.check("arm", twist) is None
    torque = {"msg_type": int(ArmMsg.SET_CONTROL_MODE), "control_mode": int(ControlMode.TORQUE)}
    assert "torque control" in env.check("arm", torque)
    assert env.check("arm", {"msg_type": int(ArmMsg.STOP)}) is None
    far = {"msg_type": int(BaseMsg.EXECUTE_ACTION), "base_pose": [6.0, 0.0, 0.0]}
    assert "base target x=6.000 m is outside" in env.check("base", far)
    base["base_pose"] = [4.95, 0.0, 0.0]
    drive = {"msg_type": int(BaseMsg.SET_TARGET_VELOCITY), "velocity": [0.4, 0.0, 0.0],
             "frame": "global"}
    assert "outside the base workspace" in env.check("base", drive)
    assert "exceeds the caps" in env.check("base", {**drive, "velocity": [0.0, 0.0, 2.0]})
    assert "gripper force 255 is above the cap 150" in env.check(
        "gripper", {"msg_type": int(GripperMsg.CLOSE)})       # the backend's default: 255
    assert env.check("gripper", {"msg_type": int(GripperMsg.CLOSE), "force": 100}) is None
    assert env.check("arm", {"msg_type": 77}).startswith("invalid arm command")


def test_the_sdk_through_the_guard_moves_and_gets_the_guards_refusal(sim, tmp_path):
    simulator, wire = sim
    upstream = sdk_config_for(simulator.config)
    guard = Guard(upstream, tmp_path / "guard").start()
    unchecked = SafetyLimits(gripper_max_force=255)       # the code's own checks let it pass
    robot = Robot(upstream.with_endpoints(guard.endpoints).__class__(
        limits=unchecked).with_endpoints(guard.endpoints))
    try:
        robot.arm.go_home()
        assert np.allclose(wire.state("arm")["q"], HOME, atol=2e-3)
        with pytest.raises(SafetyError, match="gripper force 200 is above the cap 150"):
            robot.gripper.activate()
            robot.gripper.close(force=200)
        assert guard.refusals == ["gripper: gripper force 200 is above the cap 150 (0..255 "
                                  "scale); pass force <= 150"]
        wait_until(lambda: wire.state("gripper")["is_activated"], 10, "activation")
    finally:
        robot.close()
        guard.close()
