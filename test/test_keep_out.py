"""Keep-out (DESIGN §12.2): the arm's collision geometry (tidybot_sdk.collision), the SDK's
path check and the guard's check of every target against the floor, the robot's base and
mast and the keep-out boxes, placed where the base measures itself now."""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from support import sdk_config_for, wait_until
from tidybot_exec.guard.envelope import Envelope
from tidybot_exec.guard.relay import Guard
from tidybot_sdk import Robot, collision, kinematics as kin
from tidybot_sdk.arm_api import ArmAPI
from tidybot_sdk.collision import Box, KeepOut
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import ArmError, ArmSafetyError
from tidybot_sdk.limits import SafetyLimits
from tidybot_sdk.protocol import ArmMsg
from tidybot_sdk.transport import StateSubscriber

ROOT = Path(__file__).resolve().parents[1]
# The simulator's default table (odometry frame); its top is z = 0.05 in the arm base frame.
TABLE = Box("table", (0.75, 0.0, 0.225), (0.6, 0.8, 0.45))
MARGIN = collision.MARGIN_M
HOME_T = kin.fk(kin.HOME_Q)


def q_at(x: float, y: float, z: float, seed=kin.HOME_Q) -> np.ndarray:
    """Joint angles with the gripper pointing down (as at home) at (x, y, z), arm base frame."""
    T = HOME_T.copy()
    T[:3, 3] = [x, y, z]
    q = kin.ik(T, seed)
    assert q is not None
    return q


def clearance(q, base_pose=(0.0, 0.0, 0.0), boxes=(TABLE,), body: str = "table") -> float:
    return min(c.distance for c in collision.contacts(q, base_pose, boxes, within=math.inf)
               if c.body == body)


# ------------------------------------------------------------------ the geometry
def _box_distance(p: np.ndarray, center, size, R=np.eye(3)) -> float:
    """Signed distance of point ``p`` to a box (the textbook formula, written apart from
    collision.Scene's vectorised one)."""
    local = R.T @ (p - np.asarray(center))
    q = np.abs(local) - np.asarray(size) / 2
    return float(np.linalg.norm(np.maximum(q, 0.0)) + min(q.max(), 0.0))


def test_distances_to_a_box_the_floor_and_the_base_are_exact_at_samples_and_never_more():
    """At home the fingertips' lowest point is the TCP; the robot's base top is the arm
    base's plane; the floor 0.4 m below it. Sampled distances lose at most half the
    sample spacing, and never report more than a dense reference."""
    pad = collision.SPACING_M / 2
    ee = HOME_T[:3, 3]
    # a slab whose top is 5 cm under the TCP (odometry frame: the base at the origin)
    slab = Box("slab", tuple(ee + collision.ARM_BASE_IN_BASE - [0.0, 0.0, 0.06]), (0.2, 0.2, 0.02))
    near = {(c.link, c.body): c.distance for c in
            collision.contacts(kin.HOME_Q, (0.0, 0.0, 0.0), [slab], within=math.inf)}
    assert near[("left_finger", "slab")] == pytest.approx(0.05 - pad, abs=1e-9)
    assert near[("panda_link1", "the robot's base")] == pytest.approx(0.333 - 0.19 - 0.07 - pad)
    assert near[("panda_link1", "the floor")] == pytest.approx(0.4 + 0.333 - 0.19 - 0.07 - pad)
    assert near[("left_finger", "the floor")] == pytest.approx(0.4 + ee[2] - pad, abs=1e-9)
    nearest = collision.nearest(kin.HOME_Q, (0.0, 0.0, 0.0), [slab])
    assert nearest.body == "slab" and nearest.distance == pytest.approx(0.05 - pad, abs=1e-9)

    rng = np.random.default_rng(7)
    turned = Box("turned", (0.55, 0.1, 0.3), (0.3, 0.2, 0.5), yaw=0.6)
    base_pose = (0.1, -0.05, 0.3)
    for _ in range(20):
        q = rng.uniform(kin.Q_MIN, kin.Q_MAX)
        frames = kin.frames(q)
        odom_in_arm = np.linalg.inv(collision.arm_base_in_odom(base_pose))
        c, s = math.cos(turned.yaw), math.sin(turned.yaw)
        R = odom_in_arm[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        center = (odom_in_arm @ [*turned.center, 1.0])[:3]
        got = {(k.link, k.body): k.distance
               for k in collision.contacts(q, base_pose, [turned], within=math.inf)}
        for capsule in collision.CAPSULES:
            a, b = (frames[capsule.frame] @ [*p, 1.0] for p in (capsule.a, capsule.b))
            dense = min(_box_distance(a[:3] + t * (b[:3] - a[:3]), center, turned.size, R)
                        for t in np.linspace(0.0, 1.0, 400)) - capsule.radius
            sampled = got[(capsule.link, "turned")]
            assert dense - pad - 1e-4 <= sampled <= dense + 1e-9, (capsule.link, sampled, dense)


def test_a_box_moves_with_the_base_that_measures_it():
    """The same box, given in the odometry frame: a base that turned and drove brings it to
    the same place relative to the arm as a base at the origin with the box moved alike."""
    q = q_at(0.5, 0.1, 0.2)
    x, y, theta = 0.4, -0.3, 0.7
    c, s = math.cos(theta), math.sin(theta)
    here = Box("crate", (0.7, 0.1, 0.3), (0.2, 0.3, 0.6), yaw=0.2)
    moved = replace(here, center=(x + c * 0.7 - s * 0.1, y + s * 0.7 + c * 0.1, 0.3),
                    yaw=0.2 + theta)
    assert collision.nearest(q, (x, y, theta), [moved]) == pytest.approx(
        collision.nearest(q, (0.0, 0.0, 0.0), [here]))
    wall = Box("wall", (1.5, 0.0, 1.0), (0.2, 4.0, 2.0))       # its face 1.4 m ahead
    ahead = clearance(kin.HOME_Q, (0.0, 0.0, 0.0), [wall], "wall")
    assert clearance(kin.HOME_Q, (0.3, 0.0, 0.0), [wall], "wall") == pytest.approx(ahead - 0.3)


def test_a_path_is_checked_between_its_samples():
    """Two samples, both far from a thin wall the hand sweeps through between them: the
    check looks between wherever a point of the arm would move more than STEP_M."""
    a, b = q_at(0.5, -0.2, 0.3), q_at(0.5, 0.2, 0.3)
    wall = Box("wall", (0.6, 0.0, 0.575), (0.4, 0.01, 0.35))  # arm frame y = 0, up to z = 0.35
    rule = KeepOut((wall,))
    samples: list[float] = []

    def joint_path(s: float, _) -> np.ndarray:
        samples.append(s)
        return a + s * (b - a)

    s, breach = rule.check_path(rule.scene((0.0, 0.0, 0.0)), joint_path, [0.0, 1.0])
    assert 0.3 < s < 0.7 and breach.contact.body == "wall" and breach.contact.distance < 0
    assert str(breach).endswith("would hit wall")
    assert len(samples) > 40                     # ~0.45 m of hand travel, 1 cm at a time


def _origin(el: ET.Element | None) -> np.ndarray:
    """An URDF <origin> as a 4×4 pose (none: identity)."""
    T = np.eye(4)
    if el is not None:
        T[:3, :3] = kin.rpy_to_matrix(*[float(v) for v in el.get("rpy", "0 0 0").split()])
        T[:3, 3] = [float(v) for v in el.get("xyz", "0 0 0").split()]
    return T


def _urdf_frames(root: ET.Element, q: np.ndarray) -> dict[str, np.ndarray]:
    """Every link's pose in the arm base frame (panda_link0) at joint angles ``q``, by the
    URDF's own joints (the Panda's revolute about z; the finger's left at 0)."""
    poses = {"panda_link0": np.eye(4)}
    base_to_arm = next(j for j in root.iter("joint") if j.get("name") == "base_to_arm")
    poses["base_link"] = np.linalg.inv(_origin(base_to_arm.find("origin")))
    joints = list(root.iter("joint"))
    while len(poses) < len(joints) + 1:
        for j in joints:
            parent, child = j.find("parent").get("link"), j.find("child").get("link")
            if parent in poses and child not in poses:
                T = poses[parent] @ _origin(j.find("origin"))
                if j.get("type") == "revolute" and j.get("name", "").startswith("panda_joint"):
                    i = int(j.get("name")[-1]) - 1
                    c, s = math.cos(q[i]), math.sin(q[i])
                    T = T @ np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
                poses[child] = T
    return poses


def test_the_urdf_collision_elements_agree_with_the_model():
    """urdf/tidybot.urdf's <collision> elements are collision.CAPSULES (a cylinder is a
    capsule: its axis the segment) and ROBOT_BOXES, placed by the URDF's own joints."""
    root = ET.parse(ROOT / "urdf" / "tidybot.urdf").getroot()
    q = np.random.default_rng(3).uniform(kin.Q_MIN, kin.Q_MAX)
    poses, frames = _urdf_frames(root, q), kin.frames(q)
    capsules = {c.link: c for c in collision.CAPSULES}
    boxes = {"base": collision.ROBOT_BOXES[0], "mast": collision.ROBOT_BOXES[1]}
    seen = set()
    for link in root.iter("link"):
        for col in link.iter("collision"):
            name, geometry = col.get("name"), col.find("geometry")
            T = poses[link.get("name")] @ _origin(col.find("origin"))
            cylinder = geometry.find("cylinder")
            if cylinder is not None:
                half = float(cylinder.get("length")) / 2
                ends = [(T @ [0.0, 0.0, z, 1.0])[:3] for z in (-half, half)]
                capsule = capsules[name]
                mine = [(frames[capsule.frame] @ [*p, 1.0])[:3] for p in (capsule.a, capsule.b)]
                assert (np.allclose(mine, ends, atol=1e-4)
                        or np.allclose(mine, ends[::-1], atol=1e-4)), (name, mine, ends)
                assert capsule.radius == pytest.approx(float(cylinder.get("radius"))), name
            else:
                box = boxes[name]
                in_base = np.linalg.inv(poses["base_link"]) @ T
                assert np.allclose(in_base[:3, 3], box.center) and np.allclose(
                    in_base[:3, :3], kin.rpy_to_matrix(0.0, 0.0, box.yaw)), name
                size = [float(v) for v in geometry.find("box").get("size").split()]
                assert size == pytest.approx(list(box.size)), name
            seen.add(name)
    assert seen == set(capsules) | set(boxes)
    arm_in_base = np.linalg.inv(poses["base_link"])[:3, 3]
    assert arm_in_base == pytest.approx(collision.ARM_BASE_IN_BASE)


# ------------------------------------------------------------------ the configuration
def test_the_configuration_carries_keep_out_and_refuses_bad_boxes():
    config = SdkConfig(keep_out=[TABLE.to_dict()], keep_out_margin_m=0.02)
    again = SdkConfig.from_dict(json.loads(config.to_json()))
    assert again.keep_out == (TABLE,) and again.keep_out_margin_m == 0.02
    assert again.kept_out() == KeepOut((TABLE,), 0.02)
    assert SdkConfig.from_dict({}).kept_out() == KeepOut((), MARGIN)
    with pytest.raises(ValueError, match=re.escape("keep-out box {'name': 'bench', 'center': [1, 2]")):
        SdkConfig(keep_out=[{"name": "bench", "center": [1, 2], "size": [1, 1, 1]}])
    with pytest.raises(ValueError, match="keep-out box {'name': 'wall'.*3 positive extents"):
        SdkConfig(keep_out=[{"name": "wall", "center": [1, 2, 0], "size": [1, 0, 1]}])
    with pytest.raises(ValueError, match="box names must be unique"):
        SdkConfig(keep_out=[TABLE, TABLE])
    with pytest.raises(ValueError, match="keep_out_margin_m must be a finite number >= 0"):
        SdkConfig(keep_out_margin_m=-0.01)
    with pytest.raises(ValueError, match="keep-out box 'table'"):
        SdkConfig.from_dict({"keep_out": ["table"]})


# ------------------------------------------------------------------ the guard, on its own
@pytest.fixture
def table_envelope():
    """(envelope keeping the table out, its clock, the arm's state, the base's state)."""
    now = {"t": 100.0}
    arm = {"q": kin.HOME_Q.tolist(), "O_T_EE": kin.column_major(HOME_T)}
    base = {"base_pose": [0.0, 0.0, 0.0]}
    env = Envelope(SafetyLimits(), lambda: arm, lambda: base, lambda: now["t"],
                   KeepOut((TABLE,), MARGIN))
    return env, now, arm, base


def _rest_at(arm: dict, q: np.ndarray) -> None:
    arm.update(q=q.tolist(), O_T_EE=kin.column_major(kin.fk(q)))


def _joints(q) -> dict:
    return {"msg_type": int(ArmMsg.JOINT_POSITION), "q": [float(v) for v in q]}


def _pose(T: np.ndarray) -> dict:
    return {"msg_type": int(ArmMsg.CARTESIAN_POSE), "pose": kin.column_major(T)}


def test_the_guard_refuses_each_kind_of_target_into_the_table(table_envelope):
    env, now, arm, _ = table_envelope
    above = q_at(0.6, 0.25, 0.065)                # fingertips 1.5 cm over the table top
    _rest_at(arm, above)
    down = q_at(0.6, 0.25, 0.06, above)           # 1 cm over it: inside the margin
    assert env.check("arm", _joints(above)) is None
    now["t"] += 0.3
    reason = env.check("arm", _joints(down))
    assert reason.startswith("joint target would bring") and reason.endswith("would hit table")
    now["t"] += 0.3
    T = kin.fk(above)
    T[2, 3] -= 0.015
    assert "end-effector target would bring" in env.check("arm", _pose(T))
    now["t"] += 0.3
    sink = {"msg_type": int(ArmMsg.CARTESIAN_VELOCITY), "twist": [0.0, 0.0, -0.2, 0, 0, 0]}
    assert env.check("arm", sink).endswith("would hit table")        # 2 cm in its hold-off
    rise = {"msg_type": int(ArmMsg.CARTESIAN_VELOCITY), "twist": [0.0, 0.0, 0.2, 0, 0, 0]}
    assert env.check("arm", rise) is None
    dq = np.linalg.pinv(kin.jacobian(above)[:3]) @ [0.0, 0.0, -0.2]
    drop = {"msg_type": int(ArmMsg.JOINT_VELOCITY), "dq": dq.tolist()}
    assert "joint velocity would bring" in env.check("arm", drop)


def test_the_guard_places_the_table_where_the_base_measures_itself(table_envelope):
    env, now, arm, base = table_envelope
    _rest_at(arm, q_at(0.30, 0.0, 0.065))    # 5 cm short of the table's edge
    low = q_at(0.30, 0.0, 0.06)              # 5 mm lower: 1 cm over its top, were it there
    assert env.check("arm", _joints(low)) is None
    base["base_pose"] = [0.3, 0.0, 0.0]      # drove 0.3 m toward the table: it is there
    now["t"] += 0.3
    assert " of table (0.00" in env.check("arm", _joints(low))
    env_without = Envelope(SafetyLimits(), lambda: arm, lambda: None, lambda: now["t"],
                           KeepOut((TABLE,), MARGIN))
    assert env_without.check("arm", _joints(low)) == (
        "cannot check the command without the base's state: no fresh base state")
    nothing_kept_out = Envelope(SafetyLimits(), lambda: arm, lambda: None, lambda: now["t"])
    assert nothing_kept_out.check("arm", _joints(low)) is None    # (no box to place)


def test_the_guard_lets_an_arm_too_close_move_away_and_no_closer(table_envelope):
    env, now, arm, _ = table_envelope
    close = q_at(0.5, 0.0, 0.056)                 # 3.5 mm from the table: inside the margin
    assert clearance(close) < MARGIN
    _rest_at(arm, close)
    assert env.check("arm", _joints(close)) is None           # holding where it is
    now["t"] += 0.3
    reason = env.check("arm", _joints(q_at(0.5, 0.0, 0.0545, close)))
    assert "closer to table" in reason and "only moving away" in reason, reason
    for z in (0.0565, 0.058, 0.06, 0.065):                    # a 50 Hz stream up and away
        now["t"] += 0.02
        assert env.check("arm", _joints(q_at(0.5, 0.0, z, close))) is None
    now["t"] += 0.3
    T = kin.fk(close)
    T[1, 3] += 0.005                                          # sideways, as close: allowed
    assert env.check("arm", _pose(T)) is None


# ------------------------------------------------------------------ on a simulator
def keep_out_robot(config: SdkConfig) -> Robot:
    """The SDK on ``config``, its arm checking ``config``'s keep-out (the base's backend
    places the boxes)."""
    robot = Robot(config)
    robot.arm = ArmAPI(robot.backend("arm"), config.limits, config.kept_out(),
                       robot.backend("base"))
    return robot


def _motions(simulator) -> int:
    r = simulator.arm.received
    return sum(n for k, n in r.items() if k.startswith("stream_") or k == "SET_CONTROL_MODE")


def _refused_and_still(simulator, wire, call, match: str) -> str:
    """``call`` raises ArmSafetyError matching ``match`` and the simulated arm does not move."""
    q0, sent = np.array(wire.state("arm")["q"]), _motions(simulator)
    with pytest.raises(ArmSafetyError, match=match) as refused:
        call()
    seen = wire.state("arm")["timestamp"]            # a state from after the refusal ...
    wait_until(lambda: wire.state("arm")["timestamp"] > seen + 0.1, 5, "newer arm states")
    assert np.array_equal(wire.state("arm")["q"], q0)  # ... where the arm has not moved
    assert _motions(simulator) == sent
    return str(refused.value)


def test_the_sdk_refuses_the_hand_into_the_table_and_nothing_moves(sim):
    simulator, wire = sim
    robot = keep_out_robot(replace(sdk_config_for(simulator.config), keep_out=[TABLE]))
    try:
        message = _refused_and_still(simulator, wire,
                                     lambda: robot.arm.move_to_pose(x=0.60, y=0.25, z=0.025),
                                     "would hit table")
        assert re.fullmatch(r"arm.move_to_pose: the target would bring (left|right)_finger within "
                            r"0.010 m of table \(0.027 m into it\); would hit table", message)
        robot.arm.move_to_pose(x=0.60, y=0.25, z=0.08)        # 3 cm over it: allowed
        assert kin.fk(wire.state("arm")["q"])[2, 3] == pytest.approx(0.08, abs=0.005)
    finally:
        robot.close()


def test_a_base_that_drove_toward_the_table_brings_it_closer(sim_factory):
    """A pose 5 cm short of the table's edge, under its top: reached with the base at the
    origin; after the base drove 0.3 m forward, the same pose is in the table: refused."""
    simulator, wire = sim_factory(initial_q=q_at(0.30, 0.0, 0.10).tolist())
    robot = keep_out_robot(replace(sdk_config_for(simulator.config), keep_out=[TABLE]))
    try:
        robot.arm.move_to_pose(z=0.03)
        robot.arm.move_to_pose(z=0.10)
        robot.base.forward(0.3)
        assert wire.state("base")["base_pose"][0] == pytest.approx(0.3, abs=0.02)
        _refused_and_still(simulator, wire, lambda: robot.arm.move_to_pose(x=0.30, y=0.0, z=0.03),
                           "arm.move_to_pose: the target would bring .* of table .*; would hit table")
    finally:
        robot.close()


def test_an_arm_starting_too_close_may_move_away_through_sdk_and_guard(sim_factory, tmp_path):
    close = q_at(0.5, 0.0, 0.056)                 # 3.5 mm from the table top
    simulator, wire = sim_factory(initial_q=close.tolist())
    upstream = replace(sdk_config_for(simulator.config), keep_out=[TABLE])
    guard = Guard(upstream, tmp_path / "guard").start()
    robot = keep_out_robot(upstream.with_endpoints(guard.endpoints))
    try:
        _refused_and_still(simulator, wire, lambda: robot.arm.move_delta(dz=-0.002),
                           "closer to table .*only moving away from it is allowed")
        robot.arm.move_delta(dy=0.03)                         # along it, no closer
        robot.arm.move_delta(dz=0.05)                         # and away
        assert kin.fk(wire.state("arm")["q"])[2, 3] == pytest.approx(0.106, abs=0.005)
        assert guard.refusals == []
    finally:
        robot.close()
        guard.close()


def test_the_guard_stops_a_patched_sdk_streaming_into_the_table_before_the_margin(sim_factory, tmp_path):
    """Code whose SDK knows no table (its own check patched out) streams a joint path into
    it: the guard refuses the first target that would come within the margin and holds
    the arm at the last one admitted. Judged by the simulator's measured states."""
    simulator, wire = sim_factory(initial_q=q_at(0.6, 0.25, 0.15).tolist())
    upstream = replace(sdk_config_for(simulator.config), keep_out=[TABLE])
    guard = Guard(upstream, tmp_path / "guard").start()
    patched = keep_out_robot(SdkConfig().with_endpoints(guard.endpoints))   # no table
    measured: list = []
    watch = StateSubscriber(simulator.config.addresses()["arm"]["state"], "arm",
                            on_message=lambda state: measured.append(state["q"]))
    try:
        into = q_at(0.6, 0.25, 0.03, np.array(wire.state("arm")["q"]))   # 2 cm into it
        with pytest.raises(ArmError, match="did not reach"):
            patched.arm.move_joints(into.tolist(), timeout=1.0)
        assert guard.refusals[0].startswith("arm: joint target would bring")
        assert guard.refusals[0].endswith("would hit table")
        closest = min(clearance(q) for q in measured)
        print(f"closest the arm came to the table: {closest * 1000:.1f} mm "
              f"({len(guard.refusals)} targets refused)")
        assert closest > MARGIN - 0.002, closest
        assert clearance(wire.state("arm")["q"]) > MARGIN - 0.002    # held there
    finally:
        watch.close()
        patched.close()
        guard.close()
