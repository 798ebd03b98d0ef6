"""What a run on a simulator did to its world (ExecuteCode.Result collisions and
moved_objects, world_watch.py) and the static world the arm is kept out of (keep_out.py)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from tidybot_interfaces.action import ExecuteCode

from support import Wire
from tidybot_exec.execution import keep_out
from tidybot_exec.execution.world_watch import WorldWatch, collision_line, moved_lines

R = ExecuteCode.Result
STACK_CAMERAS = True          # the node reads the simulator's world through its cameras
STACK_PARAMS = {"require_lease": False, "camera_rate_hz": 10.0, "camera_budget_mb": 1}


def _world(objects: dict[str, tuple[float, float, float, float]], collisions=()) -> dict:
    """A snapshot: each object at (x, y, z) turned by yaw."""
    out = []
    for name, (x, y, z, yaw) in objects.items():
        c, s = np.cos(yaw), np.sin(yaw)
        pose = np.array([[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, z], [0, 0, 0, 1.0]])
        out.append({"name": name, "size": [0.05] * 3, "rgba": [1, 0, 0, 1], "pose": pose.tolist()})
    return {"table": {"center": [0.75, 0.0], "size": [0.6, 0.8], "height": 0.45},
            "objects": out, "collisions": list(collisions)}


def test_moved_objects_beyond_a_centimetre_or_a_tenth_of_a_radian():
    before = _world({"cube": (0.6, 0.0, 0.475, 0.0), "block": (0.62, -0.25, 0.48, 0.3),
                     "cup": (0.7, 0.2, 0.5, 0.0)})
    after = _world({"cube": (0.6, 0.3, 0.475, 0.0), "block": (0.62, -0.25, 0.48, 0.45),
                    "cup": (0.705, 0.2, 0.5, 0.05)})
    assert moved_lines(before, after) == [
        "cube moved 0.300 m, turned 0.00 rad, to [0.600, 0.300, 0.475]",
        "block moved 0.000 m, turned 0.15 rad, to [0.620, -0.250, 0.480]"]


class ScriptedWorld:
    """A world that answers snapshots in turn (the last one from then on), counting asks."""

    def __init__(self, *snapshots: dict | None) -> None:
        self.snapshots, self.asked = list(snapshots), threading.Event()

    def __call__(self, timeout_s: float) -> dict | None:
        self.asked.set()
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]


def test_the_first_collision_after_the_start_stops_the_code_once_and_all_are_reported():
    started = 100.0
    old = {"link": "panda_hand", "body": "table", "depth": 0.01, "at": 99.0}   # an earlier run's
    hit = {"link": "left_finger", "body": "table", "depth": 0.004, "at": 101.25}
    again = {"link": "right_finger", "body": "table", "depth": 0.002, "at": 101.3}
    world = ScriptedWorld(_world({"cube": (0.6, 0, 0.475, 0)}, [old]),
                          _world({"cube": (0.6, 0, 0.475, 0)}, [old, hit]),
                          _world({"cube": (0.6, 0.1, 0.475, 0)}, [old, hit, again]))
    told: list[str] = []
    stopped = threading.Event()
    watch = WorldWatch(world, started, lambda line: (told.append(line), stopped.set()))
    assert stopped.wait(10), "the collision did not stop the code"
    collisions, moved = watch.finish()
    assert told == ["left_finger hit table at t=1.25 s, 0.004 m deep"]
    assert collisions == [told[0], collision_line(again, started)]
    assert moved == ["cube moved 0.100 m, turned 0.00 rad, to [0.600, 0.100, 0.475]"]


def test_the_world_a_dry_run_left_is_taken_over_the_last_look():
    world = ScriptedWorld(_world({"cube": (0.6, 0, 0.475, 0)}))
    watch = WorldWatch(world, 0.0, lambda line: pytest.fail(line))
    assert world.asked.wait(10)
    collisions, moved = watch.finish(_world({"cube": (0.9, 0, 0.2, 0)}))
    assert collisions == [] and moved[0].startswith("cube moved 0.4")


def test_hardware_has_no_world_and_nothing_is_reported():
    world = ScriptedWorld(None)
    watch = WorldWatch(world, 0.0, lambda line: pytest.fail(line))
    assert world.asked.wait(10)
    assert watch.finish() == ([], [])


INTO_THE_TABLE = ("from tidybot_sdk import arm\nprint('moving', flush=True)\n"
                  "arm.move_to_pose(x=0.60, y=0.25, z=0.025)\nprint('REACHED')\n")


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry"])
def test_the_hand_ordered_into_the_table_is_refused_before_anything_moves(stack, dry_run):
    """keep_out:=auto on the simulator: the scene's table is kept out. The SDK refuses
    the move into it (the issue's first finding: it printed REACHED), nothing moves."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        q0 = wire.state("arm")["q"]
        status, result = client.run(INTO_THE_TABLE, dry_run=dry_run)
        assert result.status == R.STATUS_FAILED and "REACHED" not in result.stdout
        assert "would hit table" in result.error, result.error
        assert max(abs(a - b) for a, b in zip(wire.state("arm")["q"], q0)) < 1e-3
        assert list(result.collisions) == [] and list(result.moved_objects) == []
    finally:
        wire.close()


def test_a_patched_sdk_streaming_into_the_table_is_stopped_by_the_guard(stack):
    """Code that takes the SDK's keep-out check away: the guard refuses its targets before
    the arm comes within the margin, judged by the simulator's own arm (the fingertips,
    at the end effector's height, stay above the table top at z = 0.05)."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        status, result = client.run(
            "from tidybot_sdk import arm, collision\narm._kept_out = collision.KeepOut()\n"
            "arm.move_to_pose(x=0.55, y=0.0, z=0.2)\nprint('above', flush=True)\n"
            "arm.move_to_pose(x=0.55, y=0.0, z=0.025, timeout=2)\n")
        assert "above" in result.stdout, result.stderr
        assert result.status == R.STATUS_FAILED
        assert "safety guard refused" in result.error and "would hit table" in result.error
        assert wire.state("arm")["O_T_EE"][14] > 0.05 + 0.005
    finally:
        client.run("from tidybot_sdk import arm\narm.go_home()\n")
        wire.close()


SWEEP = """\
import numpy as np
from tidybot_sdk import arm, sensors

def red_centre():
    r, g, b = np.moveaxis(sensors.get_image('base').astype(int), -1, 0)
    v, u = np.nonzero((r > 100) & (g < 0.4 * r) & (b < 0.4 * r))
    return np.array([u.mean(), v.mean()])

before = red_centre()
arm.move_to_pose(x=0.5, y=-0.12, z=0.09)
arm.move_to_pose(x=0.5, y=0.08, z=0.09)
print('the camera saw the cube move', round(float(np.linalg.norm(red_centre() - before))), 'px')
arm.go_home()
"""


def test_a_sweep_pushes_the_cube_and_a_dry_run_says_so(stack):
    """A dry run on the physical twin: the hand sweeps through the cube's place at its
    height and pushes it; moved_objects names the cube (moved toward +y), the base camera
    saw it move, and pushing an object is no collision."""
    _, client = stack
    status, result = client.run(SWEEP, dry_run=True, timeout_s=60)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    assert list(result.collisions) == []
    (moved,) = [line for line in result.moved_objects if line.startswith("cube ")]
    to = [float(v) for v in moved.split("to [")[1].rstrip("]").split(",")]
    assert to[1] > 0.08, moved                       # pushed along +y, off its place at y = 0
    pixels = int(result.stdout.split("move ")[1].split()[0])
    assert pixels > 10, result.stdout


def test_keep_out_auto_takes_the_simulator_table_and_files_are_checked(tmp_path):
    boxes, said = keep_out.resolve("auto", lambda: _world({}))
    assert [(b.name, b.center, b.size) for b in boxes] == [
        ("table", (0.75, 0.0, 0.225), (0.6, 0.8, 0.45))] and "table" in said
    assert keep_out.resolve("auto", lambda: None)[0] == []
    assert keep_out.resolve("", lambda: pytest.fail("not asked"))[0] == []
    lab = tmp_path / "lab.yaml"
    lab.write_text("- {name: bench, center: [1.0, -1.0, 0.4], size: [2.0, 0.6, 0.8], yaw: 0.5}\n"
                   "- {name: wall, center: [0, 2.5, 1], size: [6, 0.1, 2]}\n")
    boxes, said = keep_out.resolve(str(lab), lambda: pytest.fail("not asked"))
    assert [b.name for b in boxes] == ["bench", "wall"] and boxes[0].yaw == 0.5
    for text, why in (("name: bench\n", "expected a list of boxes"),
                      ("- {name: a, center: [0, 0], size: [1, 1, 1]}\n", "3 finite centre"),
                      ("- {name: a, center: [0, 0, 0], size: [1, -1, 1]}\n", "positive extents"),
                      ("- {center: [0, 0, 0], size: [1, 1, 1]}\n", "needs name"),
                      ("- {name: a, center: [0, 0, 0], size: [1, 1, 1]}\n"
                       "- {name: a, center: [1, 0, 0], size: [1, 1, 1]}\n", "unique"),
                      ("- [1, 2]\n", "must be a box mapping")):
        lab.write_text(text)
        with pytest.raises(ValueError, match=why):
            keep_out.resolve(str(lab), lambda: None)
    with pytest.raises(ValueError, match="cannot read it"):
        keep_out.resolve(str(tmp_path / "missing.yaml"), lambda: None)


def test_tidybot_run_prints_what_a_run_did_to_its_world():
    from tidybot_exec.clients.run_cli import result_json, world_lines

    result = R(status=R.STATUS_FAILED, error="collision: panda_hand hit table at t=1.00 s, "
               "0.001 m deep", collisions=["panda_hand hit table at t=1.00 s, 0.001 m deep"],
               moved_objects=["cube moved 0.100 m, turned 0.00 rad, to [0.6, 0.1, 0.475]"])
    assert world_lines(result) == (
        "tidybot-run: collision: panda_hand hit table at t=1.00 s, 0.001 m deep\n"
        "tidybot-run: moved: cube moved 0.100 m, turned 0.00 rad, to [0.6, 0.1, 0.475]\n")
    assert world_lines(R()) == ""
    as_json = json.loads(result_json(result))
    assert (as_json["collisions"], as_json["moved_objects"]) == (
        list(result.collisions), list(result.moved_objects))


def test_both_command_lines_ask_for_the_parts_they_name_and_refuse_unknown_ones(capsys):
    """``--resources`` of tidybot-run and tidybot-mcp: checked where it is typed (a typo
    must not become a lease on the whole robot); none: the whole robot."""
    from tidybot_exec.clients.mcp import server
    from tidybot_exec.clients import run_cli

    token = ["--http", "8000", "--token-file", "t"]
    assert run_cli.parse_args(["--resources", "base,arm", "-c", "x"]).resources == ("arm", "base")
    assert server.parse_args(["--resources", "gripper", *token]).resources == ("gripper",)
    assert run_cli.parse_args(["-c", "x"]).resources == ()
    for parse, extra in ((run_cli.parse_args, ["-c", "x"]), (server.parse_args, token)):
        with pytest.raises(SystemExit):
            parse(["--resources", "arm,legs", *extra])
        assert "unknown resource 'legs'" in capsys.readouterr().err
