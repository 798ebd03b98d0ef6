"""Simulated arm over real sockets: control modes, limits, hold, reflex, kinematics."""
from __future__ import annotations

import time

import numpy as np
import pytest

from support import wait_until
from tidybot_sdk import kinematics as kin
from tidybot_sdk.errors import ArmUnavailable
from tidybot_sdk.protocol import ArmMsg, ControlMode, RobotMode

HOME = kin.HOME_Q


def stream_for(wire, seconds: float, msg: dict) -> None:
    """Send one stream command at 50 Hz for ``seconds`` (like the SDK's motion loop)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        wire.stream.send(msg)
        time.sleep(0.02)


def set_mode(wire, mode: ControlMode) -> None:
    assert wire.req("arm", ArmMsg.SET_CONTROL_MODE, control_mode=int(mode)) == {
        "msg_type": ArmMsg.SET_CONTROL_MODE, "success": True}


def q_of(wire) -> np.ndarray:
    return np.array(wire.state("arm")["q"])


def test_fk_ik_round_trip_over_the_workspace():
    rng = np.random.default_rng(7)
    for _ in range(60):
        q = rng.uniform(kin.Q_MIN + 0.05, kin.Q_MAX - 0.05)
        target = kin.fk(q)
        solution = kin.ik(target, kin.HOME_Q, rng=rng)
        assert solution is not None, f"no IK solution for a reachable pose (q={q})"
        assert np.all(solution >= kin.Q_MIN) and np.all(solution <= kin.Q_MAX)
        reached = kin.fk(solution)
        assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < 1e-4
        assert np.linalg.norm(kin.rotation_error(target[:3, :3], reached[:3, :3])) < 1e-3


def test_fk_home_matches_the_panda_with_hand():
    T = kin.fk(HOME)
    assert np.allclose(T[:3, 3], [0.307, 0.0, 0.487], atol=2e-3)
    assert np.allclose(T[:3, 2], [0, 0, -1], atol=1e-3)   # gripper points down


def test_state_is_published_with_the_documented_keys(sim):
    _, wire = sim
    state = wire.state("arm")
    for key in ("q", "dq", "O_T_EE", "O_F_ext_hat_K", "control_mode", "robot_mode", "timestamp"):
        assert key in state
    assert np.allclose(state["O_T_EE"], kin.column_major(kin.fk(state["q"])))
    assert state["O_F_ext_hat_K"] == [0.0] * 6


def test_idle_mode_ignores_commands(sim):
    simulator, wire = sim
    target = (HOME + 0.3).tolist()
    stream_for(wire, 0.3, {"msg_type": ArmMsg.JOINT_POSITION, "q": target})
    assert wire.req("arm", ArmMsg.JOINT_POSITION, q=target)["success"] is False
    assert np.allclose(q_of(wire), HOME)
    assert simulator.arm.received["ignored"] >= 10


def test_joint_position_mode_reaches_target_within_velocity_limits(sim):
    _, wire = sim
    set_mode(wire, ControlMode.JOINT_POSITION)
    target = HOME + np.array([0.6, 0.2, -0.3, 0.3, 0.4, -0.3, 0.5])
    peak = np.zeros(7)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        wire.stream.send({"msg_type": ArmMsg.JOINT_POSITION, "q": target.tolist()})
        peak = np.maximum(peak, np.abs(wire.state("arm")["dq"]))
    state = wire.state("arm")
    assert np.allclose(state["q"], target, atol=1e-3)
    assert np.all(peak <= kin.DQ_MAX + 1e-9) and np.any(peak > 0.3)


def test_joint_velocity_mode_moves_then_holds_after_stream_silence(sim):
    _, wire = sim
    set_mode(wire, ControlMode.JOINT_VELOCITY)
    dq = [0.3, 0, 0, 0, 0, 0, 0]
    stream_for(wire, 0.6, {"msg_type": ArmMsg.JOINT_VELOCITY, "dq": dq})
    moving = wire.state("arm")
    assert moving["dq"][0] == pytest.approx(0.3, abs=1e-6)
    assert moving["q"][0] > 0.1
    # no command for 100 ms: the arm holds (decelerates to rest and stays)
    time.sleep(0.4)
    held = wire.state("arm")
    assert held["auto_hold_active"] is True
    assert max(abs(v) for v in held["dq"]) < 1e-6
    time.sleep(0.3)
    assert q_of(wire)[0] == pytest.approx(held["q"][0], abs=1e-9)


@pytest.mark.parametrize("mode", [ControlMode.CARTESIAN_POSE, ControlMode.CARTESIAN_IMPEDANCE])
def test_cartesian_pose_modes_reach_the_pose_through_ik(sim, mode):
    _, wire = sim
    set_mode(wire, mode)
    target = kin.fk(HOME)
    target[:3, 3] += [0.05, -0.08, 0.06]
    target[:3, :3] = target[:3, :3] @ kin.rpy_to_matrix(0.0, 0.0, 0.4)
    stream_for(wire, 1.2, {"msg_type": ArmMsg.CARTESIAN_POSE, "pose": kin.column_major(target)})
    reached = kin.matrix_from_column_major(wire.state("arm")["O_T_EE"])
    assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < 1e-3
    assert np.linalg.norm(kin.rotation_error(target[:3, :3], reached[:3, :3])) < 1e-2


def test_cartesian_velocity_mode_moves_the_end_effector_along_the_twist(sim):
    _, wire = sim
    set_mode(wire, ControlMode.CARTESIAN_VELOCITY)
    start = np.array(wire.state("arm")["O_T_EE"][12:15])
    stream_for(wire, 1.0, {"msg_type": ArmMsg.CARTESIAN_VELOCITY, "twist": [0, 0.05, 0, 0, 0, 0]})
    moved = np.array(wire.state("arm")["O_T_EE"][12:15]) - start
    assert 0.03 < moved[1] < 0.06
    assert abs(moved[0]) < 0.005 and abs(moved[2]) < 0.005


def test_torque_and_unknown_modes_are_refused(sim):
    _, wire = sim
    assert "not simulated" in wire.req("arm", ArmMsg.SET_CONTROL_MODE, control_mode=3)["error"]
    assert "unknown control_mode 6" in wire.req("arm", ArmMsg.SET_CONTROL_MODE,
                                                control_mode=6)["error"]


def reflex_state(wire) -> dict:
    """The one state the arm publishes after a reflex (it then goes silent)."""
    return wait_until(lambda: (s := wire.states["arm"].last()) and s["last_error"] and s, 3,
                      "the reflex state")


def test_a_target_beyond_a_joint_limit_is_a_reflex_that_silences_the_arm_until_restarted(sim):
    """As on the real robot: one last state says why, then no state until the arm server
    is restarted; nothing but STOP is taken meanwhile (there is no RECOVER message)."""
    simulator, wire = sim
    set_mode(wire, ControlMode.JOINT_POSITION)
    beyond = HOME.copy()
    beyond[3] = 0.1      # q4 must stay below -0.0698
    assert wire.req("arm", ArmMsg.JOINT_POSITION, q=beyond.tolist())["success"] is False
    state = reflex_state(wire)
    assert state["robot_mode"] == RobotMode.REFLEX and "joint position limit" in state["last_error"]
    assert np.allclose(state["q"], HOME)
    with pytest.raises(ArmUnavailable):
        wire.state("arm", timeout=0.5)             # silent
    assert "must be restarted" in wire.req("arm", ArmMsg.SET_CONTROL_MODE, control_mode=1)["error"]
    assert "must be restarted" in wire.req("arm", ArmMsg.GET_STATE)["error"]
    assert "unknown msg_type 90" in wire.req("arm", 90)["error"]
    assert simulator.control({"cmd": "restart", "server": "arm"})["ok"]
    state = wire.state("arm")
    assert state["last_error"] == "" and state["control_mode"] == ControlMode.IDLE
    set_mode(wire, ControlMode.JOINT_POSITION)


def test_the_state_has_the_real_servers_fields(sim):
    _, wire = sim
    state = wire.state("arm")
    for key, length in (("q", 7), ("dq", 7), ("O_T_EE", 16), ("O_T_EE_d", 16),
                        ("O_F_ext_hat_K", 6), ("K_F_ext_hat_K", 6), ("tau_J", 7),
                        ("tau_ext_hat_filtered", 7), ("q_d", 7), ("dq_d", 7), ("elbow", 2),
                        ("q_target", 7), ("pose_target", 16)):
        assert len(state[key]) == length, key
    for key in ("robot_mode", "control_mode", "timestamp", "robot_time", "auto_hold_active",
                "last_error"):
        assert key in state, key
    later = wire.state("arm")
    assert 0 < later["robot_time"] - state["robot_time"] < 1.0     # the server's own clock
    assert later["elbow"] == [pytest.approx(HOME[2]), -1.0]


def test_velocity_into_a_joint_limit_stops_at_the_limit(sim):
    _, wire = sim
    set_mode(wire, ControlMode.JOINT_VELOCITY)
    # q7 starts at 0.785 and may go to 2.8973: 2 rad/s gets there in about a second
    end = time.monotonic() + 2.5
    wire.state("arm")
    while time.monotonic() < end and not wire.states["arm"].last()["last_error"]:
        wire.stream.send({"msg_type": ArmMsg.JOINT_VELOCITY, "dq": [0, 0, 0, 0, 0, 0, 2.0]})
        time.sleep(0.02)
    state = reflex_state(wire)
    assert "limit" in state["last_error"]
    assert state["q"][6] <= kin.Q_MAX[6]


def test_stop_decelerates_holds_and_goes_idle(sim):
    _, wire = sim
    set_mode(wire, ControlMode.JOINT_VELOCITY)
    stream_for(wire, 0.4, {"msg_type": ArmMsg.JOINT_VELOCITY, "dq": [0.5, 0, 0, 0, 0, 0, 0]})
    assert wire.req("arm", ArmMsg.STOP)["success"] is True
    stopped = wire.arm_at_rest(2.0)
    assert stopped["control_mode"] == ControlMode.IDLE
    stream_for(wire, 0.2, {"msg_type": ArmMsg.JOINT_VELOCITY, "dq": [0.5, 0, 0, 0, 0, 0, 0]})
    assert q_of(wire)[0] == pytest.approx(stopped["q"][0], abs=1e-9)


def test_injected_wrench_is_reported(sim):
    simulator, wire = sim
    assert simulator.control({"cmd": "inject_wrench", "server": "arm",
                              "value": [0, 0, -5.0, 0, 0, 0]}) == {"ok": True}
    wait_until(lambda: wire.state("arm")["O_F_ext_hat_K"][2] == -5.0, 2, "the injected wrench")
