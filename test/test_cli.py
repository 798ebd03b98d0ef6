"""tidybot-run end to end, the examples, and the TidybotClient lifecycle, against a real node
(leases required, the default) and the simulator."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from rclpy.task import Future

from support import ROOT, Proc, Wire, wait_until
from tidybot_exec.clients.client import TidybotClient, TidybotClientError

EXAMPLES = ROOT / "examples"


def tidybot_run(*args: str, stdin: str | None = None, timeout: float = 120):
    return subprocess.run(["tidybot-run", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args,code,stderr", [
    (("-c", "print('hi')"), 0, ""),
    (("-c", "x = 1\nraise ValueError('bad')"), 1, "failed: ValueError: bad (line 2)"),
    (("-c", "while True:\n    pass", "--timeout", "1"), 3, "timeout: timed out after 1s"),
    (("-c", "if True\n  pass"), 5, "rejected: SyntaxError at line 1"),
    (("-c", "print('hi')", "--dry-run"), 0, "[tidybot] dry run: a private simulated robot"),
    (("-c", "print(1)", "--lease-id", "forged"), 5, "rejected: invalid lease"),
])
def test_exit_codes_follow_the_status(stack, args, code, stderr):
    done = tidybot_run(*args)
    assert done.returncode == code, done.stderr
    assert stderr in done.stderr
    if code == 0:
        assert done.stdout == "hi\n"


def test_stdin_json_and_live_streams(stack):
    code = "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
    done = tidybot_run("-", "--json", "--label", "from stdin", stdin=code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"execution_id", "status", "status_code", "exit_code", "error",
                           "duration_s", "truncated", "stdout", "stderr", "collisions",
                           "moved_objects"}
    assert (result["status"], result["status_code"], result["stdout"], result["stderr"]) == (
        "succeeded", 0, "out\n", "err\n")
    assert "out\n" in done.stderr and "err\n" in done.stderr     # live output went to stderr
    history = json.loads(tidybot_run("--history", "1", "--json").stdout)
    assert history[0]["execution_id"] == result["execution_id"]
    assert history[0]["label"] == "from stdin"


def test_status_and_history_text(stack):
    tidybot_run("-c", "print(2)", "--label", "listed")
    done = tidybot_run("--history", "3")
    assert done.returncode == 0 and "listed" in done.stdout and "succeeded" in done.stdout
    status = tidybot_run("--status")
    assert status.returncode == 0 and "state: idle" in status.stdout
    assert "lease_held: False" in status.stdout


def test_describe_prints_the_sdk_manual_and_the_limits_in_force(stack):
    done = tidybot_run("--describe")
    assert done.returncode == 0, done.stderr
    manual = (ROOT / "docs" / "sdk.md").read_text()
    assert done.stdout.startswith(manual)
    limits = yaml.safe_load(done.stdout.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert limits["joint_speed"] == 1.0 and len(limits["joint_max"]) == 7
    assert "## Limits in force (tidybot_exec 0.1.0)" in done.stdout


def test_unreachable_server_and_missing_file(stack):
    done = tidybot_run("-c", "print(1)", "--namespace", "/nobody", "--wait-server", "1")
    assert done.returncode == 7 and "no tidybot_exec server" in done.stderr
    done = tidybot_run("--status", "--namespace", "/nobody", "--wait-server", "1")
    assert done.returncode == 7 and "no status received from the server within 1s" in done.stderr
    done = tidybot_run("does_not_exist.py")
    assert done.returncode == 2 and "no such file" in done.stderr


def test_held_lease_is_reported(stack):
    _, client = stack
    held = client.acquire("someone")
    try:
        done = tidybot_run("-c", "print(1)")
        assert done.returncode == 7 and "held by 'someone'" in done.stderr
    finally:
        client.release(held.lease_id)


def test_ctrl_c_cancels_and_the_arm_holds(stack, tmp_path):
    sim_stack, _ = stack
    wire = Wire(sim_stack.config)
    try:
        proc = Proc(["tidybot-run", "-c",
                     "from tidybot_sdk import arm\n"
                     "arm.move_joints([1.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=6)\n"],
                    tmp_path, "run")
        wait_until(lambda: wire.state("arm")["q"][0] > 0.1, 30, "the arm to move")
        proc.signal(signal.SIGINT)
        assert proc.wait(30) == 4, proc.describe()
        assert "canceling" in proc.stderr and "canceled: canceled by the client" in proc.stderr
        assert wire.arm_holding()["q"][0] < 0.95
        assert tidybot_run("-c", "from tidybot_sdk import arm\narm.go_home()").returncode == 0
    finally:
        wire.close()


def test_second_ctrl_c_leaves_at_once(stack, tmp_path):
    _, client = stack
    # A run left with a second Ctrl-C cannot release its lease: hold our own and release it
    # afterwards (which also stops the code), so the next tests find the lease free.
    lease = client.acquire("stubborn")
    code = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('stubborn', flush=True)\ntime.sleep(30)\n")
    try:
        proc = Proc(["tidybot-run", "-c", code, "--lease-id", lease.lease_id], tmp_path, "stubborn")
        proc.wait_for_output("stubborn", 30)
        proc.signal(signal.SIGINT)
        time.sleep(0.3)
        proc.signal(signal.SIGINT)
        assert proc.wait(10) == 130
    finally:
        client.release(lease.lease_id)      # stops the code: wait until it has ended
        client.wait_idle()


# what each example prints (error_handling.py: also the advice)
EXAMPLE_OUTPUT = {
    "simple_move.py": ["back home"], "pick_and_place.py": ["placed; base at"],
    "error_handling.py": ["the robot is fine after all that",
                          "refused: end-effector target z=-0.5000 m is outside the workspace box",
                          "gripper error: width= needs a calibrated gripper"],
    "base_square.py": ["corner 4"]}


@pytest.mark.parametrize("example", EXAMPLE_OUTPUT)
def test_examples_run_on_the_simulator(stack, example):
    done = tidybot_run(str(EXAMPLES / example), "--label", example, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in EXAMPLE_OUTPUT[example]:
        assert line in done.stdout


def test_two_agents_example_runs_side_by_side(stack):
    """examples/two_agents.py: a base agent and an arm agent, leases on their own parts, run at
    once and both succeed: their lines interleave, and the arm agent saw the base move."""
    done = subprocess.run([sys.executable, str(EXAMPLES / "two_agents.py")], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nav | corner 4" in done.stdout and "arm-agent | wave 5" in done.stdout
    # the code's own lines, in the order they arrived (not the status lines printed after)
    order = [line.split(" | ")[0].strip() for line in done.stdout.splitlines()
             if re.search(r"\| (corner \d|wave \d)", line)]
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches >= 2, f"the agents' output did not interleave:\n{done.stdout}"
    seen = set(re.findall(r"wave \d: the base is at (x=\S+ y=\S+)", done.stdout))
    assert len(seen) >= 2, f"the arm agent never saw the base move:\n{done.stdout}"


def lose_replies(action_client, method: str, count: int) -> list:
    """Fault injection on a real ActionClient: the request goes out, but the first ``count``
    replies never reach the caller (as a reply lost under load). Returns the lost futures."""
    real, lost = getattr(action_client, method), []

    def lossy(*args, **kwargs):
        future = real(*args, **kwargs)
        if len(lost) < count:
            lost.append(future)
            return Future()          # never completes
        return future
    setattr(action_client, method, lossy)
    return lost


def test_client_recovers_lost_goal_result_and_cancel_replies(stack, ros):
    client = TidybotClient(ros.node)
    assert client.wait_for_server(30)
    client.acquire("lossy")
    try:
        lose_replies(client._action.client, "send_goal_async", 1)
        lose_replies(client._action.client, "_get_result_async", 1)
        run = client.execute("print('once')")
        assert run.result(60).stdout == "once\n"
        assert run.recovered == ["goal acceptance", "result"]

        lose_replies(client._action.client, "_cancel_goal_async", 1)
        long = client.execute("import time\nprint('x', flush=True)\ntime.sleep(60)")
        wait_until(lambda: long.feedback(), 30, "output")
        long.cancel(30)
        assert long.result(30).status == 3
    finally:
        client.destroy()
    wait_until(lambda: not client.status()[1].held, 10, "the lease to be released")


def test_client_waits_for_the_servers_first_reply_and_asks_again(stack, ros):
    """wait_for_server returns once the server has answered (a new client's first replies can
    be lost to discovery); requests that may be repeated are sent again when unanswered."""
    client = TidybotClient(ros.node)
    try:
        handshake = lose_replies(client._renew, "call_async", 1)
        history = lose_replies(client._history, "call_async", 1)
        assert client.wait_for_server(30)
        assert len(handshake) == 1                 # the handshake's first try, then another
        assert client.history(1) is not None and len(history) == 1
        client.acquire("handshake")
        release = lose_replies(client._release, "call_async", 1)
        client.release()
        assert len(release) == 1
        wait_until(lambda: not client.status()[1].held, 10, "the lease to be released")
        again = lose_replies(client._renew, "call_async", 1)    # as after a server restart
        assert client.wait_for_server(30) and len(again) == 1
    finally:
        client.destroy()


def test_client_class_lifecycle(stack, ros):
    client = TidybotClient(ros.node)      # the module's node is spun by its own thread
    assert client.wait_for_server(30)
    token = client.acquire("client-test", ttl_s=2.0)
    assert len(token) >= 40
    run = client.execute("import time\nfor i in range(3):\n    print(i, flush=True)\n"
                         "    time.sleep(0.5)\n", label="lifecycle")
    got = []
    while not run.is_done():
        got += run.feedback()
        time.sleep(0.05)
    got += run.feedback()
    result = run.result(30)
    assert result.status == 0 and "".join(f.text for f in got) == "0\n1\n2\n"
    assert run.lost_feedback == 0 and run.action_status == 4   # GoalStatus SUCCEEDED
    time.sleep(3.0)                                   # longer than the ttl: kept alive
    assert client.renew() > 0.5
    long = client.execute("import time\nprint('x', flush=True)\ntime.sleep(30)")
    wait_until(lambda: long.feedback(), 30, "output")
    long.cancel()
    assert long.result(30).status == 3
    stop_reply = client.stop()
    assert not stop_reply.success and stop_reply.message == "nothing is running"
    assert client.history(2)[0].label == "" and client.history(2)[1].label == "lifecycle"
    execution, lease = client.status()
    assert execution.state == "idle" and lease.held and lease.holder == "client-test"
    client.release()
    with pytest.raises(TidybotClientError, match="renew refused"):
        client.renew()
    client.destroy()
