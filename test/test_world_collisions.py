"""A collision on the physical twin, with keep_out:='' (only the floor and the robot kept
out, so the hand can be driven into the table): the code is stopped, FAILED with the
collision named, the hand stopped at the table top, a skill save fails on it."""
from __future__ import annotations

from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.srv import SaveSkill

from support import Wire, wait_until

R = ExecuteCode.Result
STACK_CAMERAS = True          # the node reads the simulator's world through its cameras
STACK_PARAMS = {"require_lease": False, "keep_out": "''"}     # -p keep_out:='' (none)
TABLE_TOP = 0.05              # the default table's top, arm base frame (m)
INTO_THE_TABLE = ("from tidybot_sdk import arm\nprint('moving', flush=True)\n"
                  "arm.move_to_pose(x=0.55, y=0.0, z=0.025)\nprint('REACHED')\n")


def assert_stopped_by_a_collision(result) -> str:
    """The result of code that drove the hand into the table; its first collision line."""
    assert result.status == R.STATUS_FAILED and "REACHED" not in result.stdout, result.stdout
    assert result.collisions, result.error
    first = result.collisions[0]
    assert " hit table at t=" in first and first.endswith(" m deep"), first
    assert result.error.startswith(f"collision: {first}"), result.error
    depth = float(first.split(", ")[-1].split()[0])
    assert depth < 0.005, first                   # the arm stopped where it touched
    return first


def test_a_dry_run_into_the_table_stops_at_it_and_names_the_collision(stack):
    _, client = stack
    status, result = client.run(INTO_THE_TABLE, dry_run=True, timeout_s=60)
    assert "moving" in result.stdout, result.stderr
    assert_stopped_by_a_collision(result)


def test_a_real_run_into_the_table_stops_holds_and_the_arm_recovers_by_a_restart(stack):
    """On the node's own simulator: the arm stops in a reflex where the fingers touched
    (the simulator's own state: the hand not below the table top), the code is stopped,
    and the arm server's restart lets it move out."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        status, result = client.run(INTO_THE_TABLE, timeout_s=60)
        assert_stopped_by_a_collision(result)
        last = wire.states["arm"].last()              # (a reflex: its state went silent)
        assert "hit table" in last["last_error"], last["last_error"]
        assert last["O_T_EE"][14] > TABLE_TOP - 0.005
        sim_stack.control(cmd="restart", server="arm")
        wait_until(lambda: wire.state("arm") is not None, 15, "the restarted arm's state")
        status, result = client.run("from tidybot_sdk import arm\narm.move_delta(dz=0.1)\n"
                                    "arm.go_home()\n")
        assert result.status == R.STATUS_SUCCEEDED, result.stderr
        assert list(result.collisions) == []
    finally:
        wire.close()


def test_a_skill_whose_dry_run_collides_is_not_saved(stack):
    _, client = stack
    code = ("from tidybot_sdk import arm\n\n\ndef press():\n    \"\"\"Press on the table.\"\"\"\n"
            "    arm.move_to_pose(x=0.55, y=0.0, z=0.025)\n\n\n"
            "if __name__ == '__main__':\n    press()\n")
    reply = client.call("skills/save", SaveSkill.Request(name="press", code=code, dry_runs=1),
                        timeout=90)
    assert not reply.success and reply.dry_runs_passed == 0, reply.message
    assert "FAILED: collision: " in reply.message and " hit table at t=" in reply.message
