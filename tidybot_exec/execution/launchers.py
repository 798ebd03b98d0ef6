"""Launching an execution's processes, cold or warm, as one ``Launched`` (no rclpy).

Supervision (supervision.py) runs a ``Launched`` and cannot tell how it was started:

* **cold** (``launch_cold``): a supervisor (supervisor.py) started for this goal,
  with the code already in its files;
* **warm** (warm.py): a spare the pool started before the goal, waiting for its code.

Either way the tree's trusted end (the cold supervisor, the warm init C) reports once, on a
pipe, just before it exits: ``{"status": the code's wait status, "error": one line,
"server_error": the code never ran}`` (``read_report``); a tree killed before it could
report has none. Stopping is the tree's own: ``interrupt`` (the soft stop's SIGINT to the
code) and ``kill`` (the whole tree, now).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
    """A supervisor started for this goal (supervisor.py) and all below it."""

    def __init__(self, proc: subprocess.Popen, report_fd: int) -> None:
        self.proc, self._report_fd = proc, report_fd
        self.pid, self.stdout, self.stderr = proc.pid, proc.stdout, proc.stderr
        self._report: dict | None = None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def start(self, code: str) -> None:
        """The code was written with the launch: it already runs."""

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def interrupt(self) -> None:
        _signal_group(self.pid, signal.SIGINT)

    def kill(self) -> None:
        """The supervisor kills the whole tree; SIGKILL to the group is the last resort."""
        try:
            self.proc.send_signal(signal.SIGUSR1)
        except ProcessLookupError:
            pass
        if not self.wait(KILL_WAIT_S):
            _signal_group(self.pid, signal.SIGKILL)
            self.wait(KILL_WAIT_S)

    def report(self) -> dict:
        if self._report is None and self.poll() is not None and self._report_fd >= 0:
            self._report = read_report(self._report_fd)
        return self._report or {}

    def close(self) -> None:
        if self._report_fd >= 0:
            os.close(self._report_fd)
            self._report_fd = -1
        for pipe in (self.stdout, self.stderr):
            pipe.close()


def launch_cold(settings: ExecutorSettings, request: Request, log: Log) -> Launched:
    """Start a supervisor for ``request`` now, behind a guard of its own. The code reaches
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


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
