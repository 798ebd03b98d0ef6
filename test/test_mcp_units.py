"""tidybot-mcp's logic on its own: no process, no ROS graph. A FakeClient stands in for
TidybotClient (goals the test accepts and ends, a skill save it answers); the tools are
called through the mcp client library over the SDK's in-memory transport, and the HTTP app
through ASGI. test_mcp.py proves the same server against the real node over stdio and HTTP.
"""
from __future__ import annotations

import queue
import threading
from functools import partial
from typing import Any, Callable

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.types import CallToolResult
from tidybot_interfaces.action import ExecuteCode, Rewind
from tidybot_interfaces.msg import ExecutionStatus
from tidybot_interfaces.srv import SaveSkill

from support import wait_until
from tidybot_exec.clients.client import TidybotClientError
from tidybot_exec.clients.mcp.jobs import ANSWER_CHARS, CodeJob, Goal, JobBook, Stream
from tidybot_exec.clients.mcp.lease import RobotBusy, ServerLease
from tidybot_exec.clients.mcp.robot import Robot
from tidybot_exec.clients.mcp.server import build_server, http_app
from tidybot_exec.clients.mcp.tools import Tools

R = ExecuteCode.Result
HOLDER = "mcp:unit"
TOOLS = {"describe_robot", "get_robot_state", "execute_code", "get_execution",
         "cancel_execution", "emergency_stop", "list_history", "list_skills", "save_skill",
         "rewind", "get_camera_image"}
SLEEPER = Goal("import time\ntime.sleep(60)\n", timeout_s=60.0, label="", dry_run=False,
               on_failure="")


# ---------------------------------------------------------------------- the fakes
class FakeGoal:
    """An ExecutionHandle as the job sees it; the test accepts it, feeds it and ends it."""

    def __init__(self, kind: str, request: dict, feedback: Callable[[Any], None],
                 accept: bool) -> None:
        self.kind, self.request, self.feedback = kind, request, feedback
        self._accepted, self._ended, self.waiting = (threading.Event() for _ in range(3))
        self._result: Any = None
        self.cancels: list[bool] = []       # for each cancel: was the goal accepted then
        if accept:
            self.accept()

    def accept(self) -> None:
        self._accepted.set()

    def accepted(self, timeout_s: float = 30.0) -> None:
        if not self._accepted.wait(timeout_s):
            raise TidybotClientError("timed out waiting for goal acceptance")

    def is_accepted(self) -> bool:
        return self._accepted.is_set()

    def cancel(self, timeout_s: float = 10.0) -> None:
        self.cancels.append(self.is_accepted())
        self.accepted(timeout_s)            # as the real handle: a cancel needs the goal's id

    def end(self, result: Any) -> None:
        self._result = result
        self._ended.set()

    def result(self, timeout_s: float | None = None) -> Any:
        self.waiting.set()
        if not self._ended.wait(timeout_s):
            raise TidybotClientError("timed out waiting for the result")
        return self._result


class FakeNode:
    def __init__(self) -> None:
        self.subscriptions: dict[str, Callable[[Any], None]] = {}

    def create_subscription(self, msg_type: type, topic: str, callback: Callable, qos: Any):
        self.subscriptions[topic] = callback


class FakeClient:
    """TidybotClient's surface that tidybot-mcp uses. Goals go to ``goals`` (a queue); a
    skill save waits for ``answer_save``; execution/stop calls ``on_stop``."""

    def __init__(self) -> None:
        self.node = FakeNode()
        self.lease_id = ""
        self.acquisitions = 0
        self.released = threading.Event()
        self.accept_at_once = True
        self.goals: queue.Queue[FakeGoal] = queue.Queue()
        self.saving = threading.Event()             # a save request arrived
        self._save_reply: queue.Queue[SaveSkill.Response] = queue.Queue()
        self.stops = 0
        self.on_stop: Callable[[], None] = lambda: None

    def wait_for_server(self, timeout_s: float = 30.0) -> bool:
        return True

    def status(self, timeout_s: float = 5.0) -> tuple[None, None]:
        return None, None

    def acquire(self, holder: str, ttl_s: float = 0.0, wait_s: float = 0.0,
                resources: tuple[str, ...] = ()) -> str:
        self.acquisitions += 1
        self.lease_id = f"token-{self.acquisitions}"
        return self.lease_id

    def renew(self) -> float:
        return 10.0

    def release(self, timeout_s: float = 15.0) -> None:
        self.lease_id = ""
        self.released.set()

    def _send(self, kind: str, request: dict, feedback_callback: Callable) -> FakeGoal:
        goal = FakeGoal(kind, request, feedback_callback, self.accept_at_once)
        self.goals.put(goal)
        return goal

    def execute(self, code: str, feedback_callback: Callable, **request: Any) -> FakeGoal:
        return self._send("code", dict(request, code=code), feedback_callback)

    def rewind(self, target: str, amount: float, parts: tuple, dry_run: bool, lease_id: str,
               feedback_callback: Callable) -> FakeGoal:
        return self._send("rewind", dict(target=target, dry_run=dry_run), feedback_callback)

    def save_skill(self, name: str, code: str, description: str, from_execution_id: str,
                   dry_runs: int) -> SaveSkill.Response:
        self.saving.set()
        return self._save_reply.get(timeout=30)

    def answer_save(self, success: bool, message: str, version: int = 0) -> None:
        self._save_reply.put(SaveSkill.Response(success=success, message=message,
                                                version=version, dry_runs_passed=1))

    def stop(self) -> None:
        self.stops += 1
        self.on_stop()

    def history(self, count: int = 10) -> list:
        return []


def ended(status: int, execution_id: str = "0123456789ab", stdout: str = "") -> R:
    return R(status=status, execution_id=execution_id, stdout=stdout, error=(
        "" if status == R.STATUS_SUCCEEDED else "canceled by the client"))


@pytest.fixture
def fake():
    """A FakeClient, the Robot and JobBook on it; the book's threads left at the end."""
    client = FakeClient()
    robot = Robot(client, "", HOLDER)
    book = JobBook(robot)
    yield client, robot, book
    book.close()


def status(state: str, execution_id: str, label: str = "") -> ExecutionStatus:
    return ExecutionStatus(state=state, execution_id=execution_id, holder=HOLDER, label=label)


# ---------------------------------------------------------------------- the output stream
def test_the_stream_gives_each_character_once_and_checks_feedback_against_the_result():
    live = Stream()
    live.add("line 1\n")
    assert live.take() == ("line 1\n", False)           # given while it runs...
    live.add("line 2\n")
    late = live.finish("line 1\nline 2\nline 3\n")      # the result continues the feedback
    assert late == "line 3\n"                           # (the last line came only with it)
    assert live.take() == ("line 2\nline 3\n", False)   # ... and never again
    live.add("line 3\n")                                 # feedback after the result: ignored
    assert live.take() == ("", False)

    lossy = Stream()
    lossy.add("a\n")
    lossy.add("c\n")                    # "b\n" was lost on the way: the digest differs
    assert lossy.finish("a\nb\nc\n") == ""
    text, clipped = lossy.take()
    assert text == "[the whole output again: live feedback had left some out]\na\nb\nc\n"
    assert not clipped

    cut = Stream()
    assert cut.finish(None) == ""       # the node cut its result to head and tail: no check
    cut.add("more\n")
    assert cut.take() == ("", False)


def test_the_stream_keeps_only_the_head_and_tail_of_a_large_output():
    big = Stream()
    for i in range(5000):
        big.add(f"{i:09d}\n")           # 50 000 characters
    text, clipped = big.take()
    half = ANSWER_CHARS // 2
    assert clipped and text.startswith("000000000\n") and text.endswith("000004999\n")
    assert f"[... {50_000 - 2 * half} characters not shown ...]" in text
    assert len(text) < ANSWER_CHARS + 100
    assert big.finish("x" * 10) == ""   # not a continuation of what came: said so
    assert big.take()[0].startswith("[the whole output again")


# ---------------------------------------------------------------------- cancel and a job
def test_a_cancel_before_the_node_accepted_the_goal_is_sent_the_moment_it_does(fake):
    client, robot, book = fake
    client.accept_at_once = False
    job = book.start(CodeJob(robot, SLEEPER, approve=False))
    goal = client.goals.get(timeout=10)
    job.cancel()
    assert goal.cancels == []           # nothing to cancel yet: no goal id from the node
    goal.accept()
    wait_until(lambda: goal.cancels, 10, "the cancel, once the goal was accepted")
    assert goal.cancels == [True]
    goal.end(ended(R.STATUS_CANCELED))
    job.join(10)
    answer = job.answer()
    assert (answer.status, answer.execution_id, answer.error) == (
        "canceled", "0123456789ab", "canceled by the client")


def test_a_cancel_after_acceptance_is_sent_at_once(fake):
    client, robot, book = fake
    job = book.start(CodeJob(robot, SLEEPER, approve=False))
    goal = client.goals.get(timeout=10)
    assert goal.waiting.wait(10)        # the job follows the accepted goal
    job.cancel()
    assert goal.cancels == [True]       # by cancel() itself, not later
    goal.end(ended(R.STATUS_CANCELED))
    job.join(10)
    assert job.done and job.answer().status == "canceled"


def test_a_job_cancelled_before_it_sent_anything_sends_nothing_and_says_so(fake):
    client, robot, _ = fake
    job = CodeJob(robot, SLEEPER, approve=False)
    job.cancel()
    job.start()
    job.join(10)
    answer = job.answer()
    assert client.goals.empty()
    assert (answer.status, answer.error) == ("canceled",
                                             "canceled before its goal was sent: nothing ran")


def test_execution_status_names_the_code_before_its_output_and_one_job_runs_at_a_time(fake):
    client, robot, book = fake
    job = book.start(CodeJob(robot, SLEEPER, approve=False))
    goal = client.goals.get(timeout=10)
    client.node.subscriptions["/execution/status"](status("running", "feedc0ffee00"))
    assert job.execution_id == "feedc0ffee00" and book.find("feedc0ffee00") is job
    with pytest.raises(TidybotClientError, match="execution feedc0ffee00 is still running"):
        book.start(CodeJob(robot, SLEEPER, approve=False))
    goal.feedback(ExecuteCode.Feedback(execution_id="feedc0ffee00", stream="stdout",
                                       text="a\nb\n"))
    assert job.progress_since(0) == ([(1, None, "a"), (2, None, "b")], 2)
    goal.end(ended(R.STATUS_SUCCEEDED, "feedc0ffee00", stdout="a\nb\n"))
    job.join(10)
    first, again = job.answer(), job.answer()
    assert (first.status, first.stdout, again.stdout) == ("succeeded", "a\nb\n", "")


# ---------------------------------------------------------------------- the server's lease
def test_the_server_lease_is_released_once_idle_for_its_time_and_never_while_used():
    client = FakeClient()
    closing = threading.Event()
    lease = ServerLease(client, HOLDER, closing, release_after_s=0.2)
    assert lease.token() == "token-1"
    with lease.in_use():
        assert not client.released.wait(1.0), "released while a goal ran under it"
    assert client.released.wait(10), "not released once idle"
    assert lease.token() == "token-2"   # the next use takes it again
    client.released.clear()
    with lease.in_use():
        pass
    with lease.in_use():                # used again within the idle time: the clock restarts
        assert not client.released.wait(0.6)
    assert client.released.wait(10)
    closing.set()
    with pytest.raises(RobotBusy, match="shutting down"):
        lease.token()                   # what it took now would outlive the server


def test_with_stdio_the_lease_is_kept_until_the_server_exits():
    client = FakeClient()
    lease = ServerLease(client, HOLDER, threading.Event())     # release_after_s 0: stdio
    lease.token()
    with lease.in_use():
        pass
    assert not client.released.wait(0.5)
    lease.release()
    assert client.released.is_set() and client.lease_id == ""


# ---------------------------------------------------------------------- DNS rebinding
TOKEN = "unit-token-" + "x" * 16


@pytest.mark.parametrize("bind, headers, expected", [
    ("127.0.0.1", {"Host": "127.0.0.1:8765"}, "served"),
    ("127.0.0.1", {"Host": "localhost:8765", "Origin": "http://localhost:3000"}, "served"),
    ("127.0.0.1", {"Host": "[::1]:8765"}, "served"),
    ("127.0.0.1", {"Host": "evil.example:8765"}, 421),          # a rebound name
    ("127.0.0.1", {"Host": "127.0.0.1:8765", "Origin": "http://evil.example"}, 403),
    ("127.0.0.1", {"Host": "robot1.lab"}, "served"),            # --allow-host, no port
    ("127.0.0.1", {"Host": "robot1.lab", "Origin": "https://robot1.lab"}, "served"),
    ("127.0.0.1", {"Host": "robot1.lab.evil.example"}, 421),
    ("0.0.0.0", {"Host": "0.0.0.0:8765"}, 421),                 # "every address" is no name
    ("10.0.0.5", {"Host": "10.0.0.5:8765", "Origin": "http://10.0.0.5:8765"}, "served"),
])
def test_only_loopback_the_bind_host_and_allowed_names_pass(fake, bind, headers, expected):
    """The SDK's check as the server sets it up, whatever the bind address: past the token,
    a rebound Host is 421 and a foreign Origin 403; what passes reaches the MCP handler (its
    400 for an empty JSON-RPC message)."""
    _, robot, book = fake
    app = http_app(build_server(Tools(robot, book, "none"), (bind, 8765), TOKEN), bind,
                   ["robot1.lab"])

    async def post() -> tuple[int, int]:
        async with app.router.lifespan_context(app):
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                          base_url="http://server") as http:
                bearer = {"Authorization": f"Bearer {TOKEN}"}
                served = await http.post("/mcp", json={}, headers={**bearer, **headers})
                anonymous = await http.post("/mcp", json={}, headers=headers)
                return served.status_code, anonymous.status_code
    served, anonymous = anyio.run(post)
    assert served == (400 if expected == "served" else expected)
    assert anonymous == 401             # the token comes first, whatever the names


# ---------------------------------------------------------------------- the tools
def with_tools(fake, scenario: Callable[[Client], Any]) -> Any:
    """``scenario`` against the server's tools over the in-memory transport."""
    _, robot, book = fake
    server = build_server(Tools(robot, book, "none"), None, None)

    async def main() -> Any:
        async with Client(server) as client:
            return await scenario(client)
    return anyio.run(main)


def ok(result: CallToolResult) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


class Progress(list):
    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.append((progress, total, message))


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await anyio.to_thread.run_sync(fn)


async def _keep(results: list, call: Callable[[], Any]) -> None:
    """A call's answer, for a call made in a task group."""
    results.append(await call())


async def until(predicate: Callable[[], Any], what: str) -> None:
    """wait_until for a scenario (on the event loop: the tools run beside it)."""
    with anyio.move_on_after(10):
        while not predicate():
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out after 10 s waiting for {what}")


def test_the_eleven_tools_have_schemas_descriptions_and_honest_annotations(fake):
    tools = with_tools(fake, lambda client: client.list_tools())
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == TOOLS
    for tool in tools.tools:
        assert len(tool.description) > 80 and tool.input_schema["type"] == "object", tool.name
        assert (tool.output_schema is None) == (tool.name == "get_camera_image"), tool.name

    def hints(flag: str) -> set[str]:
        return {n for n, t in by_name.items() if getattr(t.annotations, flag)}
    assert hints("destructive_hint") == {"execute_code", "rewind"}
    assert hints("read_only_hint") == {"describe_robot", "get_robot_state", "get_execution",
                                       "list_history", "list_skills", "get_camera_image"}
    for name in ("execute_code", "rewind", "save_skill"):     # one mechanism for the three
        schema = by_name[name].input_schema
        assert schema["properties"]["wait_s"]["default"] == 30.0, name
        assert by_name[name].output_schema == by_name["get_execution"].output_schema, name
    assert by_name["execute_code"].input_schema["required"] == ["code"]
    assert {"execution_id", "kind", "status", "exit_code", "stdout", "stderr", "error",
            "duration_s"} <= set(by_name["execute_code"].output_schema["required"])
    assert "UNTRUSTED" in by_name["get_camera_image"].description


def test_a_rewind_past_its_wait_budget_is_running_and_get_execution_follows_it(fake):
    client, _, _ = fake

    async def scenario(mcp: Client):
        progress, results = Progress(), []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_keep, results, partial(mcp.call_tool, "rewind", {
                "target": "start", "wait_s": 1}, progress_callback=progress))
            goal = await in_thread(partial(client.goals.get, timeout=10))
            goal.feedback(Rewind.Feedback(fraction=0.25))
            goal.feedback(Rewind.Feedback(fraction=0.25))      # no progress: not repeated
            goal.feedback(Rewind.Feedback(fraction=0.5))
        running = ok(results[0])
        busy = await mcp.call_tool("execute_code", {"code": "print(1)"})
        goal.end(Rewind.Result(success=True, message="rewound 12 waypoint(s)", waypoints=12,
                               duration_s=3.5))
        end = await mcp.call_tool("get_execution", {"execution_id": running["execution_id"],
                                                    "wait_s": 30})
        return running, busy, progress, end
    running, busy, progress, end = with_tools(fake, scenario)
    assert (running["kind"], running["status"]) == ("rewind", "running")
    assert running["execution_id"].startswith("rewind-")
    assert busy.is_error and f"rewind {running['execution_id']} is still running" in text(busy)
    assert progress == [(0.25, 1.0, "rewinding"), (0.5, 1.0, "rewinding")]
    answer = ok(end)
    assert (answer["status"], answer["execution_id"], answer["duration_s"]) == (
        "succeeded", running["execution_id"], 3.5)
    assert answer["rewind"] == {"success": True, "message": "rewound 12 waypoint(s)",
                                "waypoints": 12, "duration_s": 3.5, "dry_run": False}
    assert "rewound 12 waypoint(s)" in text(end)


def test_a_save_past_its_wait_budget_is_running_with_its_dry_runs_as_progress(fake):
    client, _, _ = fake
    on_status = client.node.subscriptions["/execution/status"]

    async def scenario(mcp: Client):
        progress, results = Progress(), []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_keep, results, partial(mcp.call_tool, "save_skill", {
                "name": "wave", "code": "x = 1\n", "wait_s": 1}, progress_callback=progress))
            await in_thread(partial(client.saving.wait, 10))
            on_status(status("running", "d1d1d1d1d1d1", "skill wave: dry run 1/1"))
        client.answer_save(True, "saved wave@3 after 1 dry run(s): d1d1d1d1d1d1", 3)
        end = await mcp.call_tool("get_execution", {"execution_id": "d1d1d1d1d1d1",
                                                    "wait_s": 30})
        return ok(results[0]), progress, end
    running, progress, end = with_tools(fake, scenario)
    assert (running["kind"], running["status"]) == ("save_skill", "running")
    assert running["execution_id"].startswith("save-") and running["skill"] is None
    assert progress == [(0, 1, "skill wave: dry run 1/1 (execution d1d1d1d1d1d1)")]
    answer = ok(end)
    assert (answer["status"], answer["execution_id"]) == ("succeeded", running["execution_id"])
    assert answer["skill"] == {"success": True, "version": 3, "dry_runs_passed": 1,
                               "message": "saved wave@3 after 1 dry run(s): d1d1d1d1d1d1"}


@pytest.mark.parametrize("late", [False, True], ids=["stopped in its dry run", "too late"])
def test_a_cancelled_save_is_stopped_at_its_dry_runs_or_reported_saved(fake, late):
    """cancel_execution of a save: the server stops its dry run (execution/stop, under its
    lease), so the node refuses the save; a save already past its dry runs is saved, and the
    answer says so instead of "canceled"."""
    client, _, _ = fake
    client.on_stop = lambda: client.answer_save(True, "saved wave@4", 4) if late else (
        client.answer_save(False, "not saved: dry run 1 of 1 (execution d1d1d1d1d1d1) "
                                  "CANCELED: canceled by the client"))

    async def scenario(mcp: Client):
        running = ok(await mcp.call_tool("save_skill", {"name": "wave", "code": "x = 1\n",
                                                        "wait_s": 0}))
        await in_thread(partial(client.saving.wait, 10))    # sent: only its dry runs can stop
        return await mcp.call_tool("cancel_execution",
                                   {"execution_id": running["execution_id"]})
    answer = with_tools(fake, scenario)
    saved = ok(answer)
    assert client.stops >= 1
    if late:
        assert (saved["status"], saved["skill"]["success"]) == ("succeeded", True)
        assert "your cancel came after its dry runs had passed: it is saved" in text(answer)
    else:
        assert (saved["status"], saved["skill"]["success"]) == ("canceled", False)
        assert "not saved: dry run 1 of 1" in saved["error"]


def test_a_cancelled_call_whose_save_went_through_is_told_with_the_next_answer(fake):
    """The client's cancel gets no answer (MCP), so the model believes "cancelled": the save
    that happened anyway is told beside whatever the next tool answers, once."""
    client, _, book = fake
    client.on_stop = lambda: client.answer_save(True, "saved wave@5", 5)

    async def scenario(mcp: Client):
        async with anyio.create_task_group() as calls:
            calls.start_soon(partial(mcp.call_tool, "save_skill", {
                "name": "wave", "code": "x = 1\n", "wait_s": 60}))
            await in_thread(partial(client.saving.wait, 10))
            calls.cancel_scope.cancel()     # the client sends notifications/cancelled
        await until(lambda: book.running() is None, "the save's end")
        told = await mcp.call_tool("list_history", {})
        again = await mcp.call_tool("list_history", {})
        return told, again
    told, again = with_tools(fake, scenario)
    assert ok(told) == {"executions": []} == ok(again)      # the structure is unchanged
    note = text(told).splitlines()[-1]
    assert note.startswith("NOTE: a call you cancelled got no answer")
    assert "skill save save-" in note and "succeeded" in note and "saved wave@5" in note
    assert "NOTE" not in text(again)
