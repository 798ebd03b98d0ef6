"""Runs submitted code in a supervised child process (no rclpy).

An ``Execution`` is one child and its safety guard (guard.py, the code's only way to the
robot): it streams the output as feedback and ends in ``wait()``, with the child's whole
process tree dead. The child is started for its goal (``ColdTree``: a supervisor, child.py)
or was started before it (a warm ``Spare``, warm.py); both are stopped through one path:
SIGINT to the code (the SDK stops its motion), a short grace, then the whole tree is
killed; a *hard* stop (estop) skips the grace. Admission, the robot's hold, the lease and the
history record belong to the execution service (service.py), which owns every end.
A dry run drives a private simulator in the execution's own process tree (dry_run.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Protocol, Sequence

from tidybot_sdk import protocol as proto
from tidybot_sdk.config import SdkConfig

from . import child, sandbox
from .dry_run import Seed
from .guard import Guard
from .output import FeedbackQueue, HeadTail, LineSplitter
from .status import Status
from .steps import attempt
from .warm import Spare

Feedback = Callable[[str, str, str, float], None]   # (execution_id, stream, text, elapsed_s)
Log = Callable[[str], None]
KILL_WAIT_S = 5.0           # for a killed tree to be gone (then the next, harder, step)
JOIN_S = 2.0                # for the output readers to see EOF once the tree is dead


@dataclass(frozen=True)
class ExecutorSettings:
    default_timeout_s: float = 60.0
    max_timeout_s: float = 3600.0
    max_code_bytes: int = 256 * 1024
    max_output_bytes: int = 1024 * 1024
    feedback_rate_hz: float = 20.0
    feedback_max_bytes: int = 64 * 1024
    stop_grace_s: float = 1.0
    address_space_bytes: int = 4 * 1024 ** 3
    open_files: int = 1024
    file_size_bytes: int = 256 * 1024 ** 2
    sdk_config_json: str = "{}"     # the robot's endpoints and the limits: the guard's upstream
    tail_bytes: int = 4096      # of each stream, kept in history
    bwrap: str = ""             # sandbox the code with this bwrap ("": unsandboxed, unsafe)
    disk_bytes: int = 256 * 1024 ** 2       # the sandbox's writable tmpfs
    max_processes: int = 64
    hidden: tuple[str, ...] = ()            # directories the sandbox must not show
    warm_worker: bool = True                # keep a sandboxed code process ready (warm.py)

    def child_limits(self) -> dict[str, int]:
        """The code process's rlimits (child.confine)."""
        return {"address_space_bytes": self.address_space_bytes, "open_files": self.open_files,
                "file_size_bytes": self.file_size_bytes, "processes": self.max_processes}


@dataclass
class Request:
    code: str
    timeout_s: float = 0.0
    label: str = ""
    holder: str = ""
    dry_run: Seed | None = None     # set: run against a private simulator seeded with this


@dataclass
class Result:
    execution_id: str
    status: Status
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    error: str = ""
    duration_s: float = 0.0
    started: float = 0.0          # wall clock (time.time())
    finished: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    label: str = ""
    holder: str = ""
    code: str = ""
    dry_run: bool = False


@dataclass
class _StopRequest:
    status: Status
    reason: str
    hard: bool = False


def new_execution_id() -> str:
    return uuid.uuid4().hex[:12]


class Tree(Protocol):
    """An execution's processes as the stop path sees them (ColdTree, warm.WarmTree)."""

    pid: int
    stdout: IO[bytes]
    stderr: IO[bytes]
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def interrupt(self) -> None: ...
    def kill(self) -> None: ...
    def report(self) -> dict: ...
    def close(self) -> None: ...


class ColdTree:
    """A supervisor started for this goal (child.py ``supervise``) and all below it."""

    def __init__(self, proc: subprocess.Popen, workdir: Path) -> None:
        self.proc, self._workdir = proc, workdir
        self.pid, self.stdout, self.stderr = proc.pid, proc.stdout, proc.stderr

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

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
        """What the child reported: {"error": one line, "server_error": the code never ran}."""
        try:
            report = json.loads((self._workdir / "report.json").read_text())
        except (OSError, ValueError):
            return {}
        return report if isinstance(report, dict) else {}

    def close(self) -> None:
        pass


class Execution:
    """One running child, started at construction (from a warm ``spare`` when given);
    ends in ``wait()``.

    ``feedback`` is called from ``wait()``'s thread; if it raises (say the ROS context is
    gone), feedback stops and everything else goes on: the output is still in the result.
    """

    def __init__(self, settings: ExecutorSettings, request: Request, feedback: Feedback,
                 warnings: list[str], log: Log = lambda line: None,
                 spare: Spare | None = None) -> None:
        self.settings = s = settings
        self.request = request
        self._log = log
        self.id = spare.id if spare is not None else new_execution_id()
        timeout = request.timeout_s if request.timeout_s > 0 else s.default_timeout_s
        self.timeout_s = min(timeout, s.max_timeout_s)
        self._feedback = feedback
        self._queue = FeedbackQueue(s.feedback_max_bytes)
        self._capture = {"stdout": HeadTail(s.max_output_bytes), "stderr": HeadTail(s.max_output_bytes)}
        self._stop: _StopRequest | None = None
        self._stop_event = threading.Event()
        self._wake = threading.Event()      # a stop, the first output after a quiet spell, or EOF
        self._period = 1.0 / s.feedback_rate_hz
        self._flushed_at = -math.inf
        self._lock = threading.Lock()
        notes = [f"warning: {w}" for w in warnings] + (
            request.dry_run.notes() if request.dry_run else [])
        for note in notes:           # for whoever reads the feedback or the result
            line = f"[tidybot] {note}\n"
            self._queue.put("stderr", line)
            self._capture["stderr"].add(line.encode())
        self.started_wall = time.time()
        self.started = time.monotonic()
        if spare is not None:
            self.workdir, self.guard, self.tree = spare.workdir, spare.guard, spare.tree
            try:
                self.tree.start(request.code)
            except BaseException:
                spare.discard()
                raise
            return
        self.workdir = Path(tempfile.mkdtemp(prefix=f"tidybot-{self.id}-"))
        # The code reaches the robot — or a dry run's private simulator, which its supervisor
        # starts on sockets in the workdir — only through this execution's safety guard, on
        # unix sockets in files/guard (sandbox.INSIDE/guard seen from inside the sandbox).
        robot = SdkConfig.from_dict(json.loads(s.sdk_config_json))
        upstream = robot if request.dry_run is None else robot.with_endpoints(
            proto.ipc_endpoints(str(self.workdir)))
        self.guard = Guard(upstream, self.workdir / "files" / "guard", log)
        try:
            self.guard.start()
            self.tree = ColdTree(self._spawn(robot), self.workdir)
        except BaseException:
            self.guard.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    @property
    def drives_robot(self) -> bool:
        """False for a dry run: its robot is private and dies with the tree."""
        return self.request.dry_run is None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def stopping(self) -> bool:
        return self._stop is not None

    def _spawn(self, robot: SdkConfig) -> subprocess.Popen:
        s, seed = self.settings, self.request.dry_run
        files, work = self.workdir / "files", self.workdir / "work"
        work.mkdir()
        limits = s.child_limits()
        (files / "code.py").write_text(self.request.code, encoding="utf-8")
        (files / "run.json").write_text(json.dumps({"limits": limits}))
        (self.workdir / "spec.json").write_text(json.dumps({
            "parent_pid": os.getpid(),
            "limits": limits, "hold": json.loads(s.sdk_config_json) if seed is None else None,
            "sandbox": {"bwrap": s.bwrap, "disk_bytes": s.disk_bytes, "hidden": list(s.hidden)}
            if s.bwrap else None,
            "dry_run": seed.to_dict() if seed is not None else None}))
        inside = sandbox.INSIDE if s.bwrap else str(files)
        env = sandbox.environment(
            sandbox.WORKDIR if s.bwrap else str(work),
            robot.with_endpoints(proto.ipc_endpoints(f"{inside}/guard")).to_json())
        env["TIDYBOT_EXECUTION_ID"] = self.id
        return subprocess.Popen(
            [sys.executable, "-I", "-u", child.__file__, "supervise", str(self.workdir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.workdir, env=env, start_new_session=True, close_fds=True)

    # ------------------------------------------------------------------ stopping
    def stop(self, status: Status, reason: str, hard: bool = False) -> bool:
        """Ask the execution to stop (returns at once). The first reason given wins, except
        that a hard stop (no grace: estop) overrides a soft one still in its grace."""
        with self._lock:
            if self.tree.poll() is not None or (self._stop is not None and (
                    self._stop.hard or not hard)):
                return False
            self._stop = _StopRequest(status, reason, hard)
        self.guard.stop_motion()
        self._stop_event.set()
        self._wake.set()
        return True

    def _kill(self) -> None:
        """The stop path: SIGINT to the code (KeyboardInterrupt) and a grace (skipped, or
        cut short, by a hard stop), then the whole tree is killed."""
        deadline = time.monotonic() + self.settings.stop_grace_s
        if not self._stop.hard:
            self.tree.interrupt()
            while not self._stop.hard and time.monotonic() < deadline:
                if self.tree.wait(0.02):
                    return
        self.tree.kill()

    # ---------------------------------------------------------------------- run
    def wait(self) -> Result:
        """Supervise the child until it ends; returns the full result with the child's tree
        dead and its working directory removed. Exception-safe: a step that fails (a bug,
        a hung guard) is named in ``error`` and every later step still runs; the status is
        ERROR only when the server's own fault could have changed the outcome, and the
        output is kept either way."""
        problems: list[str] = []
        threads = [threading.Thread(target=self._read, args=(name, pipe), daemon=True)
                   for name, pipe in (("stdout", self.tree.stdout), ("stderr", self.tree.stderr))]
        threads.append(threading.Thread(target=self._watch_end, daemon=True))
        for t in threads:
            t.start()
        faulted = attempt(problems, "supervision", self._supervise)
        faulted = self._end(problems, threads) or faulted
        self._flush_feedback()
        result: Result | None = None
        try:
            result = self._result()
        except Exception as exc:  # noqa: BLE001 - the output is still returned
            problems.append(f"building the result: {exc!r}")
        attempt(problems, "closing the tree", self.tree.close)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if result is None or faulted:
            fallback = self.fallback_result("; ".join(problems))
            result = fallback if result is None else dataclasses.replace(
                result, status=Status.ERROR, error=fallback.error)
        elif problems:
            result.error = "; ".join(filter(None, [result.error, *problems]))
        result.finished = time.time()
        return result

    def _supervise(self) -> None:
        """Feedback, the timeout and the stop path, until the tree is dead or stopped."""
        # Feedback is coalesced to feedback_rate_hz with a leading edge: output after a quiet
        # spell of one period goes out at once (the reader wakes this loop), the rest waits
        # for the period. EOF wakes it too, so the end is seen without waiting a period.
        deadline = self.started + self.timeout_s
        while self.tree.poll() is None:
            self._flush_feedback()
            self._wake.wait(min(self._period, max(0.0, deadline - time.monotonic())))
            self._wake.clear()
            if self._stop_event.is_set():
                self._kill()
                return
            if time.monotonic() >= deadline:
                self.stop(Status.TIMEOUT, f"timed out after {self.timeout_s:g}s")

    def _end(self, problems: list[str], threads: Sequence[threading.Thread] = ()) -> bool:
        """The steps after supervision, each run whatever the others did: the tree dead,
        the guard closed (no command of the code reaches the robot after it), the output
        readers done. True when the tree may still be alive: the server's fault."""
        alive = attempt(problems, "killing the process tree", self._ensure_dead) and (
            self.tree.returncode is None)
        attempt(problems, "closing the safety guard", self.guard.close)
        deadline = time.monotonic() + JOIN_S
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return alive

    def _ensure_dead(self) -> None:
        if self.tree.poll() is None:
            self.tree.kill()
        if self.tree.poll() is None:
            raise RuntimeError(f"process tree {self.tree.pid} still alive after SIGKILL")

    def abort(self, reason: str) -> list[str]:
        """The last resort when ``wait`` itself failed: kill the tree without grace, close
        the guard and clean up; returns what failed on the way."""
        with self._lock:
            if self._stop is None:
                self._stop = _StopRequest(Status.ERROR, reason, hard=True)
        problems: list[str] = []
        self._end(problems)
        attempt(problems, "closing the tree", self.tree.close)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    def fallback_result(self, error: str) -> Result:
        """An ERROR result that still carries the output captured so far."""
        out, err = self._capture["stdout"], self._capture["stderr"]
        return Result(
            execution_id=self.id, status=Status.ERROR,
            exit_code=self.tree.returncode if self.tree.returncode is not None else -1,
            stdout=out.text(), stderr=err.text(), truncated=out.truncated or err.truncated,
            error=error, duration_s=self.elapsed, started=self.started_wall,
            finished=time.time(), stdout_tail=out.last(self.settings.tail_bytes),
            stderr_tail=err.last(self.settings.tail_bytes), label=self.request.label,
            holder=self.request.holder, code=self.request.code,
            dry_run=self.request.dry_run is not None)

    def _watch_end(self) -> None:
        """Wake the loop the moment the tree is dead (not a feedback period later)."""
        self.tree.wait()
        self._wake.set()

    def _read(self, stream: str, pipe) -> None:
        splitter, capture = LineSplitter(), self._capture[stream]
        fd = pipe.fileno()
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            capture.add(data)
            lines = splitter.feed(data)
            if lines:
                self._queue.put(stream, lines)
                if time.monotonic() - self._flushed_at >= self._period:
                    self._wake.set()
        rest = splitter.flush()
        if rest:
            self._queue.put(stream, rest)
        pipe.close()
        self._wake.set()

    def _flush_feedback(self) -> None:
        for stream, text in self._queue.drain():
            self._flushed_at = time.monotonic()
            if self._feedback is None:
                continue
            try:
                self._feedback(self.id, stream, text, self.elapsed)
            except Exception as exc:  # noqa: BLE001 - the end path must run whatever happens
                self._feedback = None
                self._log(f"execution {self.id}: feedback stopped ({exc!r}); the result keeps "
                          f"the whole output")

    def _result(self) -> Result:
        code = self.tree.returncode
        report = self.tree.report()
        if self._stop is not None:
            status, error = self._stop.status, self._stop.reason
        elif code == 0 and not self.guard.refusals:
            status, error = Status.SUCCEEDED, ""
        else:
            status = Status.ERROR if report.get("server_error") else Status.FAILED
            error = report.get("error") or exit_description(code)
        refusals = self.guard.refusals
        if refusals:
            error = "; ".join(filter(None, [error, f"the safety guard refused {len(refusals)} "
                                                   f"command(s), first: {refusals[0]}"]))
        out, err = self._capture["stdout"], self._capture["stderr"]
        return Result(
            execution_id=self.id, status=status, exit_code=code, stdout=out.text(),
            stderr=err.text(), truncated=out.truncated or err.truncated, error=error,
            duration_s=self.elapsed, started=self.started_wall,
            stdout_tail=out.last(self.settings.tail_bytes),
            stderr_tail=err.last(self.settings.tail_bytes), label=self.request.label,
            holder=self.request.holder, code=self.request.code,
            dry_run=self.request.dry_run is not None)


def unstarted(request: Request, status: Status, reason: str) -> Result:
    """The result of a request that never ran (REJECTED or ERROR)."""
    now = time.time()
    return Result(execution_id=new_execution_id(), status=status, error=reason,
                  started=now, finished=now, label=request.label, holder=request.holder,
                  code=request.code, dry_run=request.dry_run is not None)


def exit_description(code: int) -> str:
    """How a process ended, for ``error`` ("" for exit 0); any signal number works, named
    or not (real-time signals have no name in ``signal.Signals``)."""
    if code >= 0:
        return f"exited with code {code}" if code else ""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = (f"SIGRTMIN+{-code - signal.SIGRTMIN}"
                if signal.SIGRTMIN <= -code <= signal.SIGRTMAX else "unnamed")
    return f"killed by signal {-code} ({name})"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
