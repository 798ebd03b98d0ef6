"""Launching an execution's processes, cold or warm, as one ``Launched`` (no rclpy).

Supervision (supervision.py) runs a ``Launched`` and cannot tell how it was started:

* **cold** (``launch_cold``): a supervisor (supervisor.py) started for this goal,
  with the code already in its files;
* **warm** (warm.py): a spare the pool started before the goal, waiting for its code.

Either way the tree's trusted end (the cold supervisor, the warm init C) reports once, on a
pipe, just before it exits: ``{"status": the code's wait status, "error": one line,
"server_error": the code never ran}`` (``read_report``); a tree killed before it could
report has none. Stopping is the tree's own: ``interrupt`` (the soft stop's SIGINT to the
code) and ``kill`` (the whole tree, now). Neither can signal a recycled PID (``ColdTree``;
the warm tree holds its process by pidfd).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Protocol

from tidybot_sdk import protocol as proto
from tidybot_sdk.config import SdkConfig

from tidybot_exec.execution.records import Request, new_execution_id
from tidybot_exec.execution.settings import ExecutorSettings
from tidybot_exec.execution.steps import attempt
from tidybot_exec.guard.relay import Guard, code_config
from tidybot_exec.sandbox import bwrap, supervisor

Log = Callable[[str], None]
KILL_WAIT_S = 5.0           # for a killed tree to be gone (then the next, harder, step)
EXIT_POLL_S = 0.01          # without a pidfd, how often a timed wait looks for the exit


class Tree(Protocol):
    """An execution's processes as supervision sees them (ColdTree, warm.WarmTree)."""

    pid: int
    stdout: IO[bytes]
    stderr: IO[bytes]
    returncode: int | None

    def start(self, code: str) -> None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def interrupt(self) -> None: ...
    def kill(self) -> None: ...
    def report(self) -> dict: ...
    def close(self) -> None: ...


@dataclass
class Launched:
    """A started execution: its id, its working directory (removed at its end), the safety
    guard that is its only way to the robot, its process tree, and (warm) the lease
    generation it was prepared in."""

    id: str
    workdir: Path
    guard: Guard
    tree: Tree
    generation: int = 0

    def discard(self) -> list[str]:
        """Kill and release everything, each step whatever the others did; returns what
        failed (never raises: a discard is part of other ends)."""
        problems: list[str] = []
        attempt(problems, "killing its tree", self.tree.kill)
        attempt(problems, "closing its tree", self.tree.close)
        attempt(problems, "closing its guard", self.guard.close)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems


def read_report(fd: int) -> dict:
    """The tree's one report from pipe ``fd`` ({} when there is none: killed first)."""
    try:
        data = os.read(fd, 65536)
    except (BlockingIOError, OSError):
        return {}
    try:
        report = json.loads(data)
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


class ColdTree:
    """A supervisor started for this goal (supervisor.py) and all below it, in the
    supervisor's process group.

    No signal can reach a recycled PID: the supervisor is reaped only here, under
    ``_lock``, and signalled only under it while not reaped yet. Until it is reaped, its
    PID, which is also its group's id, cannot name any other process or group. Its exit is
    awaited without reaping it: on a pidfd (Linux 5.3+; the supervisor itself is also
    signalled through it), or, where pidfds are unavailable (an older kernel, a seccomp
    filter that refuses pidfd_open), by waitid(WNOWAIT), polled while a wait has a timeout.
    """

    def __init__(self, proc: subprocess.Popen, report_fd: int) -> None:
        self.proc, self._report_fd = proc, report_fd
        self.pid, self.stdout, self.stderr = proc.pid, proc.stdout, proc.stderr
        self._report: dict | None = None
        self._lock = threading.Lock()
        self._pidfd = _pidfd_open(proc.pid)     # not reaped yet, so it is our child for sure

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def start(self, code: str) -> None:
        """The code was written with the launch: it already runs."""

    def poll(self) -> int | None:
        with self._lock:
            return self.proc.poll()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the supervisor has exited (and been reaped), within ``timeout``."""
        if self.proc.returncode is None:
            self._await_exit(timeout)
        return self.poll() is not None

    def interrupt(self) -> None:
        self._signal(signal.SIGINT, group=True)

    def kill(self) -> None:
        """The supervisor kills the whole tree; SIGKILL to the group is the last resort."""
        self._signal(signal.SIGUSR1)
        if not self.wait(KILL_WAIT_S):
            self._signal(signal.SIGKILL, group=True)
            self.wait(KILL_WAIT_S)

    def report(self) -> dict:
        if self._report is None and self.poll() is not None and self._report_fd >= 0:
            self._report = read_report(self._report_fd)
        return self._report or {}

    def close(self) -> None:
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for pipe in (self.stdout, self.stderr):
            pipe.close()

    def _signal(self, sig: int, group: bool = False) -> None:
        """``sig`` to the supervisor, or to its whole process group, unless it has been
        reaped (then there is nothing of the tree left to signal by that number)."""
        with self._lock:
            if self.proc.returncode is not None:
                return
            try:
                if group:
                    os.killpg(self.pid, sig)
                elif self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:
                    os.kill(self.pid, sig)
            except ProcessLookupError:
                pass                    # all of it has exited already

    def _await_exit(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` (None: no limit) for the supervisor to exit, leaving it
        to ``poll`` to reap."""
        pidfd = self._pidfd
        if pidfd is not None:
            poller = select.poll()      # (not select.select: the node may hold 1024+ fds)
            poller.register(pidfd, select.POLLIN)
            poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
            return
        flags = os.WEXITED | os.WNOWAIT
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if deadline is None:
                os.waitid(os.P_PID, self.pid, flags)
                return
            while (os.waitid(os.P_PID, self.pid, flags | os.WNOHANG) is None
                   and time.monotonic() < deadline):
                time.sleep(EXIT_POLL_S)
        except ChildProcessError:
            pass                        # reaped meanwhile


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid``, or None where there is none (ColdTree then waits by waitid)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def launch_cold(settings: ExecutorSettings, request: Request, log: Log,
                lease: Callable[[Guard], None] = lambda guard: None) -> Launched:
    """Start a supervisor for ``request`` now, behind a guard of its own, given the parts of
    its lease (``lease``) before it listens: the code starts at once. The code reaches
    the robot — or a dry run's private simulator, which its supervisor starts on sockets in
    the workdir — only through that guard, on unix sockets in files/guard
    (bwrap.INSIDE/guard seen from inside the sandbox)."""
    execution_id = new_execution_id()
    workdir = Path(tempfile.mkdtemp(prefix=f"tidybot-{execution_id}-"))
    robot = SdkConfig.from_dict(json.loads(settings.sdk_config_json))
    upstream = robot if request.dry_run is None else robot.with_endpoints(
        proto.ipc_endpoints(str(workdir)))
    guard = Guard(upstream, workdir / "files" / "guard", log)
    try:
        lease(guard)
        guard.start()
        tree = _spawn(settings, request, execution_id, workdir, robot)
    except BaseException:
        attempt([], "closing its guard", guard.close)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Launched(execution_id, workdir, guard, tree)


def _spawn(s: ExecutorSettings, request: Request, execution_id: str, workdir: Path,
           robot: SdkConfig) -> ColdTree:
    seed = request.dry_run
    files, work = workdir / "files", workdir / "work"
    work.mkdir()
    limits = s.child_limits()
    (files / "code.py").write_text(request.code, encoding="utf-8")
    (files / "run.json").write_text(json.dumps({"limits": limits}))
    (workdir / "spec.json").write_text(json.dumps({
        "parent_pid": os.getpid(),
        "limits": limits, "hold": json.loads(s.sdk_config_json) if seed is None else None,
        "sandbox": {"bwrap": s.bwrap, "disk_bytes": s.disk_bytes, "hidden": list(s.hidden)}
        if s.bwrap else None,
        "dry_run": seed.to_dict() if seed is not None else None}))
    inside = bwrap.INSIDE if s.bwrap else str(files)
    env = bwrap.environment(
        bwrap.WORKDIR if s.bwrap else str(work),
        code_config(robot, f"{inside}/guard").to_json())
    env["TIDYBOT_EXECUTION_ID"] = execution_id
    report_r, report_w = os.pipe()
    os.set_blocking(report_r, False)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-u", supervisor.__file__, str(workdir), str(report_w)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=workdir, env=env, start_new_session=True, close_fds=True, pass_fds=(report_w,))
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)
    return ColdTree(proc, report_r)
