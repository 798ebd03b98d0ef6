"""Issue 27's smaller fixes, each shown without a process stack: the simulated camera
server's render loop reads subscriptions only under their lock; a ROS driver's camera source
leaves nothing subscribed once closed; sdk/describe's skills are bounded; a started goal's
execution is always ended and the node's exit is bounded; the cold tree never signals a
recycled PID; feedback is budgeted in UTF-8 bytes."""
from __future__ import annotations

import contextlib

import errno
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from support import wait_until
from tidybot_exec.cameras import protocol as cp
from tidybot_exec.execution import launchers
from tidybot_exec.execution.launchers import ColdTree
from tidybot_exec.execution.output import FeedbackQueue
from tidybot_exec.execution.records import Result, Status
from tidybot_exec.execution.skills import Skill, markdown
from tidybot_exec.sim import camera_server
from tidybot_exec.sim.camera_server import CameraServer


# ------------------------------------------------------------------ the camera server
class _LockedOnly(dict):
    """A subscription's streams that fail any read or write made without ``lock`` held."""

    def __init__(self, lock: threading.Condition, *args) -> None:
        super().__init__(*args)
        self._lock = lock

    def _check(self) -> None:
        assert self._lock._is_owned(), "a subscription read or changed outside its lock"


for _name in ("__getitem__", "__setitem__", "__delitem__", "__iter__", "__len__",
              "__contains__", "get", "setdefault", "items", "keys", "values", "pop"):
    def _guarded(self, *args, _method=getattr(dict, _name), **kwargs):
        self._check()
        return _method(self, *args, **kwargs)
    setattr(_LockedOnly, _name, _guarded)


class _FakeRenderer:
    """The render loop's renderer, without GL: a grey image, depth 1 m."""

    def __init__(self, bodies, width: int, height: int) -> None:
        self.width, self.height = width, height

    def place(self, pose, bodies) -> None:
        pass

    def render(self, camera: str, depth: bool = False) -> np.ndarray:
        return (np.ones((self.height, self.width), np.float32) if depth
                else np.full((self.height, self.width, 3), 128, np.uint8))

    def close(self) -> None:
        pass


class _Conn:
    """A subscriber's connection: what the server sends it, by (camera, stream)."""

    def __init__(self, logs: list[str]) -> None:
        self.frames: queue.Queue = queue.Queue()
        self._logs = logs

    def send(self, data) -> None:
        if isinstance(data, bytes):
            header, _ = cp.unpack_frame(data)
            self.frames.put((header["camera_id"], header["stream"]))

    def next_frame(self, wanted: tuple[str, str]) -> None:
        deadline = time.monotonic() + 20
        try:
            while self.frames.get(timeout=max(0.0, deadline - time.monotonic())) != wanted:
                pass
        except queue.Empty:
            raise AssertionError(f"no {wanted} frame within 20 s; the server said "
                                 f"{self._logs}") from None


def test_the_render_loop_reads_subscriptions_only_under_their_lock(monkeypatch):
    monkeypatch.setattr(camera_server, "Renderer", _FakeRenderer)
    world = SimpleNamespace(bodies=lambda: [], snapshot=lambda: {})
    logs: list[str] = []
    server = CameraServer(world, lambda: None, width=16, height=12, log=logs.append)
    conn = _Conn(logs)
    server._answer(conn, "subscribe", {"device_id": "wrist", "streams": ["color"], "fps": 30})
    sub = server._subs[conn]
    sub.streams = _LockedOnly(server._cond, sub.streams)
    loop = threading.Thread(target=server._render_loop, daemon=True)
    loop.start()
    try:
        conn.next_frame(("wrist", "color"))
        # subscribing changes the streams while the loop renders: both sides take the lock
        server._answer(conn, "subscribe", {"device_id": "base", "streams": ["depth"], "fps": 30})
        conn.next_frame(("base", "depth"))
        server._answer(conn, "unsubscribe", {"device_id": "all"})
    finally:
        server._stop.set()
        with server._cond:
            server._cond.notify_all()
        loop.join(10)
    assert not loop.is_alive()
    assert not [line for line in logs if "rendering failed" in line], logs


# ------------------------------------------------------------------ a driver's cameras
def test_a_driver_camera_source_closed_during_a_refresh_leaves_nothing_subscribed():
    import rclpy
    from tidybot_exec.ros.driver_cameras import DriverCameras

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("leftover_driver_cameras", context=context)
    subscriptions, timers = set(node.subscriptions), set(node.timers)
    try:
        cams = DriverCameras(node, {"wrist": "/leftover/camera"}, None, lambda frame: None,
                             lambda line: None)
        closed, entered = threading.Event(), threading.Event()

        def wanted(camera: str) -> set[str]:
            # The refresh is under way (the executor's timer thread) when close is called;
            # it goes on once close has returned, or after 1 s if close waits for it.
            entered.set()
            closed.wait(1.0)
            return {"color", "depth"}
        cams.wanted = wanted
        refresh = threading.Thread(target=cams._refresh)     # as the node's timer runs it
        refresh.start()
        assert entered.wait(10)
        cams.close()
        closed.set()
        refresh.join(10)
        assert not refresh.is_alive()
        cams._refresh()                                   # a timer tick taken before close
        assert set(node.subscriptions) == subscriptions, "a subscription outlived close"
        assert set(node.timers) == timers, "the refresh timer outlived close"
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


# ------------------------------------------------------------------ sdk/describe
def _skill(seq: int, name: str, text: str = "", docstring: str = "") -> Skill:
    return Skill(seq=seq, name=name, version=1, description=text or f"does {name}",
                 signature=f"{name}()", docstring=docstring, code="", code_sha256="",
                 from_execution_id="", dry_runs_passed=0, saved=float(seq), saved_by="t",
                 origin="")


def test_describes_skills_are_the_newest_within_a_count_and_a_byte_cap():
    from tidybot_exec.ros.node import DESCRIBE_SKILLS, skills_markdown

    many = [_skill(i, f"s{i:03d}") for i in range(1, DESCRIBE_SKILLS + 31)]
    text = skills_markdown(many)
    shown = [s.name for s in many if f"### {s.name}()" in text]
    assert shown == [s.name for s in many[-DESCRIBE_SKILLS:]]       # the newest saved
    assert "30 more skill(s), saved earlier, are not shown here" in text
    assert "skills/list" in text and "skills/get" in text
    assert skills_markdown(many[:3]) == markdown(many[:3])              # all of them fit

    big = [_skill(i, f"b{i}", "é" * 3000) for i in range(1, 6)]        # 6 KB each in UTF-8
    text = skills_markdown(big, max_bytes=16 * 1024)
    assert len(text.encode()) <= 16 * 1024
    assert "### b5()" in text and "### b4()" in text and "### b1()" not in text
    assert "more skill(s), saved earlier, are not shown" in text
    huge = skills_markdown([_skill(1, "huge", docstring="x" * 40000)], max_bytes=16 * 1024)
    assert len(huge.encode()) < 1024 and "1 skill(s) are saved but not shown here" in huge


# ------------------------------------------------------------------ the node's goals
class _Service:
    """The core service as _run_goal uses it: what it was asked, in order."""

    def __init__(self, cancel_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.execution = SimpleNamespace(id="e1")
        self._cancel_fails = cancel_fails

    def start(self, request, lease_id, feedback):
        self.calls.append("start")
        return self.execution

    def cancel(self, execution) -> None:
        self.calls.append("cancel")
        if self._cancel_fails:
            raise RuntimeError("cancel failed")

    def finish(self, execution) -> Result:
        assert execution is self.execution
        self.calls.append("finish")
        return Result(execution_id="e1", status=Status.CANCELED)


class _LostGoal:
    """A goal handle whose state can no longer be read (say, destroyed at shutdown)."""

    def __init__(self) -> None:
        from tidybot_interfaces.action import ExecuteCode
        self.request = ExecuteCode.Goal(code="print(1)")
        self.goal_id = SimpleNamespace(uuid=bytes(16))

    @property
    def is_cancel_requested(self) -> bool:
        raise RuntimeError("goal handle is not valid")

    def publish_feedback(self, feedback) -> None:
        pass


def _node_for(service: _Service) -> SimpleNamespace:
    import logging
    return SimpleNamespace(service=service, _goals={}, _seed=None,
                           get_logger=lambda: logging.getLogger("test_leftovers"))


def test_a_started_goals_execution_is_ended_even_when_its_goal_fails_between():
    from tidybot_exec.ros.node import TidybotExecNode

    service = _Service()
    node = _node_for(service)
    result = TidybotExecNode._run_goal(node, _LostGoal())
    assert service.calls == ["start", "cancel", "finish"]   # its code stopped, then ended
    assert result.execution_id == "e1" and node._goals == {}

    failing = _Service(cancel_fails=True)
    node = _node_for(failing)
    with pytest.raises(RuntimeError, match="cancel failed"):   # _execute answers it
        TidybotExecNode._run_goal(node, _LostGoal())
    assert failing.calls == ["start", "cancel", "finish"] and node._goals == {}


@contextlib.contextmanager
def spinning(name: str, callback):
    """A node whose 10 ms timer calls ``callback``, spun by a two-thread executor in a
    thread of its own: (executor, spin thread, timer); torn down afterwards."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    timer = node.create_timer(0.01, callback)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="spin", daemon=True)
    spinner.start()
    try:
        yield executor, spinner, node, timer
    finally:
        spinner.join(10)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_stopping_the_executor_is_bounded_and_names_what_did_not_end():
    from tidybot_exec.ros.node import stop_spinning

    entered, release = threading.Event(), threading.Event()

    def stuck_callback() -> None:
        entered.set()
        release.wait(60)

    with spinning("leftover_exit", stuck_callback) as (executor, spinner, node, timer):
        try:
            assert entered.wait(20)
            node.destroy_timer(timer)
            start = time.monotonic()
            unfinished = stop_spinning(executor, spinner, 1.0)
            assert time.monotonic() - start < 10
            assert len(unfinished) == 1 and "wait (threading.py" in unfinished[0], unfinished
        finally:
            release.set()

    # nothing stuck: nothing named, and the pool's threads are gone
    ticks = threading.Event()
    with spinning("leftover_exit_clean", ticks.set) as (executor, spinner, _, _):
        assert ticks.wait(20)
        assert stop_spinning(executor, spinner, 5.0) == []
        assert not spinner.is_alive()


# ------------------------------------------------------------------ the cold tree
# A stand-in for the supervisor: its own session and group, a child in that group, and
# SIGUSR1 ignored (a supervisor that does not exit), so kill() must take its last resort.
_STUBBORN = ("import os, signal, subprocess, sys, time\n"
             "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
             "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
             "print(child.pid, flush=True)\n"
             "time.sleep(120)\n")


def _tree(code: str) -> ColdTree:
    report_r, report_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    os.close(report_w)
    return ColdTree(proc, report_r)


@pytest.fixture(params=["pidfd", "no pidfd"])
def pidfds(request, monkeypatch) -> str:
    if request.param == "no pidfd":            # an old kernel, or seccomp refusing it
        def refused(pid: int) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open")
        monkeypatch.setattr(os, "pidfd_open", refused)
    return request.param


def test_a_reaped_supervisors_pid_and_group_are_never_signalled(pidfds, monkeypatch):
    tree = _tree("pass")
    assert tree.wait(20) and tree.returncode == 0
    sent: list[tuple] = []
    for module, name in ((os, "kill"), (os, "killpg"), (signal, "pidfd_send_signal")):
        monkeypatch.setattr(module, name, lambda *args, _n=name: sent.append((_n, *args)))
    tree.interrupt()
    tree.kill()
    tree.close()
    assert sent == [], "a signal went to a PID that may be anyone's by now"


def test_nothing_reaps_the_supervisor_while_a_signal_is_on_its_way(monkeypatch):
    tree = _tree("import time; time.sleep(120)")
    inside, release = threading.Event(), threading.Event()
    real_killpg = os.killpg

    def slow_killpg(pgid: int, sig: int) -> None:
        inside.set()
        release.wait(20)
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", slow_killpg)
    signaller = threading.Thread(target=tree.interrupt)
    signaller.start()
    try:
        assert inside.wait(10)
        real_killpg(tree.pid, signal.SIGKILL)     # the tree dies while the SIGINT is on its way
        wait_until(lambda: os.waitid(os.P_PID, tree.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT),
                   20, "the supervisor to exit")
        reaper = threading.Thread(target=tree.poll)
        reaper.start()
        reaper.join(0.5)
        assert reaper.is_alive(), "the supervisor was reaped while a signal named its PID"
    finally:
        release.set()
        signaller.join(10)
    reaper.join(10)
    assert tree.returncode == -signal.SIGKILL
    tree.close()


def test_kill_takes_the_whole_group_when_the_supervisor_does_not_exit(pidfds, monkeypatch):
    monkeypatch.setattr(launchers, "KILL_WAIT_S", 0.5)
    tree = _tree(_STUBBORN)
    child = int(tree.stdout.readline())
    watcher = threading.Thread(target=tree.wait)      # supervision's end watcher, no timeout
    watcher.start()
    try:
        tree.kill()
        assert tree.returncode == -signal.SIGKILL
        watcher.join(10)
        assert not watcher.is_alive()
        wait_until(lambda: not _alive(child), 20, "the supervisor's child to be killed too")
    finally:
        if tree.returncode is None:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait(20)
        tree.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init's reaping counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


# ------------------------------------------------------------------ feedback in bytes
def test_the_feedback_budget_counts_utf8_bytes_and_cuts_only_between_characters():
    queue_ = FeedbackQueue(budget_bytes=12)
    queue_.put("stdout", "ééééé\n")              # 6 characters, 11 bytes
    queue_.put("stdout", "éé\n")                 # 3 characters, 5 bytes: over the budget
    queue_.put("stdout", "a\n")                  # would fit, but follows a gap: counted too
    text = dict(queue_.drain())["stdout"]
    assert text.startswith("ééééé\n[tidybot] 7 bytes of stdout not sent")

    queue_.put("stdout", "x\n" + "é" * 10 + "\n")   # whole lines while they fit
    assert dict(queue_.drain())["stdout"].startswith("x\n[tidybot] 21 bytes of stdout")

    queue_.put("stderr", "a" + "é" * 10 + "\n")  # one line longer than a whole message
    text = dict(queue_.drain())["stderr"]
    head = text.split("\n")[0]
    assert head == "a" + "é" * 5 and len(head.encode()) == 11   # not through the 6th é
    assert "\n[tidybot] 11 bytes of stderr not sent" in text
