"""Hostile and careless code, on the real node and simulator: containment holds.

Each case is what a script can try; each is judged from outside (the simulator's own state
and counters, the host's files and processes), never on what the code printed alone. In
every case the node keeps serving and the result says what happened. Probes aim only at
this stack's own ports and files. (Output floods, os._exit, setsid/double forks, ignored
signals and memory bombs are in test_execute_code.py.)
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from tidybot_interfaces.action import ExecuteCode

from support import LEASE_FREE, ROOT, Wire, wait_until

R = ExecuteCode.Result
STACK_PARAMS = LEASE_FREE         # child_disk_mb 32 (child_max_processes 64: the default)
HOME_Q = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def still_serving(client) -> None:
    _, result = client.run("print('still serving')")
    assert result.status == R.STATUS_SUCCEEDED and result.stdout == "still serving\n"


def ports_of(stack) -> list[int]:
    c = stack.config
    return [*c.arm_ports, *c.gripper_ports, *c.base_ports, stack.control_port]


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_no_backend_port_is_reachable(stack, dry_run):
    sim_stack, client = stack
    before = sim_stack.control(cmd="stats")["received"]
    code = ("import json, socket\nresults = {}\n"
            f"for port in {ports_of(sim_stack)}:\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
            "        results[port] = 'connected'\n"
            "    except OSError as exc:\n"
            "        results[port] = type(exc).__name__\n"
            "print(json.dumps(results))\n")
    _, result = client.run(code, dry_run=dry_run)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    outcomes = json.loads(result.stdout.splitlines()[-1])
    assert "connected" not in outcomes.values(), outcomes
    after = sim_stack.control(cmd="stats")["received"]
    assert after == before                     # the robot received nothing
    still_serving(client)


def test_code_cannot_join_the_ros_graph(stack, ros):
    _, client = stack
    run = client.send(
        "import time\n"
        "try:\n"
        "    import rclpy\n"
        "    rclpy.init()\n"
        "    node = rclpy.create_node('intruder')\n"
        "    print('node made', flush=True)\n"
        "except Exception as exc:\n"
        "    print('no ROS:', type(exc).__name__, flush=True)\n"
        "time.sleep(4)\n", timeout_s=60.0)
    wait_until(lambda: run.feedback, 60, "the code to try")
    seen = []
    wait_until(lambda: seen.append(ros.node.get_node_names()) or len(seen) > 40, 10, "samples")
    _, result = run.result(60)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    assert not any("intruder" in names for names in seen)
    still_serving(client)


class ArmWatch:
    """Every arm state the simulator publishes while a probe runs."""

    def __init__(self, wire: Wire) -> None:
        self.wire, self.states, self._stop = wire, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.states.append(self.wire.state("arm"))

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(5)
        return self.states


PATCHED = ("import tidybot_sdk.limits as L\n"
           "for name in dir(L.SafetyLimits):\n"
           "    if name.startswith('check_'):\n"
           "        setattr(L.SafetyLimits, name, lambda *a, **k: None)\n"
           "from tidybot_sdk import arm\n")


def run_patched(stack, motion: str):
    """From home, run ``motion`` with every SDK limit check patched out; returns the result
    and every arm state the simulator published meanwhile. The arm must end up holding."""
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        assert client.run("from tidybot_sdk import arm\narm.go_home()")[1].status == 0
        watch = ArmWatch(wire)
        _, result = client.run(PATCHED + motion, timeout=120)
        states = watch.stop()
        wire.arm_holding()
    finally:
        wire.close()
    still_serving(client)
    return result, states


def test_patched_sdk_limits_cannot_drive_below_the_workspace_floor(stack):
    result, states = run_patched(stack, "arm.move_to_pose(z=-0.10, timeout=3)\n")
    lowest = min(np.asarray(s["O_T_EE"]).reshape(4, 4).T[2, 3] for s in states)
    # The floor bounds the targets. The hand may pass the last target admitted by its
    # braking distance when the stream falls silent at speed: the guard thread not scheduled
    # for more than the arm's 100 ms hold-off (CI under load: 1.3 mm; 0.2-0.9 mm above the
    # floor otherwise). A real arm brakes the same way.
    assert lowest >= 0.02 - 3e-3, f"the end effector went down to z={lowest:.4f}"
    assert result.status == R.STATUS_FAILED
    assert "the safety guard refused" in result.error and "z=" in result.error


def test_patched_sdk_limits_cannot_exceed_the_joint_speed_cap(stack):
    target = list(HOME_Q)
    target[0] += 1.0
    result, states = run_patched(stack, f"arm.move_joints({target}, duration=0.4, timeout=3)\n")
    fastest = max(abs(s["dq"][0]) for s in states)
    assert fastest <= 1.0 * 1.35, f"joint 1 reached {fastest:.2f} rad/s (cap 1.0)"
    assert result.status == R.STATUS_FAILED and "joint speed cap" in result.error


def test_a_raw_protocol_command_outside_the_envelope_is_refused(stack):
    """Straight to the guard's socket with the SDK's own transport: same refusal."""
    sim_stack, client = stack
    before = sim_stack.control(cmd="stats")["received"]["gripper"].get("MOVE", 0)
    code = ("import json, os\n"
            "from tidybot_sdk.transport import RequestClient\n"
            "addr = json.loads(os.environ['TIDYBOT_SDK_CONFIG'])['gripper']['cmd']\n"
            "reply = RequestClient(addr, 'gripper').request({'msg_type': 12, 'position': 255, "
            "'speed': 255, 'force': 255})\n"
            "print(reply.get('safety_error'))\n")
    _, result = client.run(code)
    assert "gripper force 255 is above the cap" in result.stdout
    assert sim_stack.control(cmd="stats")["received"]["gripper"].get("MOVE", 0) == before
    assert result.status == R.STATUS_FAILED and "the safety guard refused 1 command" in result.error


def test_code_cannot_see_or_kill_the_node_or_the_simulator(stack):
    sim_stack, client = stack
    code = ("import os, signal\nfound = []\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
            "    except OSError:\n"
            "        continue\n"
            "    if b'tidybot-exec' in cmd or b'tidybot_exec.sim' in cmd:\n"
            "        found.append(int(pid))\n"
            "        os.kill(int(pid), signal.SIGKILL)\n"
            "print('found', found, 'of', len([p for p in os.listdir('/proc') if p.isdigit()]))\n")
    _, result = client.run(code)
    assert result.status == R.STATUS_SUCCEEDED and "found [] of" in result.stdout, result.stdout
    assert sim_stack.node.alive() and sim_stack.sim.alive()
    still_serving(client)


def test_code_cannot_read_or_write_the_history_or_the_package(stack):
    sim_stack, client = stack
    client.run("print('a record to protect')")
    history = sim_stack.params["history_dir"]
    source = ROOT / "tidybot_exec" / "guard" / "relay.py"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    db = f"{history}/history.sqlite3"
    code = ("import os\n"
            f"for path, mode in (({db!r}, 'rb'), ({db!r}, 'ab'), ({str(source)!r}, 'a'),\n"
            f"                   ({str(Path.home() / '.tidybot-probe')!r}, 'a')):\n"
            "    try:\n"
            "        open(path, mode).close()\n"
            "        print('opened', path, mode)\n"
            "    except OSError as exc:\n"
            "        print('refused', mode, type(exc).__name__)\n")
    _, result = client.run(code)
    assert "opened" not in result.stdout, result.stdout
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    assert not (Path.home() / ".tidybot-probe").exists()
    still_serving(client)


def test_a_fork_flood_is_capped(stack):
    _, client = stack
    code = ("import os, time\nstarted = 0\n"
            "for _ in range(400):\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "            os._exit(0)\n"
            "        started += 1\n"
            "    except OSError as exc:\n"
            "        print('refused after', started, type(exc).__name__, flush=True)\n"
            "        break\n"
            "print('started', started, flush=True)\n")
    _, result = client.run(code, timeout_s=60.0)
    started = int(result.stdout.split("started")[-1].split()[0])
    assert started < 64 and "refused after" in result.stdout, result.stdout
    still_serving(client)


def test_a_disk_fill_stops_at_the_sandbox_size(stack):
    _, client = stack
    code = ("import os\nwritten = 0\nblock = b'x' * (1024 * 1024)\n"
            "try:\n"
            "    for i in range(4096):\n"
            "        with open(f'fill{i}', 'wb') as f:\n"
            "            for _ in range(16):\n"
            "                f.write(block)\n"
            "                written += 1\n"
            "except OSError as exc:\n"
            "    print('stopped', type(exc).__name__)\n"
            "print('MiB', written)\n")
    _, result = client.run(code, timeout_s=120.0)
    written = int(result.stdout.split("MiB")[-1])
    assert written <= 32 and "stopped OSError" in result.stdout, result.stdout
    still_serving(client)
