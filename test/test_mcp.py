"""tidybot-mcp end to end: the mcp client library drives the server over stdio (one server
process per test, as an MCP client starts it) and over streamable HTTP, against the real node
and simulator with leases required and cameras on. What these prove is the wiring: real
goals, services, topics, signals and transports. The server's logic on its own (the output
digest, cancels around acceptance, the idle lease, the Host/Origin checks, the schemas, the
jobs' answers) is tested against a fake client in test_mcp_units.py."""
from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import httpx2
import pytest
import yaml
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from PIL import Image as PILImage
from tidybot_interfaces.srv import ResetEstop

from support import ROOT, Proc, Wire, free_port, pid_alive, wait_until

STACK_CAMERAS = True
MOVE = ("from tidybot_sdk import arm\n"
        "arm.move_joints([1.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785], duration=6)\n")
SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
TOKEN_LIKE = re.compile(r"[0-9a-f]{64}")      # a lease token: secrets.token_hex(32)


def with_mcp(log_dir: Path, scenario: Callable[[Client], Awaitable[Any]], *args: str
             ) -> tuple[Any, str]:
    """Run ``scenario`` against a tidybot-mcp that an MCP client started over stdio; returns
    what it returned and the server's stderr. The server has exited (its stdin closed) by
    the time this returns, whatever the scenario did."""
    err = log_dir / "tidybot-mcp.err"

    async def main() -> Any:
        with open(err, "w") as errlog:
            params = StdioServerParameters(command="tidybot-mcp", args=list(args),
                                           env=dict(os.environ), cwd=ROOT)
            async with Client(stdio_client(params, errlog=errlog),
                              read_timeout_seconds=180) as client:
                return await scenario(client)
    return anyio.run(main), err.read_text()


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def ok(result: CallToolResult) -> dict:
    assert not result.is_error, text(result)
    return result.structured_content


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """wait_until for a scenario: in a worker thread, so the client's tasks keep running."""
    return await anyio.to_thread.run_sync(lambda: wait_until(predicate, timeout, what))


class Progress(list):
    """Progress notifications' messages, in order."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.append(message)


def test_describe_robot_gives_the_manual_the_limits_the_skills_and_the_cameras(stack, tmp_path):
    async def scenario(client):
        async def described():      # camera topics appear once the node has the camera list
            while not (d := ok(await client.call_tool("describe_robot")))["cameras"]:
                await anyio.sleep(0.2)
            return d
        with anyio.fail_after(60):
            return await described()
    d, _ = with_mcp(tmp_path, scenario, "--name", "describer")
    assert d["sdk_manual_markdown"] == (ROOT / "docs" / "sdk.md").read_text()
    assert yaml.safe_load(d["limits_yaml"])["joint_speed"] == 1.0
    assert d["skills_markdown"].startswith("## Skills")
    assert (d["cameras"], d["lease_holder"], d["approval"]) == (["base", "wrist"],
                                                                "mcp:describer", "none")


def test_execute_code_streams_lines_as_progress_and_returns_a_structured_result(stack, tmp_path):
    code = ("import sys\nfor i in range(3):\n    print('line', i, flush=True)\n"
            "print('to stderr', file=sys.stderr)\n")

    async def scenario(client):
        progress = Progress()
        done = ok(await client.call_tool("execute_code", {"code": code, "label": "mcp stream"},
                                         progress_callback=progress))
        await until(lambda: len(progress) == 4, 10, "every line as progress")
        failed = await client.call_tool("execute_code",
                                        {"code": "x = 1\nraise ValueError('bad')\n"})
        return done, progress, failed
    done, progress, failed = with_mcp(tmp_path, scenario)[0]
    assert (done["status"], done["exit_code"], done["error"]) == ("succeeded", 0, "")
    assert (done["stdout"], done["stderr"], done["dry_run"]) == ("line 0\nline 1\nline 2\n",
                                                                "to stderr\n", False)
    assert [m for m in progress if not m.startswith("stderr|")] == ["line 0", "line 1", "line 2"]
    assert "stderr| to stderr" in progress
    answer = ok(failed)
    assert (answer["status"], answer["exit_code"]) == ("failed", 1)
    assert "ValueError: bad (line 2)" in answer["error"] and "ValueError: bad" in text(failed)


def test_past_its_wait_budget_an_execution_is_running_and_get_execution_continues(stack, tmp_path):
    code = "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second', flush=True)\n"

    async def scenario(client):
        running = ok(await client.call_tool("execute_code", {"code": code, "wait_s": 0.5}))
        second = await client.call_tool("execute_code", {"code": "print(1)"})
        progress = Progress()
        end = ok(await client.call_tool("get_execution", {
            "execution_id": running["execution_id"], "wait_s": 120}, progress_callback=progress))
        again = ok(await client.call_tool("get_execution", {"execution_id": running["execution_id"],
                                                            "wait_s": 0}))
        unknown = await client.call_tool("get_execution", {"execution_id": "nosuchid"})
        return running, second, end, progress, again, unknown
    running, second, end, progress, again, unknown = with_mcp(tmp_path, scenario)[0]
    assert (running["status"], running["exit_code"]) == ("running", None)
    assert running["execution_id"]
    assert second.is_error and "still running" in text(second)      # one execution at a time
    assert (end["status"], end["execution_id"]) == ("succeeded", running["execution_id"])
    assert running["stdout"] + end["stdout"] == "first\nsecond\n"   # each line given once
    assert progress[-1] == "second"
    assert (again["status"], again["stdout"]) == ("succeeded", "")
    assert unknown.is_error and "no execution 'nosuchid'" in text(unknown)


def test_a_cancelled_tool_call_cancels_the_code_and_the_robot_holds(stack, tmp_path):
    sim_stack, _ = stack
    wire = Wire(sim_stack.config)

    async def scenario(client):
        start = (await anyio.to_thread.run_sync(wire.arm_at_rest))["q"]
        async with anyio.create_task_group() as calls:
            calls.start_soon(client.call_tool, "execute_code",
                             {"code": MOVE, "wait_s": 120, "label": "mcp cancelled move"})
            await until(lambda: wire.state("arm")["q"][0] > 0.1, 60, "the arm to move")
            calls.cancel_scope.cancel()         # the client sends notifications/cancelled

        async def recorded():
            while not (found := [e for e in ok(await client.call_tool(
                    "list_history", {"count": 5}))["executions"]
                    if e["label"] == "mcp cancelled move"]):
                await anyio.sleep(0.2)
            return found[0]
        with anyio.fail_after(30):
            last = await recorded()
        # judged once the execution has ended (in the history): before that, a stall of the
        # code's stream under load also brings the arm to rest for a moment
        held = await anyio.to_thread.run_sync(wire.arm_holding)
        # back to where this server took the lease, past the call's wait budget
        rewinding = ok(await client.call_tool("rewind", {"target": "start", "wait_s": 0}))
        progress = Progress()
        back = ok(await client.call_tool("get_execution", {
            "execution_id": rewinding["execution_id"], "wait_s": 120}, progress_callback=progress))
        end = (await anyio.to_thread.run_sync(wire.arm_at_rest))["q"]
        return start, held, last, rewinding, back, progress, end
    try:
        start, held, last, rewinding, back, progress, end = with_mcp(tmp_path, scenario)[0]
    finally:
        wire.close()
    assert held["q"][0] < 0.95
    assert (last["status"], last["error"]) == ("canceled", "canceled by the client")
    assert (rewinding["kind"], rewinding["status"]) == ("rewind", "running")
    assert (back["execution_id"], back["status"]) == (rewinding["execution_id"], "succeeded")
    assert back["rewind"]["success"] and back["rewind"]["waypoints"] > 0, back
    assert progress and set(progress) == {"rewinding"}     # the fraction, as it went
    assert max(abs(a - b) for a, b in zip(start, end)) < 0.02


def test_cancel_execution_stops_an_execution_left_running(stack, tmp_path):
    async def scenario(client):
        running = ok(await client.call_tool("execute_code", {"code": SLEEPER, "wait_s": 0}))
        return running, ok(await client.call_tool("cancel_execution",
                                                  {"execution_id": running["execution_id"]}))
    running, canceled = with_mcp(tmp_path, scenario)[0]
    assert running["status"] == "running"
    assert (canceled["execution_id"], canceled["status"]) == (running["execution_id"], "canceled")


def test_when_the_client_goes_the_code_stops_and_the_lease_is_released(stack, tmp_path):
    _, client = stack

    async def scenario(mcp):
        return ok(await mcp.call_tool("execute_code", {"code": SLEEPER, "wait_s": 0}))
    running, log = with_mcp(tmp_path, scenario, "--name", "leaver")
    assert running["status"] == "running"
    # the client closed the server's stdin: it released its lease, which stops the code
    client.wait_idle(30)
    lease = wait_until(lambda: (s := client.client.status()[1]) and not s.held and s, 30,
                       "the lease to be free")
    assert lease.holder == ""
    (record,) = [r for r in client.client.history(5) if r.execution_id == running["execution_id"]]
    assert (record.holder, record.status) == ("mcp:leaver", 3)       # STATUS_CANCELED
    assert "lease released" in log


def test_sigterm_while_the_client_is_connected_ends_the_server_the_same_way(stack, tmp_path):
    _, client = stack

    async def scenario(mcp):
        running = ok(await mcp.call_tool("execute_code", {"code": SLEEPER, "wait_s": 0}))
        (pid,) = [int(p) for p in os.listdir("/proc") if p.isdigit() and server_of_this_test(p)]
        os.kill(pid, signal.SIGTERM)        # stdin stays open: the SDK's reader cannot end
        await until(lambda: not pid_alive(pid), 30, "tidybot-mcp to exit")
        return running
    running, log = with_mcp(tmp_path, scenario)
    client.wait_idle(30)
    (record,) = [r for r in client.client.history(5) if r.execution_id == running["execution_id"]]
    assert record.status == 3 and "lease released" in log      # STATUS_CANCELED


def server_of_this_test(pid: str) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(stat[1]) == os.getpid() and b"tidybot-mcp" in open(
            f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def test_a_busy_robot_says_who_holds_it_and_no_answer_shows_a_lease_token(stack, tmp_path):
    _, client = stack

    async def scenario(mcp):
        held = await anyio.to_thread.run_sync(lambda: client.acquire("someone else", ttl_s=300))
        try:
            busy = await mcp.call_tool("execute_code", {"code": "print(1)"})
        finally:
            await anyio.to_thread.run_sync(client.release, held.lease_id)
        answers = [busy]
        for tool, args in (("describe_robot", {}), ("get_robot_state", {}),
                           ("execute_code", {"code": "print('hi')"}),
                           ("execute_code", {"code": "if True\n  pass"}),
                           ("execute_code", {"code": "print(2)", "dry_run": True}),
                           ("list_history", {"count": 20}),
                           ("rewind", {"target": "start", "dry_run": True}),
                           ("get_execution", {"execution_id": "nosuchid"})):
            answers.append(await mcp.call_tool(tool, args))
        return answers
    answers, log = with_mcp(tmp_path, scenario)
    busy = answers[0]
    assert busy.is_error
    assert "held by 'someone else'" in text(busy) and "lapses in about" in text(busy)
    assert ok(answers[3])["status"] == "succeeded"
    assert ok(answers[4])["status"] == "rejected" and "SyntaxError" in ok(answers[4])["error"]
    everything = log + "".join(f"{text(a)}{a.structured_content}" for a in answers)
    assert not TOKEN_LIKE.search(everything)


def test_dry_run_first_stops_failing_code_before_it_runs_for_real(stack, tmp_path):
    sim_stack, _ = stack
    wire = Wire(sim_stack.config)
    failing = MOVE.replace("duration=6", "duration=2") + "raise RuntimeError('not today')\n"

    async def scenario(client):
        before = (await anyio.to_thread.run_sync(wire.arm_at_rest))["q"]
        refused = await client.call_tool("execute_code", {"code": failing, "label": "mcp unproven"})
        after = (await anyio.to_thread.run_sync(wire.arm_at_rest))["q"]
        approved = ok(await client.call_tool("execute_code", {"code": "print('fine')",
                                                              "label": "mcp proven"}))
        history = ok(await client.call_tool("list_history", {"count": 10}))["executions"]
        return before, refused, after, approved, history
    try:
        before, refused, after, approved, history = with_mcp(
            tmp_path, scenario, "--approval", "dry-run-first")[0]
    finally:
        wire.close()
    answer = ok(refused)
    assert (answer["dry_run"], answer["status"]) == (True, "failed")
    assert answer["approval"]["passed"] is False and "not today" in answer["error"]
    assert "NOT run on the real robot" in text(refused)
    assert max(abs(a - b) for a, b in zip(before, after)) < 1e-6        # the real arm never moved
    assert [e["dry_run"] for e in history if e["label"] == "mcp unproven"] == [True]
    assert (approved["status"], approved["dry_run"], approved["stdout"]) == ("succeeded", False,
                                                                             "fine\n")
    assert approved["approval"]["passed"] and approved["approval"]["status"] == "succeeded"
    assert [(e["execution_id"], e["dry_run"]) for e in history if e["label"] == "mcp proven"] == [
        (approved["execution_id"], False), (approved["approval"]["execution_id"], True)]


def test_get_camera_image_returns_a_jpeg_marked_untrusted(stack, tmp_path):
    async def scenario(client):
        return (await client.call_tool("get_camera_image", {"camera": "base"}),
                await client.call_tool("get_camera_image", {"camera": "nope"}))
    image, unknown = with_mcp(tmp_path, scenario)[0]
    assert not image.is_error, text(image)
    note, picture = image.content
    assert "Untrusted input" in note.text and picture.mime_type == "image/jpeg"
    decoded = PILImage.open(io.BytesIO(base64.b64decode(picture.data)))
    assert decoded.format == "JPEG" and decoded.width > 0
    assert unknown.is_error and "the cameras are base, wrist" in text(unknown)


def test_emergency_stop_kills_the_code_and_latches(stack, tmp_path):
    _, client = stack

    async def scenario(mcp):
        running = ok(await mcp.call_tool("execute_code", {"code": SLEEPER, "wait_s": 0}))
        stopped = ok(await mcp.call_tool("emergency_stop"))
        end = ok(await mcp.call_tool("get_execution", {"execution_id": running["execution_id"],
                                                       "wait_s": 60}))
        refused = ok(await mcp.call_tool("execute_code", {"code": "print(1)"}))
        return stopped, end, refused
    try:
        stopped, end, refused = with_mcp(tmp_path, scenario)[0]
    finally:
        token = client.acquire("resetter").lease_id
        assert client.call("estop/reset", ResetEstop.Request(lease_id=token)).success
        client.release(token)
    assert stopped["success"]
    assert end["status"] == "canceled"
    assert (refused["status"], refused["error"]) == ("rejected", "estopped: call estop/reset")


def test_streamable_http_serves_only_requests_with_the_token(stack, tmp_path, procs):
    _, exec_client = stack
    token = "t0ken-" + os.urandom(16).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    refused = subprocess.run(["tidybot-mcp", "--http", str(port)], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "--http needs --token-file" in refused.stderr
    server = Proc(["tidybot-mcp", "--http", str(port), "--token-file", str(token_file),
                   "--release-after", "1", "--allow-host", "robot1.lab"], tmp_path, "mcp-http")
    procs.append(server)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0 or not server.alive()
    wait_until(listening, 60, "tidybot-mcp to listen")
    assert server.alive(), server.describe()

    async def scenario():
        bearer = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=bearer, timeout=60) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                state = ok(await client.call_tool("get_robot_state"))
                progress = Progress()
                async with anyio.create_task_group() as calls:     # a client that vanishes
                    calls.start_soon(partial(client.call_tool, "execute_code", {
                        "code": SLEEPER, "label": "mcp http vanished", "wait_s": 120},
                        progress_callback=progress))
                    await until(lambda: progress, 60, "the code to start")
                    calls.cancel_scope.cancel()
            # the Host check is on in the served app (its cases: test_mcp_units.py)
            rebound = await http.post(url, json={}, headers={"Host": f"evil.example:{port}"})
        async with httpx2.AsyncClient(timeout=60) as http:
            anonymous = await http.post(url, json={})
            wrong = await http.post(url, json={}, headers={"Authorization": "Bearer wrong"})
        return names, state, rebound.status_code, anonymous, wrong.status_code
    names, state, rebound, anonymous, wrong = anyio.run(scenario)
    assert len(names) == 11 and state["unavailable"] == []
    assert (anonymous.status_code, wrong, rebound) == (401, 401, 421)
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert token not in server.stdout + server.stderr
    # the call's end cancelled the code; the lease, unused for 1 s, was released
    exec_client.wait_idle(30)
    wait_until(lambda: not exec_client.client.status()[1].held, 30, "the lease to be released")
    (vanished,) = [r for r in exec_client.client.history(5) if r.label == "mcp http vanished"]
    assert vanished.status == 3                                       # STATUS_CANCELED


def test_skills_are_saved_listed_and_imported_through_mcp(stack, tmp_path):
    skill = ('def wave_mcp(times: int = 1) -> str:\n    """Say hi, times times."""\n'
             '    return "hi " * times\n\nif __name__ == "__main__":\n    print(wave_mcp(2))\n')

    async def scenario(client):
        saving = ok(await client.call_tool("save_skill", {"name": "wave_mcp", "code": skill,
                                                          "description": "greets", "wait_s": 0}))
        progress = Progress()
        saved = ok(await client.call_tool("get_execution", {
            "execution_id": saving["execution_id"], "wait_s": 120}, progress_callback=progress))
        dry_run_id = saved["skill"]["message"].rsplit(": ", 1)[-1]     # "... dry run(s): ID"
        by_dry_run = ok(await client.call_tool("get_execution", {"execution_id": dry_run_id,
                                                                 "wait_s": 0}))
        listed = ok(await client.call_tool("list_skills", {"query": "wave_mcp"}))["skills"]
        used = ok(await client.call_tool("execute_code", {
            "code": "from tidybot_skills import wave_mcp\nprint(wave_mcp(3))\n"}))
        return saving, progress, saved, dry_run_id, by_dry_run, listed, used
    saving, progress, answer, dry_run_id, by_dry_run, listed, used = with_mcp(tmp_path,
                                                                               scenario)[0]
    assert (saving["kind"], saving["status"]) == ("save_skill", "running")    # past wait_s
    assert answer["status"] == "succeeded", answer
    saved = answer["skill"]
    assert (saved["success"], saved["dry_runs_passed"]) == (True, 1), saved["message"]
    # execution/status named its dry run as it started: the save is found by that id too
    assert by_dry_run["execution_id"] == saving["execution_id"]
    assert progress in ([], [f"skill wave_mcp: dry run 1/1 (execution {dry_run_id})"])
    assert [(s["name"], s["version"], s["signature"].replace(" ", ""), s["description"])
            for s in listed] == [("wave_mcp", saved["version"], "wave_mcp(times:int=1)->str",
                                  "greets")]
    assert (used["status"], used["stdout"]) == ("succeeded", "hi hi hi \n")


@pytest.fixture(autouse=True)
def _lease_free_between_tests(stack):
    """Each test starts with the lease free (a server that failed still exits on EOF)."""
    yield
    _, client = stack
    wait_until(lambda: (s := client.client.status()[1]) and not s.held, 30, "the lease to be free")
