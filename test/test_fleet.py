"""A fleet on one machine: two robots, each a simulator and a node in its own namespace,
driven at once from one client node (as tidybot_fleet.launch.py starts them; the launch
file's plan is checked in test_launch_plan.py)."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState

from support import Stack, wait_until
from tidybot_exec.clients.client import TidybotClient

ROBOTS = ("robot1", "robot2")
# robot1 moves its first joint while robot2 prints; each prints its own name
MOVE = ("import time\nfrom tidybot_sdk import arm, sensors\nprint('robot1 starts', flush=True)\n"
        "q = sensors.get_arm_joints()\nq[0] += 0.3\narm.move_joints(q, duration=1.5)\n"
        "print('robot1 moved', flush=True)\n")
PRINT = "import time\nfor i in range(5):\n    print('robot2 line', i, flush=True)\n    time.sleep(0.2)\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two stacks sharing one history_dir, as two robots of one lab would."""
    base = tmp_path_factory.mktemp("fleet")
    stacks = {}
    try:
        for name in ROBOTS:
            stacks[name] = Stack(base, base / "history", name=name, namespace=name)
        yield stacks
    finally:
        for stack in stacks.values():
            stack.stop()


def test_two_robots_two_leases_two_goals_at_once_nothing_crosses(fleet, ros, record):
    clients = {name: TidybotClient(ros.node, namespace=name) for name in ROBOTS}
    joints = {name: record(JointState, f"/{name}/joint_states") for name in ROBOTS}
    odom = record(Odometry, "/robot2/base/odom")
    diagnostics = record(DiagnosticArray, "/diagnostics")
    try:
        for name, client in clients.items():
            assert client.wait_for_server(30), f"{name} is not up"
            client.acquire(f"agent-{name}")
        start_q2 = np.array(joints["robot2"].latest().position[:7])
        start_q1 = np.array(joints["robot1"].latest().position[:7])
        feedback: dict[str, list[str]] = {name: [] for name in ROBOTS}
        runs = {name: clients[name].execute(
                    code, label=f"{verb} {name}",
                    feedback_callback=lambda fb, name=name: feedback[name].append(fb.text))
                for name, code, verb in (("robot1", MOVE, "move"), ("robot2", PRINT, "print"))}

        def running() -> bool:
            return all(c.status()[0] is not None and c.status()[0].state == "running"
                       for c in clients.values())
        wait_until(running, 30, "both robots to run at once")
        results = {name: run.result(60) for name, run in runs.items()}
        for name in ROBOTS:           # each client saw its own robot's output only
            lines = "".join(feedback[name]).splitlines()
            assert lines and all(line.startswith(name) for line in lines), (name, lines)
        assert all(r.status == 0 for r in results.values()), results
        assert results["robot1"].stdout == "robot1 starts\nrobot1 moved\n"
        assert results["robot2"].stdout == "".join(f"robot2 line {i}\n" for i in range(5))
        assert results["robot1"].execution_id != results["robot2"].execution_id
        # state: robot1's arm moved, robot2's did not
        # (the recorded topic may lag the result under load: wait for the arrival it shows)
        wait_until(lambda: abs(joints["robot1"].latest().position[0] - start_q1[0] - 0.3)
                   < 0.02, 15, "robot1's joint_states to show its arm 0.3 rad on")
        end_q2 = np.array(joints["robot2"].latest().position[:7])
        assert np.allclose(end_q2, start_q2, atol=1e-3)
        # frames carry the robot's namespace
        assert odom.latest().header.frame_id == "robot2/odom"
        assert odom.latest().child_frame_id == "robot2/base_link"
        # the shared /diagnostics: each robot's entries carry its namespace
        names = {s.name for m in diagnostics.since(0) for s in m.status}
        assert {"robot1/tidybot_exec: arm backend", "robot2/tidybot_exec: arm backend",
                "robot1/tidybot_exec: executor", "robot2/tidybot_exec: executor"} <= names, names
        # history: each robot lists only its own run, though both share history_dir
        for name, client in clients.items():
            labels = [r.label for r in client.history(10)]
            assert labels == [f"{'move' if name == 'robot1' else 'print'} {name}"], (name, labels)
    finally:
        for client in clients.values():
            client.destroy()


def test_each_robot_keeps_its_own_skill_store(fleet, ros):
    """Beside each robot's history: a skill saved on robot1 is neither listed nor importable
    on robot2, though both share history_dir."""
    clients = {name: TidybotClient(ros.node, namespace=name) for name in ROBOTS}
    try:
        for name, client in clients.items():
            assert client.wait_for_server(30), f"{name} is not up"
            client.acquire(f"skills-{name}")
        saved = clients["robot1"].save_skill("only_here", "def only_here():\n    return 1\n")
        assert saved.success, saved.message
        assert [s.name for s in clients["robot1"].list_skills("only_here")] == ["only_here"]
        assert clients["robot2"].list_skills("only_here") == []
        result = clients["robot2"].execute("from tidybot_skills import only_here\n").result(60)
        assert "no skill named 'only_here'" in result.error, result.error
    finally:
        for client in clients.values():
            client.destroy()
