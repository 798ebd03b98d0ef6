"""execute_code on a real node process, with a real rclpy action client and the simulator."""
from __future__ import annotations

import os
import re
import threading
import time
import uuid

from action_msgs.msg import GoalStatus
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionStatus
from tidybot_interfaces.srv import GetHistory, ResetEstop, StopExecution

from support import LEASE_FREE, Wire, host_pids_with_argv, host_workdir, wait_until

R = ExecuteCode.Result
STACK_PARAMS = LEASE_FREE         # max_output_bytes 65536, child_address_space_mb 1024


def test_success_with_output(stack):
    _, client = stack
    status, result = client.run("print('hello')\nprint(6 * 7)\n", label="hi")
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert (result.status, result.exit_code, result.error) == (R.STATUS_SUCCEEDED, 0, "")
    assert result.stdout == "hello\n42\n" and result.stderr == ""
    assert re.fullmatch(r"[0-9a-f]{12}", result.execution_id)
    assert 0 < result.duration_s < 30


def test_exception_fails_with_the_users_line(stack):
    _, client = stack
    status, result = client.run("x = 1\n\ndef f():\n    return {}['k']\n\nf()\n")
    assert status == GoalStatus.STATUS_ABORTED
    assert result.status == R.STATUS_FAILED and result.exit_code == 1
    assert result.error == "KeyError: 'k' (line 4)"
    assert 'File "<submitted>", line 4, in f' in result.stderr
    assert "code_process.py" not in result.stderr


def test_lint_warnings_reach_feedback_and_result_without_blocking(stack):
    _, client = stack
    run = client.send("import subprocess\nprint('ran anyway')\n")
    _, result = run.result()
    warning = "[tidybot] warning: line 1: importing subprocess starts other programs\n"
    assert result.status == R.STATUS_SUCCEEDED and result.stdout == "ran anyway\n"
    assert result.stderr == warning
    assert run.feedback[0].stream == "stderr" and run.feedback[0].text == warning


def test_syntax_error_is_rejected_with_line_and_column(stack):
    _, client = stack
    status, result = client.run("print('ok')\nif True\n    pass\n")
    assert status == GoalStatus.STATUS_ABORTED
    assert result.status == R.STATUS_REJECTED
    assert result.error.startswith("SyntaxError at line 2, column 8")


def test_too_large_or_a_nonsense_timeout_is_rejected(stack):
    _, client = stack
    _, result = client.run("x = 1\n" + "#" * 300000)
    assert result.status == R.STATUS_REJECTED and "above the limit of 262144 bytes" in result.error
    # 5e-324 is what timeout_s=600 (an int) becomes when field checks are off
    for timeout, shown in ((5e-324, "4.94066e-324"), (float("nan"), "nan")):
        _, result = client.run("print(1)", timeout_s=timeout)
        assert result.status == R.STATUS_REJECTED
        assert result.error == f"timeout_s must be 0 (the default) or at least 0.1s, got {shown}"


def test_exit_code_of_os_exit(stack):
    _, client = stack
    _, result = client.run("import os\nprint('bye', flush=True)\nos._exit(3)\n")
    assert (result.status, result.exit_code, result.error) == (R.STATUS_FAILED, 3, "exited with code 3")
    assert result.stdout == "bye\n"


def test_endless_loop_times_out(stack):
    _, client = stack
    start = time.monotonic()
    status, result = client.run("while True:\n    pass\n", timeout_s=1.5)
    assert status == GoalStatus.STATUS_ABORTED
    assert result.status == R.STATUS_TIMEOUT and result.error == "timed out after 1.5s"
    assert time.monotonic() - start < 15


def test_feedback_is_live_and_gapless(stack):
    _, client = stack
    assert "PYTHONUNBUFFERED" not in os.environ
    code = ("import sys, time\n"
            "for i in range(5):\n    print('line', i)\n    time.sleep(0.4)\n"
            "print('err', file=sys.stderr)\n")
    run = client.send(code)
    status, result = run.result()
    assert result.status == R.STATUS_SUCCEEDED
    # the first line arrived while the child still had ~1.6 s of sleeping left
    assert run.feedback and run.feedback[0].text == "line 0\n"
    assert run.feedback_at[0] < run.feedback_at[-1] - 1.0
    assert [f.seq for f in run.feedback] == list(range(len(run.feedback)))
    assert all(f.execution_id == result.execution_id for f in run.feedback)
    assert all(f.text.endswith("\n") for f in run.feedback)
    assert run.stdout() == "".join(f"line {i}\n" for i in range(5))
    assert [f.text for f in run.feedback if f.stream == "stderr"] == ["err\n"]
    elapsed = [f.elapsed_s for f in run.feedback]
    assert elapsed == sorted(elapsed)


def node_rss_kib(stack) -> int:
    status = open(f"/proc/{stack[0].node.popen.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def test_a_flood_of_output_is_bounded_to_head_and_tail(stack):
    _, client = stack
    before = node_rss_kib(stack)
    run = client.send("for i in range(100000):\n    print('line', i)\n")
    status, result = run.result(120)
    assert result.status == R.STATUS_SUCCEEDED and result.truncated
    assert result.stdout.startswith("line 0\nline 1\n")
    assert result.stdout.endswith("line 99999\n")
    assert "bytes omitted" in result.stdout
    assert len(result.stdout.encode()) < 65536 + 200
    assert [f.seq for f in run.feedback] == list(range(len(run.feedback)))
    assert node_rss_kib(stack) - before < 50 * 1024


def test_client_cancel(stack):
    _, client = stack
    run = client.send("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    wait_until(lambda: run.feedback, 30, "the code to start")
    run.cancel()
    status, result = run.result(30)
    assert status == GoalStatus.STATUS_CANCELED
    assert result.status == R.STATUS_CANCELED and result.error == "canceled by the client"
    assert result.exit_code == -2      # KeyboardInterrupt from the SIGINT


def test_code_ignoring_signals_is_killed_with_its_escaped_grandchildren(stack):
    _, client = stack
    token = f"{uuid.uuid4().int % 10 ** 9}.5"
    code = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"sleeper = ['sleep', '{token}']\n"
        "if os.fork() == 0:\n"
        "    os.execvp('sleep', sleeper)\n"
        "if os.fork() == 0:\n"                      # double fork + setsid: a daemon
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execvp('sleep', sleeper)\n"
        "    os._exit(0)\n"
        "print('forked', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.1)\n")
    run = client.send(code)
    wait_until(lambda: "forked" in run.stdout() and len(host_pids_with_argv(token)) == 2, 30,
               "the two sleepers")
    run.cancel()
    status, result = run.result(30)
    assert result.status == R.STATUS_CANCELED and result.exit_code == -9
    assert host_pids_with_argv(token) == [], "a grandchild survived the cancel"


def test_memory_bomb_is_contained(stack):
    _, client = stack
    _, result = client.run("x = bytearray(8 * 1024 ** 3)\n")
    assert result.status == R.STATUS_FAILED and result.error.startswith("MemoryError")
    _, result = client.run("print('still serving')")
    assert result.stdout == "still serving\n"


def test_busy_and_simultaneous_goals_yield_one_run(stack):
    _, client = stack
    runs = [client.send("import time\nprint('ran', flush=True)\ntime.sleep(1.5)\n")
            for _ in range(2)]
    results = [r.result(60)[1] for r in runs]
    statuses = sorted(r.status for r in results)
    assert statuses == [R.STATUS_SUCCEEDED, R.STATUS_REJECTED]
    rejected = next(r for r in results if r.status == R.STATUS_REJECTED)
    assert rejected.error.startswith("busy: execution ")
    assert sum(r.stdout.count("ran") for r in results) == 1


def test_status_topic_follows_the_execution(stack, ros):
    _, client = stack
    seen: list[ExecutionStatus] = []
    qos = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
    sub = ros.node.create_subscription(ExecutionStatus, "/execution/status",
                                       seen.append, qos)
    try:
        wait_until(lambda: seen, 10, "the latched status")
        run = client.send("import time\ntime.sleep(1.5)\n", label="watch me")
        wait_until(lambda: any(s.state == "running" and s.label == "watch me" for s in seen),
                   20, "a running status")
        _, result = run.result()
        wait_until(lambda: seen[-1].state == "idle"
                   and seen[-1].last_execution_id == result.execution_id, 10, "idle again")
        assert seen[-1].last_status == R.STATUS_SUCCEEDED
    finally:
        ros.node.destroy_subscription(sub)


def test_execution_stop_service_and_estop(stack):
    _, client = stack
    reply = client.call("execution/stop", StopExecution.Request())
    assert (reply.success, reply.message) == (False, "nothing is running")
    run = client.send("import time\nprint('x', flush=True)\ntime.sleep(60)\n")
    wait_until(lambda: run.feedback, 30, "the code to start")
    reply = client.call("execution/stop", StopExecution.Request())
    assert reply.success and reply.execution_id
    status, result = run.result(30)
    assert status == GoalStatus.STATUS_ABORTED     # not canceled by the client itself
    assert result.status == R.STATUS_CANCELED and result.error == "stopped via execution/stop"
    assert result.execution_id == reply.execution_id

    run = client.send("import time\nprint('x', flush=True)\ntime.sleep(60)\n")
    wait_until(lambda: run.feedback, 30, "the code to start")
    reply = client.call("estop", Trigger.Request())
    assert reply.success, reply.message
    _, result = run.result(30)
    assert result.status == R.STATUS_CANCELED and result.error == "emergency stop"
    assert client.run("print(1)")[1].error == "estopped: call estop/reset"     # latched
    assert client.call("estop/reset", ResetEstop.Request()).success
    assert client.run("print(1)")[1].status == R.STATUS_SUCCEEDED


def test_cancel_mid_motion_leaves_the_arm_holding(stack):
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        run = client.send(
            "from tidybot_sdk import arm\nprint('moving', flush=True)\n"
            "arm.move_joints([1.2, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=8)\n")
        wait_until(lambda: wire.state("arm")["q"][0] > 0.1, 30, "the arm to move")
        stops = sim_stack.control(cmd="stats")["received"]["arm"].get("STOP", 0)
        run.cancel()
        status, result = run.result(30)
        assert status == GoalStatus.STATUS_CANCELED, result.stderr
        assert sim_stack.control(cmd="stats")["received"]["arm"]["STOP"] >= stops + 1
        assert wire.arm_holding()["q"][0] < 1.1
    finally:
        wire.close()


def test_node_killed_mid_motion_the_code_stops_the_arm_and_nothing_survives(stack, ros):
    sim_stack, client = stack
    wire = Wire(sim_stack.config)
    try:
        # from home, so "the arm moves" below cannot be mistaken for where a test left it
        assert client.run("from tidybot_sdk import arm\narm.go_home()")[1].status == 0
        token = f"{uuid.uuid4().int % 10 ** 9}.5"
        run = client.send(
            "import os\n"
            f"if os.fork() == 0:\n    os.execvp('sleep', ['sleep', '{token}'])\n"
            "print('forked', flush=True)\n"
            "from tidybot_sdk import arm\n"
            "arm.move_joints([1.2, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=8)\n")
        wait_until(lambda: "forked" in run.stdout() and wire.state("arm")["q"][0] > 0.1, 30,
                   "the arm to move")
        workdir = host_workdir(run)
        assert len(host_pids_with_argv(token)) == 1
        stops = sim_stack.control(cmd="stats")["received"]["arm"].get("STOP", 0)
        sim_stack.node.popen.kill()                          # SIGKILL: no shutdown code runs
        sim_stack.node.wait(10)
        wait_until(lambda: not host_pids_with_argv(token), 10, "the grandchild to die")
        # the supervisor commands the hold itself: the guard died with the node
        wait_until(lambda: sim_stack.control(cmd="stats")["received"]["arm"].get("STOP", 0)
                   >= stops + 1, 10, "the supervisor's STOP to reach the arm")
        assert wire.arm_at_rest()["q"][0] < 1.1
        wait_until(lambda: not workdir.exists(), 10, "the supervisor to remove the workdir")
    finally:
        wire.close()
        sim_stack.start_node()
        serving_again(client)


def serving_again(client) -> None:
    """After a SIGKILL the dead server stays in discovery for a while, so wait_for_server
    can say yes before the new one has matched: retry a probe goal until one is answered."""
    client.wait_ready()
    for _ in range(12):
        run = client.send("pass")
        try:
            run.result(5)
            return
        except AssertionError:
            continue
    raise AssertionError("the restarted node never answered a goal")


def test_history_survives_a_node_restart(stack, ros):
    sim_stack, client = stack
    earlier = [client.run(f"print({i})")[1].execution_id for i in range(5)]
    _, result = client.run("print('remember me')", label="persistent")
    records = client.call("execution/history", GetHistory.Request(max_count=1)).records
    assert records[0].execution_id == result.execution_id
    sim_stack.node.stop()
    sim_stack.start_node()
    client.wait_ready()
    wait_until(lambda: ("tidybot_exec", "/") in ros.node.get_node_names_and_namespaces(), 30,
               "the restarted node")
    records = client.call("execution/history", GetHistory.Request(include_code=True),
                          timeout=30, retry=True).records       # a just restarted server
    ours = [r for r in records if r.execution_id == result.execution_id]
    assert ours and ours[0].label == "persistent" and ours[0].stdout_tail == "remember me\n"
    assert ours[0].status == R.STATUS_SUCCEEDED and ours[0].code == "print('remember me')"
    import hashlib
    assert ours[0].code_sha256 == hashlib.sha256(b"print('remember me')").hexdigest()
    assert {r.execution_id for r in records} >= set(earlier)     # the earlier ones too


def test_execute_callback_answers_concurrent_clients(stack):
    """Many quick goals from several threads: every one gets a result (none lost)."""
    _, client = stack
    results = []

    def one() -> None:
        results.append(client.run("print('q')", timeout=120)[1].status)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert len(results) == 6
    assert set(results) <= {R.STATUS_SUCCEEDED, R.STATUS_REJECTED}
    assert R.STATUS_SUCCEEDED in results
