"""Executions tidybot-mcp follows for its client, past the tool call that started them.

execute_code waits at most its budget; the Job lives on (a thread of its own follows the
goal to its result through the TidybotClient), so get_execution continues where the call
stopped and a cancel reaches the goal whoever asks. Tool calls never wait inside rclpy:
they wait on the Job's condition in a worker thread, notified by each feedback message, by
execution/status and by the end. A Job is also where ``--approval dry-run-first`` lives:
the same code as a dry run first, then for real only if that passed.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import ExecutionStatus

from tidybot_exec.clients.client import ExecutionHandle, TidybotClientError
from tidybot_exec.clients.mcp import models as m
from tidybot_exec.clients.mcp.lease import RobotBusy
from tidybot_exec.clients.mcp.robot import Robot
from tidybot_exec.ros.qos import LATCHED

R = ExecuteCode.Result
WORDS: dict[int, m.StatusWord] = {
    R.STATUS_SUCCEEDED: "succeeded", R.STATUS_FAILED: "failed", R.STATUS_TIMEOUT: "timeout",
    R.STATUS_CANCELED: "canceled", R.STATUS_REJECTED: "rejected", R.STATUS_ERROR: "error"}
ANSWER_CHARS = 20_000       # of one stream in one answer: the model's context is what is scarce
PROGRESS_LINES = 2_000      # kept for progress notifications; a waiter further behind skips
# supervision.py names every refusal in the error (and never reports SUCCEEDED with one)
GUARD_REFUSAL = "the safety guard refused"
LEASE_REFUSALS = ("no lease", "invalid lease")   # validation's words: take the lease again
ACCEPT_S = 30.0             # for the node to accept a goal
RESULT_SLICE_S = 1.0        # waits for a result are this long, so that closing is noticed
END_MARGIN_S = 300.0        # past a goal's own timeout: its stop, hold and on_failure rewind
KEEP_JOBS = 50              # finished jobs get_execution still finds


def result_slice(handle: ExecutionHandle, deadline: float, closing: threading.Event,
                 what: str) -> Any | None:
    """The goal's result, or None when it has not come within RESULT_SLICE_S; raises
    TidybotClientError once the server is closing or ``deadline`` (monotonic) passed, so no
    wait for a node that died is endless."""
    try:            # after acceptance, result() fails only by timing out
        return handle.result(RESULT_SLICE_S)
    except TidybotClientError:
        if closing.is_set():
            raise TidybotClientError("tidybot-mcp is shutting down") from None
        if time.monotonic() > deadline:
            raise TidybotClientError(f"no result from the node in time for {what}: is "
                                     f"tidybot_exec still running?") from None
        return None


def cancel_quietly(handle: ExecutionHandle, closing: threading.Event) -> None:
    """Best effort, for a goal about to be left: cancel it if it was (or is soon) accepted.
    Not once the server is closing: the lease's release ends it then."""
    if closing.is_set():
        return
    try:
        handle.cancel()
    except TidybotClientError:
        pass                # never accepted, or the node is gone: nothing runs to stop


def passed(result: R) -> bool:
    """A dry run approves the code: it succeeded, with no safety-guard refusal."""
    return result.status == R.STATUS_SUCCEEDED and GUARD_REFUSAL not in result.error


@dataclass(frozen=True)
class Goal:
    """What execute_code asked for."""
    code: str
    timeout_s: float
    label: str
    dry_run: bool
    on_failure: str


class Stream:
    """One output stream of one goal as the model reads it: what it has not been given yet
    (bounded: the first and the last ANSWER_CHARS / 2 of it), and a digest of all feedback
    brought, to tell at the end whether the result's complete text continues it."""

    HALF = ANSWER_CHARS // 2

    def __init__(self) -> None:
        self.received = 0           # characters brought by feedback
        self._given = 0             # ... of which the model has been given (or skipped)
        self._head = self._tail = ""
        self._skipped = 0
        self._note = ""
        self._digest = hashlib.sha256()
        self._finished = False

    def add(self, text: str) -> None:
        if self._finished:          # feedback after the result: the result had it already
            return
        self.received += len(text)
        self._digest.update(text.encode())
        self._keep(text)

    def _keep(self, text: str) -> None:
        room = self.HALF - len(self._head)
        if room > 0:
            self._head, text = self._head + text[:room], text[room:]
        self._tail += text
        if len(self._tail) > self.HALF:
            self._skipped += len(self._tail) - self.HALF
            self._tail = self._tail[-self.HALF:]

    def take(self) -> tuple[str, bool]:
        """What the model has not been given yet, and whether some of it is left out."""
        cut = f"\n[... {self._skipped} characters not shown ...]\n" if self._skipped else ""
        text, clipped = self._note + self._head + cut + self._tail, bool(self._skipped)
        self._head = self._tail = self._note = ""
        self._skipped, self._given = 0, self.received
        return text, clipped

    def finish(self, full: str | None) -> str:
        """The end: ``full`` is the result's complete text (None when the node cut it to head
        and tail), which also has what feedback had not brought yet, or had skipped. Returns
        the text feedback had not brought yet (it may come after the result)."""
        if self._finished or full is None:
            self._finished = True
            return ""
        self._finished = True
        continues = hashlib.sha256(full[:self.received].encode()).digest() == self._digest.digest()
        late = full[self.received:] if continues else ""
        self._head = self._tail = ""
        self._skipped = 0
        if not continues:           # live feedback skipped some: start again, saying so
            self._given = 0
            self._note = "[the whole output again: live feedback had left some out]\n"
        self._keep(full[self._given:])
        self.received = len(full)
        return late


class Step:
    """One goal of a job: its run, or the dry run that approves it."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.execution_id = ""
        self.handle: ExecutionHandle | None = None
        self.result: R | None = None
        self.streams = {"stdout": Stream(), "stderr": Stream()}
        self.started = time.monotonic()

    def end(self, result: R) -> dict[str, str]:
        """Takes the result; returns each stream's text that feedback had not brought yet."""
        self.result = result
        self.execution_id = result.execution_id
        late = {name: stream.finish(None if result.truncated else getattr(result, name))
                for name, stream in self.streams.items()}
        result.stdout = result.stderr = ""      # the streams have what the model is given
        return late

    def check(self) -> m.DryRunCheck:
        r = self.result
        return m.DryRunCheck(execution_id=self.execution_id, status=WORDS[r.status],
                             error=r.error or ("" if passed(r) else "it did not succeed"),
                             duration_s=r.duration_s, passed=passed(r))


class Job:
    """One execute_code: its goal (after its approving dry run), followed to the end."""

    def __init__(self, robot: Robot, goal: Goal, approve: bool) -> None:
        self.robot, self.goal = robot, goal
        self.approve = approve and not goal.dry_run     # a dry run moves nothing: no approval
        self.steps: list[Step] = []
        self.done = False
        self.failure = ""           # the server could not follow it (lease, node gone...)
        self.version = 0            # moves on with every change; waiters wait for it to
        self._lines: deque[str] = deque(maxlen=PROGRESS_LINES)
        self.line_count = 0
        self._cancelled = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drive, name="tidybot-mcp-job", daemon=True)

    # ------------------------------------------------------------ the job's thread
    def start(self) -> None:
        self._thread.start()

    def _drive(self) -> None:
        try:
            with self.robot.lease.in_use():
                if self.approve and not passed(self._run(dry_run=True).result):
                    return
                if not self._cancelled:
                    self._run(dry_run=self.goal.dry_run)
        except (TidybotClientError, RobotBusy) as exc:
            self.failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - the model is told, not left waiting
            self.failure = f"tidybot-mcp lost the execution: {type(exc).__name__}: {exc}"
        finally:
            def end() -> None:
                self.done = True
                for step in self.steps:     # a kept job keeps its answer, not its goal
                    step.handle = None
            self._update(end)

    def _run(self, dry_run: bool) -> Step:
        step = Step(dry_run)
        self._update(lambda: self.steps.append(step))
        g = self.goal
        for attempt in (1, 2):
            if self._cancelled:             # cancelled while the lease was being taken
                raise TidybotClientError("canceled before its goal was sent: nothing ran")
            handle = self.robot.client.execute(
                g.code, timeout_s=g.timeout_s, label=g.label, dry_run=dry_run,
                lease_id=self.robot.lease.token(), on_failure=g.on_failure,
                feedback_callback=partial(self._on_feedback, step))
            with self._changed:
                step.handle = handle
            result = self._result_of(handle)
            if not (attempt == 1 and not self._cancelled and result.status == R.STATUS_REJECTED
                    and result.error.startswith(LEASE_REFUSALS)):
                break
            self.robot.lease.forget()       # it ended under us: the goal never ran, send again

        def end() -> None:
            for stream, late in step.end(result).items():
                self._queue_lines(step, stream, late)
        self._update(end)
        return step

    def _result_of(self, handle: ExecutionHandle) -> R:
        """The goal's result; a goal this job can no longer follow (not accepted in time, no
        result by its deadline) is cancelled on the way out, never left running unwatched."""
        try:
            handle.accepted(ACCEPT_S)
            if self._cancelled:         # a cancel that came before the acceptance is sent now
                handle.cancel()
            deadline = time.monotonic() + self.goal.timeout_s + END_MARGIN_S
            result = None
            while result is None:
                result = result_slice(handle, deadline, self.robot.closing,
                                      f"a goal {END_MARGIN_S:g}s past its timeout")
            return result
        except TidybotClientError:
            cancel_quietly(handle, self.robot.closing)
            raise

    def _on_feedback(self, step: Step, fb: ExecuteCode.Feedback) -> None:
        """In the spinning thread: keep the text, queue its lines for progress."""
        def apply() -> None:
            step.execution_id = step.execution_id or fb.execution_id
            step.streams[fb.stream].add(fb.text)
            self._queue_lines(step, fb.stream, fb.text)
        self._update(apply)

    def _queue_lines(self, step: Step, stream: str, text: str) -> None:
        """Lines for progress notifications, marked "dry run|", "stderr|" where they are."""
        prefix = " ".join(filter(None, ("dry run" if step.dry_run else "",
                                        "stderr" if stream == "stderr" else "")))
        for line in text.splitlines():
            self._lines.append(f"{prefix}| {line}" if prefix else line)
            self.line_count += 1

    def _update(self, change: Callable[[], object]) -> None:
        with self._changed:
            change()
            self.version += 1
            self._changed.notify_all()

    # ------------------------------------------------------------ for the tools
    def wait_change(self, since: int, timeout_s: float) -> None:
        """Until something changed after version ``since``, or ``timeout_s``."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != since, timeout_s)

    def lines_since(self, count: int) -> tuple[list[str], int]:
        """Output lines after the first ``count`` (those still kept), and the count now."""
        with self._changed:
            first_kept = self.line_count - len(self._lines)
            return list(self._lines)[max(0, count - first_kept):], self.line_count

    @property
    def execution_id(self) -> str:
        return self.steps[-1].execution_id if self.steps else ""

    def ids(self) -> list[str]:
        return [s.execution_id for s in self.steps if s.execution_id]

    def identify(self, status: ExecutionStatus) -> None:
        """execution/status names the running execution before any output does."""
        if status.state in ("running", "stopping") and status.holder == self.robot.holder:
            def apply() -> None:
                step = self.steps[-1] if self.steps else None
                if step is not None and step.result is None and not step.execution_id:
                    step.execution_id = status.execution_id
            self._update(apply)

    def cancel(self) -> None:
        """Cancel the goal that runs (the robot holds) and any still to come. A goal not yet
        accepted is cancelled by the job's thread the moment it is."""
        with self._changed:
            self._cancelled = True
            handle = next((s.handle for s in self.steps if s.result is None), None)
        if handle is not None and handle.is_accepted():
            handle.cancel()

    def answer(self) -> m.ExecutionAnswer:
        """How far it got; hands over the output the model has not been given yet."""
        with self._changed:
            step = self.steps[-1] if self.steps else None
            (out, out_cut), (err, err_cut) = (step.streams[name].take() if step else ("", False)
                                              for name in ("stdout", "stderr"))
            first = self.steps[0] if self.steps else None
            approval = first.check() if self.approve and first and first.result else None
            result = step.result if step and self.done else None
            if result is not None:
                end = dict(status=WORDS[result.status], exit_code=result.exit_code,
                           error=result.error, duration_s=result.duration_s)
            elif self.done:
                end = dict(status="error", exit_code=None, error=self.failure, duration_s=0.0)
            else:
                end = dict(status="running", exit_code=None, error="", duration_s=round(
                    time.monotonic() - step.started, 3) if step else 0.0)
            return m.ExecutionAnswer(
                execution_id=self.execution_id, stdout=out, stderr=err,
                truncated=bool(result and result.truncated) or out_cut or err_cut,
                dry_run=step.dry_run if step else self.goal.dry_run, approval=approval, **end)

    def forget_progress(self) -> None:
        """A newer job started: this one's lines are no longer sent as progress (its answer
        keeps its output), so the kept jobs hold no more than their answers."""
        with self._changed:
            self._lines.clear()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)


class JobBook:
    """This server's jobs: the one that runs (one at a time: the robot runs one goal at a
    time anyway) and the last KEEP_JOBS, found by any of their execution ids."""

    def __init__(self, robot: Robot, approve: bool) -> None:
        self.robot, self.approve = robot, approve
        self._jobs: deque[Job] = deque(maxlen=KEEP_JOBS)
        self._lock = threading.Lock()
        self._starting = threading.Lock()       # one check-then-start at a time
        robot.node.create_subscription(ExecutionStatus, robot.topic("execution/status"),
                                       self._on_status, LATCHED)

    def _on_status(self, status: ExecutionStatus) -> None:
        running = self.running()
        if running is not None and status.execution_id not in self._known_ids():
            running.identify(status)

    def _known_ids(self) -> set[str]:
        with self._lock:
            return {i for job in self._jobs for i in job.ids()}

    def running(self) -> Job | None:
        with self._lock:
            return next((job for job in self._jobs if not job.done), None)

    def start(self, goal: Goal) -> Job:
        """Take the lease if needed and start ``goal``; refused while another job runs."""
        self.robot.ready()
        with self._starting:
            busy = self.running()
            if busy is not None:
                raise TidybotClientError(
                    f"execution {busy.execution_id or '(starting)'} is still running: wait for "
                    f"it with get_execution, or stop it with cancel_execution, first")
            self.robot.lease.token()    # a busy robot is the caller's error now, not the job's
            job = Job(self.robot, goal, self.approve)
            with self._lock:
                for old in self._jobs:
                    old.forget_progress()
                self._jobs.append(job)
        job.start()
        return job

    def find(self, execution_id: str) -> Job | None:
        with self._lock:
            return next((job for job in reversed(self._jobs) if execution_id in job.ids()), None)

    def close(self) -> None:
        """Leave every job's thread (the goals themselves end with the lease's release)."""
        self.robot.closing.set()
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.join(RESULT_SLICE_S * 3)
