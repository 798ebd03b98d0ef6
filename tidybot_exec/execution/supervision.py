"""Supervision of one execution: its running tree, the feedback, the timeout, the stop path
and the result (no rclpy).

An ``Execution`` runs a ``Launched`` (launchers.py: started cold for its goal, or a warm
spare started before it; supervision cannot tell them apart) and ends in ``wait()``, with
the whole process tree dead. It streams the output as feedback. The stop path: SIGINT to
the code (the SDK stops its motion), a short grace, then the whole tree is killed; a
*hard* stop (estop) skips the grace; from the moment a stop is asked the guard refuses
further motion. Admission, the robot's hold, the lease and the history record belong to
the execution service (service.py), which owns every end.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from tidybot_exec.execution.launchers import Launched
from tidybot_exec.execution.output import FeedbackQueue, HeadTail, LineSplitter
from tidybot_exec.execution.records import Request, Result, Status, exit_description
from tidybot_exec.execution.settings import ExecutorSettings
from tidybot_exec.execution.steps import attempt

Feedback = Callable[[str, str, str, float], None]   # (execution_id, stream, text, elapsed_s)
Log = Callable[[str], None]
JOIN_S = 2.0                # for the output readers to see EOF once the tree is dead


@dataclass
class _StopRequest:
    status: Status
    reason: str
    hard: bool = False


class Execution:
    """Supervises one ``Launched`` from the moment its code is handed over; ends in
    ``wait()``.

    ``feedback`` is called from ``wait()``'s thread; if it raises (say the ROS context is
    gone), feedback stops and everything else goes on: the output is still in the result.
    If the code cannot be handed over, the launched tree is discarded and the error raised.
    """

    def __init__(self, settings: ExecutorSettings, request: Request, launched: Launched,
                 feedback: Feedback, warnings: list[str], log: Log = lambda line: None) -> None:
        self.settings = s = settings
        self.request = request
        self._log = log
        self.id, self.workdir = launched.id, launched.workdir
        self.guard, self.tree = launched.guard, launched.tree
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
        try:
            self.tree.start(request.code)
        except BaseException:
            launched.discard()
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

    # ------------------------------------------------------------------ stopping
    def stop(self, status: Status, reason: str, hard: bool = False) -> bool:
        """Ask the execution to stop (returns at once). The first reason given wins, except
        that a hard stop (no grace: estop) overrides a soft one still in its grace."""
        with self._lock:
            if self.tree.poll() is not None or (self._stop is not None and (
                    self._stop.hard or not hard)):
                return False
            self._stop = _StopRequest(status, reason, hard)
        self.guard.refuse_motion()
        self._stop_event.set()
        self._wake.set()
        return True

    def _stop_path(self) -> None:
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
                self._stop_path()
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
