"""State topics and diagnostics of a real node fed by the simulator processes."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState
from tidybot_interfaces.msg import GripperState

from support import LEASE_FREE, Wire, sdk_config_for, wait_until
from tidybot_sdk import Robot
from tidybot_sdk import kinematics as kin

STACK_PARAMS = LEASE_FREE
STALE, ERROR, OK = 3, 2, 0


@pytest.fixture
def sdk(stack):
    robot = Robot(sdk_config_for(stack[0].config))
    yield robot
    robot.close()


def backend_level(diag, name: str, since: float):
    for msg in reversed(diag.since(since)):
        for s in msg.status:
            if s.name == f"tidybot_exec: {name} backend":
                return s.level[0], s
    return None, None


def test_joint_states_follow_the_arm_while_it_moves(stack, record, sdk):
    sim_stack, _ = stack
    joints = record(JointState, "/joint_states")
    wire = Wire(sim_stack.config)
    worst = 0.0
    try:
        target = kin.HOME_Q + np.array([0.4, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0])
        mover = threading.Thread(target=sdk.arm.move_joints, args=(target.tolist(),),
                                 kwargs={"duration": 2.0})
        mover.start()
        while mover.is_alive():
            sim_q = np.array(wire.state("arm")["q"])
            ros_q = np.array(joints.latest().position[:7])
            worst = max(worst, float(np.max(np.abs(sim_q - ros_q))))
            time.sleep(0.05)
        mover.join()
        msg = joints.latest()
        assert list(msg.name[:7]) == [f"panda_joint{i}" for i in range(1, 8)]
        assert np.allclose(msg.position[:7], target, atol=0.01)
        # the arm moves at most ~0.4 rad/s here: 10-20 ms of latency is a few 0.01 rad
        assert worst < 0.05
    finally:
        wire.close()
        sdk.arm.go_home()


def test_joint_states_rate_is_within_10_percent(stack, record):
    joints = record(JointState, "/joint_states")
    joints.latest()
    start = time.monotonic()
    time.sleep(5.0)
    rate = len(joints.since(start)) / 5.0
    assert 90.0 <= rate <= 110.0, f"{rate:.1f} Hz"


def test_ee_pose_wrench_and_odom_match_the_simulator(stack, record, sdk):
    sim_stack, _ = stack
    pose, wrench, odom = (record(PoseStamped, "/arm/ee_pose"), record(WrenchStamped, "/arm/wrench"),
                          record(Odometry, "/base/odom"))
    sim_stack.control(cmd="inject_wrench", server="arm", value=[1.0, -2.0, 3.0, 0.1, 0.2, 0.3])
    sdk.base.move_to_pose(0.2, 0.1, math.pi / 2)
    wire = Wire(sim_stack.config)
    try:
        T = kin.matrix_from_column_major(wire.state("arm")["O_T_EE"])
        time.sleep(0.3)
        p = pose.latest()
        assert p.header.frame_id == "panda_link0"
        assert np.allclose([p.pose.position.x, p.pose.position.y, p.pose.position.z], T[:3, 3],
                           atol=1e-4)
        q = p.pose.orientation
        assert abs(abs(np.dot([q.x, q.y, q.z, q.w], [1.0, 0.0, 0.0, 0.0])) - 1.0) < 1e-3  # home: EE flipped about x
        w = wrench.latest().wrench
        assert (w.force.x, w.force.y, w.force.z, w.torque.z) == (1.0, -2.0, 3.0, 0.3)
        o = odom.latest()
        x, y, theta = wire.state("base")["base_pose"]
        assert (o.header.frame_id, o.child_frame_id) == ("odom", "base_link")
        assert (o.pose.pose.position.x, o.pose.pose.position.y) == pytest.approx((x, y), abs=1e-6)
        assert 2 * math.atan2(o.pose.pose.orientation.z, o.pose.pose.orientation.w) == \
            pytest.approx(theta, abs=1e-6)
    finally:
        wire.close()
        sim_stack.control(cmd="inject_wrench", server="arm", value=[0.0] * 6)
        sdk.base.move_to_pose(0.0, 0.0, 0.0)


def test_gripper_state_topic(stack, record, sdk):
    grip = record(GripperState, "/gripper/state")
    sdk.gripper.activate()
    sdk.gripper.calibrate(85.0, 0.0)
    sdk.gripper.move(position=100)
    msg = wait_until(lambda: (m := grip.latest()).position == 100 and m, 5, "the gripper topic")
    assert msg.is_activated and msg.is_calibrated
    assert msg.width_m == pytest.approx(0.085 * (1 - 100 / 255), abs=1e-6)


def test_a_dead_backend_goes_quiet_and_stale_then_recovers(stack, record):
    sim_stack, _ = stack
    joints, diag = record(JointState, "/joint_states"), record(DiagnosticArray, "/diagnostics")
    joints.latest()
    _, up = wait_until(lambda: (r := backend_level(diag, "arm", 0))[0] == OK and r, 10,
                       "arm OK in diagnostics")
    reconnects = int({kv.key: kv.value for kv in up.values}["reconnects"])  # earlier ones count
    sim_stack.control(cmd="kill", server="arm")
    killed = time.monotonic()
    level = wait_until(lambda: backend_level(diag, "arm", killed)[0] in (STALE, ERROR)
                       and backend_level(diag, "arm", killed)[0], 10, "arm STALE")
    assert time.monotonic() - killed < 2.0 + 1.0   # 0.5 s staleness + 1 Hz diagnostics
    assert level == STALE
    quiet_from = time.monotonic()
    time.sleep(1.0)
    assert joints.since(quiet_from) == []           # nothing published while it is down
    sim_stack.control(cmd="restart", server="arm")
    back = time.monotonic()
    wait_until(lambda: joints.since(back), 10, "joint_states again")
    _, st = wait_until(lambda: (r := backend_level(diag, "arm", back))[0] == OK and r, 10,
                       "arm OK again")
    assert {kv.key: kv.value for kv in st.values}["reconnects"] == str(reconnects + 1)


def test_frozen_state_is_not_republished(stack, record):
    sim_stack, _ = stack
    odom = record(Odometry, "/base/odom")
    odom.latest()
    sim_stack.control(cmd="freeze_state", server="base", value=True)
    try:
        time.sleep(0.3)
        frozen = time.monotonic()
        time.sleep(1.0)
        assert odom.since(frozen) == []
    finally:
        sim_stack.control(cmd="freeze_state", server="base", value=False)
    wait_until(lambda: odom.since(time.monotonic() - 0.2), 5, "odometry again")


def test_diagnostics_report_executor_and_lease(stack, record):
    _, client = stack
    diag = record(DiagnosticArray, "/diagnostics")
    client.run("print('x')")
    names = wait_until(lambda: {s.name: s for m in diag.messages[-1:] for s in m.status}
                       if diag.messages else None, 5, "diagnostics")
    assert names["tidybot_exec: executor"].message == "idle"
    assert {kv.key: kv.value for kv in names["tidybot_exec: executor"].values}["last_result"] \
        == "SUCCEEDED"
    assert names["tidybot_exec: lease"].message == "free"


def test_publishing_keeps_its_rate_during_heavy_output(stack, record):
    _, client = stack
    joints = record(JointState, "/joint_states")
    joints.latest()
    run = client.send("for i in range(300000):\n    print('flood', i)\n")
    time.sleep(0.5)
    start = time.monotonic()
    time.sleep(3.0)
    rate = len(joints.since(start)) / 3.0
    run.result(120)
    assert rate >= 85.0, f"joint_states fell to {rate:.1f} Hz during heavy output"


def test_publish_tf_without_tf2_msgs_is_said_once_and_shown_in_diagnostics(stack, record):
    try:
        import tf2_msgs  # noqa: F401
        pytest.skip("tf2_msgs is installed here: /tf is published")
    except ImportError:
        pass
    sim_stack, _ = stack
    diag = record(DiagnosticArray, "/diagnostics")

    def tf_entry():
        for msg in reversed(diag.since(0)):
            for s in msg.status:
                if s.name == "tidybot_exec: tf":
                    return s
        return None

    entry = wait_until(tf_entry, 10, "a tf entry in /diagnostics")
    assert entry.level[0] == 1 and "tf2_msgs is not installed" in entry.message   # WARN
    log = sim_stack.node.stderr + sim_stack.node.stdout
    assert log.count("tf2_msgs is not installed") == 1
