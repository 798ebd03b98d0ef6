"""The simulator's world: grasping, carrying and letting go of objects, the scene file, a
snapshot for a dry run, and rendered images that agree with the cameras' geometry
(test_physics.py: contact, pushing, collisions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from support import wait_until
from tidybot_exec.cameras.robot_model import MOUNTS, intrinsics
from tidybot_exec.sim.world import Scene, World

CUBE = (0.5, 0.0, 0.075)            # the default cube's centre, arm base frame


def cube(simulator) -> np.ndarray:
    return next(b.pose for b in simulator.world.bodies() if b.name == "cube")


@pytest.fixture
def robot_at_cube(robot):
    simulator, _, r = robot
    r.gripper.activate()
    r.gripper.open()
    r.arm.move_to_pose(x=CUBE[0], y=CUBE[1], z=CUBE[2] + 0.1)
    r.arm.move_to_pose(x=CUBE[0], y=CUBE[1], z=CUBE[2])
    return simulator, r


def at_rest(simulator) -> np.ndarray:
    """The cube's pose once it has not moved by 0.1 mm over 0.1 s."""
    seen: list[np.ndarray] = []

    def still() -> tuple[np.ndarray] | None:
        now = cube(simulator)
        same = bool(seen) and np.abs(now - seen[-1]).max() < 1e-4
        seen.append(now)
        return (now,) if same else None

    return wait_until(still, 10, "the cube to come to rest", interval=0.1)[0]


def test_a_grasp_closes_on_the_cube_which_moves_with_the_hand_and_falls_when_let_go(
        robot_at_cube):
    simulator, r = robot_at_cube
    start = at_rest(simulator)
    assert r.gripper.grasp(force=80)
    state = r.gripper.get_state()
    # the fingers stopped 50 mm apart on the 5 cm cube (position bytes over the 85 mm stroke)
    assert state["object_detected"] and abs(state["position"] - 255 * (1 - 50 / 85)) <= 3
    assert simulator.world.held == "cube"
    r.gripper.stop()        # the node's hold sends STOP after every run: it must not let go
    assert simulator.world.held == "cube" and r.gripper.get_state()["object_detected"]
    r.arm.move_delta(dz=0.15)
    r.base.strafe(0.2)
    assert r.gripper.grasp(force=80)            # closing again on what it holds keeps it
    lifted = cube(simulator)
    assert simulator.world.held == "cube"
    assert np.allclose(lifted[:3, 3] - start[:3, 3], (0.0, 0.2, 0.15), atol=0.01)
    r.gripper.open()
    assert simulator.world.held == ""
    placed = at_rest(simulator)
    # it fell 15 cm onto the table (top 0.45 m) below where it was let go, and stands there
    assert np.allclose(placed[:3, 3], start[:3, 3] + (0.0, 0.2, 0.0), atol=0.01)
    assert placed[2, 3] == pytest.approx(0.475, abs=0.002) and placed[2, 2] > 0.999
    r.arm.move_delta(dz=-0.15)            # down around it again: the open pads miss it
    assert np.allclose(cube(simulator)[:3, 3], placed[:3, 3], atol=0.002)
    # picked again and let go beside the table (its edge at y = 0.4): it lands on the floor
    assert r.gripper.grasp(force=80)
    r.arm.move_delta(dz=0.1)
    r.base.strafe(0.4)
    r.gripper.open()
    assert at_rest(simulator)[2, 3] == pytest.approx(0.025, abs=0.002)


def test_closing_on_nothing_detects_nothing(robot):
    simulator, _, r = robot
    r.gripper.activate()
    assert not r.gripper.grasp(force=80)      # at home, far above the table
    assert simulator.world.held == "" and r.gripper.get_state()["position"] == 255


def test_a_snapshot_restores_the_objects_and_what_is_held(robot_at_cube):
    """A dry run's private world starts from the live one's snapshot: the held cube stays
    in the hand there (welded where it was), and falls when that world lets it go."""
    simulator, r = robot_at_cube
    assert r.gripper.grasp(force=80)
    r.arm.move_delta(dz=0.1)
    snapshot = json.loads(json.dumps(simulator.world.snapshot()))     # as spec.json carries it
    held = np.array(snapshot["objects"][0]["pose"])
    assert snapshot["objects"][0]["name"] == "cube" and snapshot["collisions"] == []
    assert np.allclose(held, cube(simulator), atol=1e-3)
    robot_now = simulator.robot_pose()
    copy = World(Scene.from_dict(snapshot), lambda: robot_now)
    assert copy.held == "cube"
    copy.start()
    try:
        assert copy.ready.wait(10) and not copy.error
        wait_until(lambda: copy.snapshot()["held_in_hand"] is not None, 5, "the copy's physics")
        assert np.allclose(next(b.pose for b in copy.bodies() if b.name == "cube"), held,
                           atol=2e-3)                          # welded where it was held
        copy.released()
        wait_until(lambda: next(b.pose for b in copy.bodies() if b.name == "cube")[2, 3]
                   == pytest.approx(0.475, abs=0.002), 10, "the copy's cube on the table")
    finally:
        copy.stop()
    assert simulator.world.held == "cube"       # the copy is its own world


def test_scene_files_say_what_stands_where(tmp_path):
    scene = Scene.from_dict({"table": {"center": [1, 0], "size": [0.5, 0.6], "height": 0.3},
                             "objects": [{"name": "can", "size": [0.06, 0.06, 0.1],
                                          "position": [1.1, 0.1], "yaw": 0.5, "mass": 0.35},
                                         {"name": "puck", "size": [0.05, 0.05, 0.02],
                                          "position": [0.9, 0.0], "friction": 0.2}]})
    can, puck = scene.objects
    assert np.allclose(can.pose[:3, 3], (1.1, 0.1, 0.35))
    assert (can.mass, can.friction, puck.mass, puck.friction) == (0.35, 1.0, 0.1, 0.2)
    path = tmp_path / "scene.json"
    path.write_text(json.dumps({**scene.to_dict(), "collisions": [
        {"link": "left_finger", "body": "table", "depth": 0.001, "at": 12.5}]}))  # a snapshot's
    loaded = Scene.load(path)
    assert np.allclose(loaded.objects[0].pose, can.pose) and loaded.objects[0].mass == 0.35
    # the table for the guard's keep_out:=auto: a box in the odometry frame
    assert scene.table_box().to_dict() == {"name": "table", "center": [1.0, 0.0, 0.15],
                                           "size": [0.5, 0.6, 0.3], "yaw": 0.0}
    for bad in ({"name": "x", "size": [0.1, 0.1], "position": [0, 0]},
                {"name": "table", "size": [0.1, 0.1, 0.1], "position": [0, 0]},
                {"name": "x", "size": [0.1, 0.1, 0.1], "position": [0, 0], "mass": 0},
                {"name": "x", "size": [0.1, 0.1, 0.1], "position": [0, 0], "friction": -1}):
        with pytest.raises(ValueError):
            Scene.from_dict({"table": {"center": [0, 0], "size": [1, 1], "height": 0.4},
                             "objects": [bad]})


def test_rendered_frames_agree_with_the_intrinsics_and_the_camera_pose(sim_factory):
    """The red cube's centre, projected with the camera's intrinsics and T_base_camera (what
    the SDK gives code), lands on red pixels whose depth is the distance to its near face."""
    from tidybot_exec.sim.render import Renderer
    from tidybot_sdk import kinematics as kin

    simulator, _ = sim_factory()
    bodies = simulator.world.bodies()
    renderer = Renderer(bodies, 320, 240)
    try:
        renderer.place(simulator.robot_pose(), bodies)
        rgb, depth = renderer.render("base", False), renderer.render("base", True)
        k = intrinsics(320, 240, MOUNTS["base"].fovy_deg)
        T = MOUNTS["base"].optical_in_arm_base(kin.HOME_Q)
        x, y, z = (np.linalg.inv(T) @ np.array([*CUBE, 1.0]))[:3]
        u, v = int(k["fx"] * x / z + k["cx"]), int(k["fy"] * y / z + k["cy"])
        r, g, b = rgb[v, u].astype(int)
        assert r > 150 and g < 80 and b < 80, rgb[v, u]
        assert z - 0.05 < depth[v, u] < z, (depth[v, u], z)
        assert rgb.std() > 20 and np.all(depth > 0)       # a scene, and the floor everywhere
        wrist_home = renderer.render("wrist", False)
        q = kin.HOME_Q.copy()
        q[0] += 0.5
        renderer.place(type(simulator.robot_pose())(q, np.zeros(3), 0.0), bodies)
        assert np.abs(renderer.render("wrist", False).astype(int) - wrist_home).mean() > 10
    finally:
        renderer.close()


def test_without_offscreen_gl_the_cameras_say_why_and_the_robot_keeps_working(procs, tmp_path):
    """A machine without EGL: the camera server says so once, a client gets the reason, and
    the arm, gripper and base are served as ever."""
    from support import Proc, free_port, python_cmd, sim_config
    from tidybot_exec.cameras.source import CameraServerSource, CameraUnavailable
    from tidybot_sdk.transport import StateSubscriber

    config, port = sim_config(), free_port()
    ports = lambda ps: ",".join(map(str, ps))  # noqa: E731
    sim = Proc(python_cmd("tidybot_exec.sim.cli", "--arm-ports", ports(config.arm_ports),
                          "--gripper-ports", ports(config.gripper_ports),
                          "--base-ports", ports(config.base_ports), "--camera-port", str(port)),
               tmp_path, "sim", env={"MUJOCO_GL": "no-such-backend"})
    procs.append(sim)
    sim.wait_for_output("listening", 20)
    source = CameraServerSource(f"ws://127.0.0.1:{port}", 5.0)
    arm = StateSubscriber(config.addresses()["arm"]["state"], "arm")
    try:
        with pytest.raises(CameraUnavailable, match="offscreen rendering is unavailable"):
            source.frame("base", "color", 1.0, 5.0)
        assert "MUJOCO_GL=no-such-backend" in source.error
        arm.wait_next(5)
    finally:
        source.close()
        arm.close()
    assert sim.stderr.count("offscreen rendering is unavailable") == 1
