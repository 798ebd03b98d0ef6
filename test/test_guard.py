"""The safety guard's envelope on its own (pure: no sockets), and the guard on a real
simulator with the SDK pointed at it."""
from __future__ import annotations

import time

import numpy as np
import pytest

from support import sdk_config_for, wait_until
from tidybot_exec.guard.envelope import (BURST_S, CREDIT_S, RESUME_CREDIT_S, Envelope,
                                         _joint_distance)
from tidybot_exec.guard.relay import Guard
from tidybot_sdk import Robot, kinematics as kin
from tidybot_sdk.errors import ArmError, SafetyError
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


def pose(x: float, y: float, z: float) -> np.ndarray:
    """Gripper pointing down at (x, y, z), arm base frame."""
    return np.array([[1, 0, 0, x], [0, -1, 0, y], [0, 0, -1, z], [0, 0, 0, 1.0]])


def cartesian(target: np.ndarray) -> dict:
    return {"msg_type": int(ArmMsg.CARTESIAN_POSE), "pose": kin.column_major(target)}


def test_joint_targets_within_limits_box_and_speed(envelope):
    env, clock, _, _ = envelope
    assert "joint 2 target 2.0000 rad is outside its limit" in env.check("arm", joints(
        [0.0, 2.0, 0.0, -2.356, 0.0, 1.571, 0.785]))
    low = kin.ik(pose(0.5, 0.0, 0.0), HOME)
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
    q[0] += (CREDIT_S + BURST_S) * 1.0 + 0.05    # a jump more than credit and burst allow
    assert "the joint speed cap 1 rad/s allows now" in env.check("arm", joints(q))
    clock.now += 0.3                         # a new stream starts from the measured state
    assert "joint speed cap" in env.check("arm", joints(q))     # still 0.9+ rad from HOME
    assert env.check("arm", joints(HOME + [0.02, 0, 0, 0, 0, 0, 0])) is None


def test_a_stream_read_late_by_a_stalled_guard_goes_on_and_a_jump_after_it_does_not(envelope):
    """The relay conflates: a guard thread not scheduled for 0.4 s reads an honest 0.9 rad/s
    stream 0.36 rad ahead of the arm, which held at the last target it was sent. That target
    resumes the motion (CI failed a dry run on one such stall); more than the silence
    allows at the cap, or a silence longer than RESUME_CREDIT_S, still does not."""
    env, clock, arm, _ = envelope
    q = HOME.copy()
    for _ in range(10):
        clock.now += 0.02
        q[0] += 0.018
        assert env.check("arm", joints(q)) is None
    arm.update(q=q.tolist(), O_T_EE=kin.column_major(kin.fk(q)))      # it holds there
    late = q.copy()
    clock.now += 0.4
    late[0] += 0.36
    assert env.check("arm", joints(late + [0.1, 0, 0, 0, 0, 0, 0])) is not None  # 0.46 > 0.43
    assert env.check("arm", joints(late)) is None
    arm.update(q=late.tolist(), O_T_EE=kin.column_major(kin.fk(late)))
    clock.now += RESUME_CREDIT_S + 1.0
    late[0] += RESUME_CREDIT_S + 0.5          # slower than the cap over the silence, but
    assert "joint speed cap" in env.check("arm", joints(late))      # more than the credit


def test_an_arm_resting_just_outside_the_box_may_move_back_in_never_farther_out(envelope):
    env, clock, arm, _ = envelope
    floor = SafetyLimits().ee_box[2][0]
    below = kin.ik(pose(0.5, 0.0, floor - 0.001), HOME)     # pressed 1 mm into the floor
    arm.update(q=below.tolist(), O_T_EE=kin.column_major(kin.fk(below)))
    here = kin.fk(below)[:3, 3]
    assert env.check("arm", cartesian(pose(*here[:2], here[2] + 0.0005))) is None
    clock.now += 0.3
    deeper = env.check("arm", cartesian(pose(*here[:2], here[2] - 0.0005)))
    assert "farther out than the end effector is now" in deeper
    clock.now += 0.3
    assert "outside the workspace box y" in env.check(
        "arm", cartesian(pose(here[0], -0.7005, floor + 0.01)))     # back in z, out in y
    clock.now += 0.3
    up = kin.ik(pose(*here[:2], here[2] + 0.002), below)
    assert env.check("arm", joints(up)) is None
    clock.now += 0.3
    down = kin.ik(pose(*here[:2], here[2] - 0.002), below)
    assert "farther out" in env.check("arm", joints(down))


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


def test_a_stream_that_stalls_goes_on_from_where_it_was_and_arrives(sim, tmp_path):
    """A busy machine stops the code for 0.3 s mid-motion: the SDK's path resumes from its
    last target instead of jumping 0.3 s ahead (a step the speed gate refuses, and every
    later target would be as far from the last one admitted: the move never arrived)."""
    simulator, wire = sim
    upstream = sdk_config_for(simulator.config)
    guard = Guard(upstream, tmp_path / "guard").start()
    robot = Robot(upstream.with_endpoints(guard.endpoints))
    stream = robot.arm._backend.stream()
    send, sent = stream.send, [0]

    def stalling_send(msg) -> None:
        sent[0] += 1
        if sent[0] == 30:                     # mid-motion, near the peak speed
            time.sleep(0.3)                   # the stall under test, not a wait
        send(msg)

    stream.send = stalling_send
    try:
        robot.arm.go_home()
        target = HOME.copy()
        target[0] += 0.6
        sent[0] = 0
        try:
            robot.arm.move_joints(target.tolist())
        except ArmError as exc:
            pytest.fail(f"{exc}; the guard refused: {guard.refusals[:3]}")
        assert np.allclose(wire.state("arm")["q"], target, atol=6e-3)
        assert guard.refusals == []
    finally:
        robot.close()
        guard.close()


@pytest.fixture
def guarded(sim, tmp_path):
    """(simulator, wire, guard, a client on the guard's arm command socket)."""
    from tidybot_sdk.transport import RequestClient

    simulator, wire = sim
    guard = Guard(sdk_config_for(simulator.config), tmp_path / "guard").start()
    code = RequestClient(guard.endpoints["arm"]["cmd"], "arm", timeout_s=30.0)
    yield simulator, wire, guard, code
    code.close()
    guard.close()


def test_close_abandons_a_request_to_a_hung_backend_at_once(guarded):
    """A backend that never answers (crashed mid-command) must not hold the end path: the
    guard's request upstream waits up to a minute, close does not."""
    import threading

    simulator, _, guard, code = guarded
    simulator.control({"cmd": "reply_delay", "server": "arm", "value": 60.0})
    received = simulator.servers["arm"].received.get("STOP", 0)
    answers: list = []
    asking = threading.Thread(target=lambda: answers.append(code.request(
        {"msg_type": int(ArmMsg.STOP)})))
    asking.start()
    wait_until(lambda: simulator.servers["arm"].received.get("STOP", 0) > received, 10,
               "the request to reach the hung arm")
    started = time.monotonic()
    guard.close()
    closed_in = time.monotonic() - started
    asking.join(10)
    assert closed_in < 2.0, closed_in
    assert answers and "abandoned" in answers[0]["error"], answers


def test_once_stopping_only_stops_and_state_queries_pass(guarded):
    simulator, wire, guard, code = guarded
    guard.refuse_motion()
    moved = code.request(joints(HOME + 0.01))
    assert moved == {"error": "the execution is being stopped: no more motion is accepted"}
    assert code.request({"msg_type": int(ArmMsg.STOP)}).get("success") is True
    assert "q" in code.request({"msg_type": int(ArmMsg.GET_STATE)})
    assert guard.refusals == []            # a stop is not the code's fault
    from tidybot_sdk.transport import StreamPublisher

    streamed = simulator.servers["arm"].received.get("JOINT_POSITION", 0)
    stream = StreamPublisher(guard.endpoints["arm"]["stream"])
    try:
        for _ in range(20):                # dropped by the guard, not relayed
            stream.send(joints(HOME))
        assert code.request({"msg_type": int(ArmMsg.GET_STATE)})    # the relay had its turn
        assert simulator.servers["arm"].received.get("JOINT_POSITION", 0) == streamed
    finally:
        stream.close()


def test_state_that_waited_unread_is_judged_by_when_it_arrived(guarded):
    """The guard's conflating view keeps the last message: one read long after it came
    must count as old, not as fresh as the moment it was read."""
    simulator, wire, guard, _ = guarded
    assert guard.envelope.check("arm", joints(HOME)) is None      # fresh state: checked
    seen = wire.state("arm")["timestamp"]          # more state comes, unread by the guard
    wait_until(lambda: wire.state("arm")["timestamp"] > seen + 0.05, 5, "newer state")
    simulator.control({"cmd": "freeze_state", "server": "arm", "value": True})
    frozen = time.monotonic()
    wait_until(lambda: time.monotonic() - frozen > 1.0, 5, "the last state to age")
    reason = guard.envelope.check("arm", joints(HOME))
    assert reason is not None and "no fresh arm state" in reason, reason


def _fastest_joint(samples: list) -> float:
    return max((max(map(abs, dq)) for dq in samples), default=0.0)


def test_the_measured_joint_speed_keeps_to_the_cap_when_the_sdk_checks_are_patched(sim, tmp_path):
    """Code that patches the SDK's checks away and moves 1 rad in 0.4 s (2.5x the cap at
    its peak): the gate refuses most of it and what it admits is shaped, so the arm's
    *measured* speed stays within 10 % of the cap (1.17 rad/s before shaping)."""
    from tidybot_sdk.config import SdkConfig
    from tidybot_sdk.errors import TidybotError
    from tidybot_sdk.transport import StateSubscriber

    simulator, wire = sim
    upstream = sdk_config_for(simulator.config)
    cap = upstream.limits.joint_speed
    guard = Guard(upstream, tmp_path / "guard").start()
    robot = Robot(SdkConfig(limits=SafetyLimits(joint_speed=10.0)).with_endpoints(guard.endpoints))
    samples: list = []
    watch = StateSubscriber(simulator.config.addresses()["arm"]["state"], "arm",
                            on_message=lambda state: samples.append(state["dq"]))
    try:
        robot.arm.go_home()
        samples.clear()
        target = HOME.copy()
        target[0] += 1.0
        with pytest.raises(TidybotError):
            robot.arm.move_joints(target.tolist(), duration=0.4, timeout=1.0)
        moved = wire.state("arm")["q"][0] - HOME[0]
        fastest = _fastest_joint(samples)
        print(f"fastest joint {fastest:.3f} rad/s (cap {cap:g}), moved {moved:.3f} rad")
        assert moved > 0.03                       # it did move ...
        assert fastest <= 1.1 * cap, fastest      # ... never faster than the cap allows
    finally:
        watch.close()
        robot.close()
        guard.close()


def _shaped_path(env, clock, targets):
    """Feed (time, message) pairs to the envelope; the forwarded targets, with their times."""
    sent = []
    for at, msg in targets:
        clock.now = at
        reason, forward = env.admit("arm", msg)
        assert reason is None, reason
        sent.append((at, forward))
    return sent


@pytest.mark.parametrize("attack", ["jumps", "bunched ticks"])
def test_forwarded_joint_targets_move_no_faster_than_the_cap(envelope, attack):
    """What the gate admits (its whole burst in one jump, or ticks bunched at one instant)
    is forwarded as a path that moves at most cap x the time since the last target (20 ms
    of motion for the first, 40 ms for a late one) and then reaches the target."""
    from tidybot_exec.guard.envelope import FIRST_STEP_S, MAX_STEP_S

    env, clock, _, _ = envelope
    cap = env.limits.joint_speed
    q, t, targets = HOME.copy(), clock.now, []
    for lump in range(15):                       # the cap's rate on average, in lumps (0.87
        step = 0.025 if lump == 0 else 0.06      # rad: farther, the elbow meets the mast)
        parts = 4 if attack == "bunched ticks" else 1
        for _ in range(parts):
            q[0] += step / parts
            targets.append((t, joints(q)))
        t += 0.06
    for _ in range(100):                         # then the final target, as the SDK repeats it
        targets.append((t, joints(q)))
        t += 0.02
    sent = _shaped_path(env, clock, targets)
    previous, previous_at = HOME, None
    for at, msg in sent:
        dt = FIRST_STEP_S if previous_at is None else min(at - previous_at, MAX_STEP_S)
        assert _joint_distance(np.array(msg["q"]), previous) <= cap * dt + 1e-9, (at, msg)
        previous, previous_at = np.array(msg["q"]), at
    assert np.allclose(sent[-1][1]["q"], q)      # nothing is lost: the target is reached


def test_forwarded_cartesian_targets_move_no_faster_than_the_caps(envelope):
    from tidybot_exec.guard.envelope import FIRST_STEP_S, MAX_STEP_S, _rotation, _translation

    env, clock, _, _ = envelope
    lim = env.limits
    pose, t, targets = kin.fk(HOME), clock.now, []
    turn = kin.rpy_to_matrix(0.0, 0.0, 0.02)     # with a small turn each lump too
    for lump in range(20):
        pose = pose.copy()
        pose[2, 3] -= 0.0075 if lump == 0 else 0.015
        pose[:3, :3] = turn @ pose[:3, :3]
        targets.append((t, {"msg_type": int(ArmMsg.CARTESIAN_POSE), "pose": kin.column_major(pose)}))
        t += 0.06
    for _ in range(100):
        targets.append((t, {"msg_type": int(ArmMsg.CARTESIAN_POSE), "pose": kin.column_major(pose)}))
        t += 0.02
    sent = _shaped_path(env, clock, targets)
    previous, previous_at = kin.fk(HOME), None
    for at, msg in sent:
        now = kin.matrix_from_column_major(msg["pose"])
        dt = FIRST_STEP_S if previous_at is None else min(at - previous_at, MAX_STEP_S)
        assert _translation(now, previous) <= lim.cartesian_speed * dt + 1e-9
        assert _rotation(now, previous) <= lim.cartesian_angular_speed * dt + 1e-9
        assert np.allclose(now[:3, :3].T @ now[:3, :3], np.eye(3), atol=1e-9)   # a rotation
        previous, previous_at = now, at
    assert np.allclose(kin.matrix_from_column_major(sent[-1][1]["pose"]), pose, atol=1e-9)


def test_forwarded_base_targets_move_no_faster_than_the_caps(envelope):
    """A far diagonal pose target: the base's own controller limits each axis, not the
    speed, so unshaped it would drive at 0.7 m/s; forwarded, the path keeps to the cap."""
    from tidybot_exec.guard.envelope import BASE_FIRST_STEP_S, BASE_MAX_STEP_S

    env, clock, _, _ = envelope
    lim = env.limits
    t, targets = clock.now, []
    for _ in range(60):                          # 10 Hz, as the SDK sends it
        targets.append((t, {"msg_type": int(BaseMsg.EXECUTE_ACTION), "base_pose": [0.4, 0.4, 1.0]}))
        t += 0.1
    sent = []
    for at, msg in targets:
        clock.now = at
        reason, forward = env.admit("base", msg)
        assert reason is None, reason
        sent.append((at, np.array(forward["base_pose"])))
    previous, previous_at = np.zeros(3), None
    for at, pose in sent:
        dt = BASE_FIRST_STEP_S if previous_at is None else min(at - previous_at, BASE_MAX_STEP_S)
        assert np.hypot(*(pose[:2] - previous[:2])) <= lim.base_speed * dt + 1e-9
        assert abs(pose[2] - previous[2]) <= lim.base_angular_speed * dt + 1e-9
        previous, previous_at = pose, at
    assert np.allclose(sent[-1][1], [0.4, 0.4, 1.0])


def test_the_measured_base_speed_keeps_to_the_cap_on_a_far_diagonal(guarded):
    """Raw pose targets 2 m away on the diagonal, at 10 Hz: the base limits each axis to
    0.5 m/s, so unshaped it drives at 0.71 m/s; shaped, within 10 % of the 0.5 m/s cap."""
    from tidybot_sdk.transport import RequestClient, StateSubscriber

    simulator, wire, guard, _ = guarded
    cap = guard.upstream.limits.base_speed
    speeds: list = []
    watch = StateSubscriber(simulator.config.addresses()["base"]["state"], "base",
                            on_message=lambda s: speeds.append(float(np.hypot(*s["base_velocity"][:2]))))
    base = RequestClient(guard.endpoints["base"]["cmd"], "base")
    try:
        x, y, _ = wire.state("base")["base_pose"]
        began = time.monotonic()
        while time.monotonic() - began < 4.0:        # long enough to reach full speed
            reply = base.request({"msg_type": int(BaseMsg.EXECUTE_ACTION),
                                  "base_pose": [x + 1.5, y + 1.5, 0.0]})
            assert "error" not in reply, reply
            tick = time.monotonic()
            wait_until(lambda: time.monotonic() - tick >= 0.1, 1, "the next target")
        base.request({"msg_type": int(BaseMsg.STOP)})
        print(f"fastest base {max(speeds):.3f} m/s (cap {cap:g})")
        assert max(speeds) > 0.8 * cap                # it did get going ...
        assert max(speeds) <= 1.1 * cap, max(speeds)  # ... and no faster than the cap
    finally:
        base.close()
        watch.close()
