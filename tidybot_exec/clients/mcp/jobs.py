"""What tidybot-mcp follows for its client past the tool call that started it: code, a
rewind, a skill save.

A call waits at most its budget (wait_s); the Job lives on (a thread of its own follows it to
its end through the TidybotClient), so get_execution continues where the call stopped and a
cancel reaches it whoever asks. Tool calls never wait inside rclpy: they wait on the Job's
condition in a worker thread, notified by each change (feedback, execution/status, the end).
The three kinds share all of that, their progress notifications and the shape of their
answer; they differ only in what they send and what a cancel can stop:

- CodeJob: an execute_code goal (first the dry run that approves it, with
  ``--approval dry-run-first``); a cancel cancels the goal.
- RewindJob: a rewind goal; a cancel cancels the goal.
- SaveJob: a skills/save request. The node cannot take a request back, so a cancel stops
  the save's dry runs under this server's lease (execution/stop, until the reply): a save
  with a dry run still running or still to come is then refused by the node itself. A save
  already past its dry runs (or with none) is saved anyway, and the answer says so: the
  model is told what happened, never "canceled" for a skill that was stored.

A call the client cancelled gets no answer (MCP), so the model believes it was cancelled;
JobBook.news() has the end of every such job that ended otherwise, and the tools put it
beside their next answer.
"""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, NamedTuple

from tidybot_interfaces.action import ExecuteCode, Rewind
from tidybot_interfaces.msg import ExecutionStatus

from tidybot_exec.clients.client import ExecutionHandle, TidybotClientError
from tidybot_exec.clients.mcp import models as m
from tidybot_exec.clients.mcp.lease import RobotBusy
from tidybot_exec.clients.mcp.robot import Robot
from tidybot_exec.clients.mcp.text import WHAT
from tidybot_exec.ros.qos import LATCHED

R = ExecuteCode.Result
WORDS: dict[int, m.StatusWord] = {
    R.STATUS_SUCCEEDED: "succeeded", R.STATUS_FAILED: "failed", R.STATUS_TIMEOUT: "timeout",
    R.STATUS_CANCELED: "canceled", R.STATUS_REJECTED: "rejected", R.STATUS_ERROR: "error"}
ANSWER_CHARS = 20_000       # of one stream in one answer: the model's context is what is scarce
PROGRESS_KEPT = 2_000       # notifications kept for waiters; a waiter further behind skips
# supervision.py names every refusal in the error (and never reports SUCCEEDED with one)
GUARD_REFUSAL = "the safety guard refused"
LEASE_REFUSALS = ("no lease", "invalid lease")   # validation's words: take the lease again
ACCEPT_S = 30.0             # for the node to accept a goal
RESULT_SLICE_S = 1.0        # waits for a result are this long, so that closing is noticed
END_MARGIN_S = 300.0        # past a goal's own timeout: its stop, hold and on_failure rewind
REWIND_LIMIT_S = 3600.0     # a rewind drives back a path at half speed: this long at most
STOP_EVERY_S = 0.5          # a cancelled save asks execution/stop again this often, and at
                            # once when a dry run of it starts, until the node replies
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


class Progress(NamedTuple):
    """One progress notification, as ctx.report_progress takes it (progress increases)."""
    progress: float
    total: float | None
    message: str


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
    """One goal of a CodeJob: its run, or the dry run that approves it."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.execution_id = ""
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
    """What one call started, followed to its end in a thread of its own. Subclasses say
    what is sent (``_run``), how far it is (``_answer``) and what its ids are."""

    kind: m.JobKind

    def __init__(self, robot: Robot) -> None:
        self.robot = robot
        self.done = False
        self.failure = ""           # the server could not follow it (lease, node gone...)
        self.version = 0            # moves on with every change; waiters wait for it to
        self.started = time.monotonic()
        self.ended = 0.0            # monotonic, once done
        self.progress_count = 0
        self._progress: deque[Progress] = deque(maxlen=PROGRESS_KEPT)
        self._cancelled = False
        self._sent = False          # its goal (a CodeJob: its last step's) went to the node
        self._goal: ExecutionHandle | None = None   # the goal being followed now
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drive, name=f"tidybot-mcp-{self.kind}",
                                        daemon=True)

    # ------------------------------------------------------------ the job's thread
    def start(self) -> None:
        self._thread.start()

    def _drive(self) -> None:
        try:
            with self.robot.lease.in_use():
                self._run()
        except (TidybotClientError, RobotBusy) as exc:
            self.failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - the model is told, not left waiting
            self.failure = f"tidybot-mcp lost the {self.kind}: {type(exc).__name__}: {exc}"
        finally:
            def end() -> None:
                self.done, self.ended = True, time.monotonic()
            self._update(end)

    def _run(self) -> None:
        raise NotImplementedError

    def _follow_goal(self, send: Callable[[], ExecutionHandle], limit_s: float, what: str
                     ) -> Any:
        """Send a goal and return its result. A cancel that came before the node accepted it
        is sent the moment it does; a goal this job can no longer follow (not accepted in
        time, no result within ``limit_s``) is cancelled on the way out, never left running
        unwatched."""
        if self._cancelled:             # cancelled while the lease was being taken
            raise TidybotClientError("canceled before its goal was sent: nothing ran")
        handle = send()
        with self._changed:
            self._goal, self._sent = handle, True
        try:
            handle.accepted(ACCEPT_S)
            if self._cancelled:
                handle.cancel()
            deadline = time.monotonic() + limit_s
            result = None
            while result is None:
                result = result_slice(handle, deadline, self.robot.closing, what)
            return result
        except TidybotClientError:
            cancel_quietly(handle, self.robot.closing)
            raise
        finally:
            with self._changed:         # a kept job keeps its answer, not its goal
                self._goal = None

    def _note(self, progress: float, total: float | None, message: str) -> None:
        """A progress notification for the calls that follow (the lock held)."""
        self._progress.append(Progress(progress, total, message))
        self.progress_count += 1

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

    def progress_since(self, count: int) -> tuple[list[Progress], int]:
        """Notifications after the first ``count`` (those still kept), and the count now."""
        with self._changed:
            first_kept = self.progress_count - len(self._progress)
            return list(self._progress)[max(0, count - first_kept):], self.progress_count

    @property
    def execution_id(self) -> str:
        """The id its answers give ("" until the node named a CodeJob's execution)."""
        raise NotImplementedError

    def ids(self) -> list[str]:
        """Every id get_execution finds it by."""
        return [self.execution_id]

    def identify(self, status: ExecutionStatus) -> None:
        """execution/status, for a job that learns something from it."""

    def cancel(self) -> None:
        """Cancel the goal that runs (the robot holds) and any still to come. A goal not yet
        accepted is cancelled by the job's thread the moment it is."""
        with self._changed:
            self._cancelled = True
            handle = self._goal
        if handle is not None and handle.is_accepted():
            handle.cancel()

    def answer(self, hand_over: bool = True) -> m.ExecutionAnswer:
        """How far it got; with ``hand_over`` the output the model has not been given yet
        goes with it (and is not given again)."""
        with self._changed:
            return self._answer(hand_over)

    def _answer(self, hand_over: bool) -> m.ExecutionAnswer:
        raise NotImplementedError

    def _settled(self, success: bool, message: str) -> dict[str, Any]:
        """The end of a rewind or a save: its status word and error."""
        if success:
            return dict(status="succeeded", error="")
        return dict(status="canceled" if self._cancelled else "failed", error=message)

    def _unsettled(self) -> dict[str, Any]:
        """Status and error before the end, or when the server lost it (or was cancelled
        before it sent anything: then nothing ran)."""
        if not self.done:
            return dict(status="running", error="")
        return dict(status="canceled" if self._cancelled and not self._sent else "error",
                    error=self.failure)

    def forget_progress(self) -> None:
        """A newer job started: this one's progress is no longer sent (its answer keeps its
        output), so the kept jobs hold no more than their answers."""
        with self._changed:
            self._progress.clear()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)


@dataclass(frozen=True)
class Goal:
    """What execute_code asked for."""
    code: str
    timeout_s: float
    label: str
    dry_run: bool
    on_failure: str


class CodeJob(Job):
    """One execute_code: its goal (after its approving dry run), followed to the end."""

    kind = "code"

    def __init__(self, robot: Robot, goal: Goal, approve: bool) -> None:
        super().__init__(robot)
        self.goal = goal
        self.approve = approve and not goal.dry_run     # a dry run moves nothing: no approval
        self.steps: list[Step] = []

    def _run(self) -> None:
        if self.approve and not passed(self._step(dry_run=True).result):
            return
        self._step(dry_run=self.goal.dry_run)   # (cancelled meanwhile: it says so, unsent)

    def _step(self, dry_run: bool) -> Step:
        step = Step(dry_run)

        def begin() -> None:
            self.steps.append(step)
            self._sent = False          # what the answer is about now is this step's goal
        self._update(begin)
        g = self.goal
        for attempt in (1, 2):
            result = self._follow_goal(lambda: self.robot.client.execute(
                g.code, timeout_s=g.timeout_s, label=g.label, dry_run=dry_run,
                lease_id=self.robot.lease.token(), on_failure=g.on_failure,
                feedback_callback=partial(self._on_feedback, step)),
                g.timeout_s + END_MARGIN_S, f"a goal {END_MARGIN_S:g}s past its timeout")
            if not (attempt == 1 and not self._cancelled and result.status == R.STATUS_REJECTED
                    and result.error.startswith(LEASE_REFUSALS)):
                break
            self.robot.lease.forget()       # it ended under us: the goal never ran, send again

        def end() -> None:
            for stream, late in step.end(result).items():
                self._queue_lines(step, stream, late)
        self._update(end)
        return step

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
            self._note(self.progress_count + 1, None, f"{prefix}| {line}" if prefix else line)

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

    def _answer(self, hand_over: bool) -> m.ExecutionAnswer:
        step = self.steps[-1] if self.steps else None
        (out, out_cut), (err, err_cut) = (
            step.streams[name].take() if step and hand_over else ("", False)
            for name in ("stdout", "stderr"))
        first = self.steps[0] if self.steps else None
        approval = first.check() if self.approve and first and first.result else None
        result = step.result if step and self.done else None
        if result is not None:
            end = dict(status=WORDS[result.status], exit_code=result.exit_code,
                       error=result.error, duration_s=result.duration_s,
                       collisions=list(result.collisions),
                       moved_objects=list(result.moved_objects))
        else:
            running_s = time.monotonic() - step.started if step and not self.done else 0.0
            end = dict(self._unsettled(), exit_code=None, duration_s=round(running_s, 3))
        return m.ExecutionAnswer(
            execution_id=self.execution_id, kind=self.kind, stdout=out, stderr=err,
            truncated=bool(result and result.truncated) or out_cut or err_cut,
            dry_run=step.dry_run if step else self.goal.dry_run, approval=approval, **end)


class OwnIdJob(Job):
    """A rewind or a save: the node gives it no execution id, so the server names it
    (``rewind-…``, ``save-…``: never a node id, which is 12 hex digits)."""

    id_prefix: str

    def __init__(self, robot: Robot) -> None:
        super().__init__(robot)
        self._id = f"{self.id_prefix}-{uuid.uuid4().hex[:8]}"

    @property
    def execution_id(self) -> str:
        return self._id

    def _common(self, dry_run: bool) -> dict[str, Any]:
        return dict(execution_id=self._id, kind=self.kind, exit_code=None, stdout="", stderr="",
                    truncated=False, dry_run=dry_run,
                    duration_s=round((self.ended or time.monotonic()) - self.started, 3))


class RewindJob(OwnIdJob):
    """One rewind goal, its progress the fraction of the path done."""

    kind, id_prefix = "rewind", "rewind"

    def __init__(self, robot: Robot, target: str, amount: float, parts: tuple[str, ...],
                 dry_run: bool) -> None:
        super().__init__(robot)
        self._request = (target, amount, parts, dry_run)
        self.dry_run = dry_run
        self.result: Rewind.Result | None = None
        self._fraction = -1.0       # the last fraction notified

    def _run(self) -> None:
        result = self._follow_goal(lambda: self.robot.client.rewind(
            *self._request, lease_id=self.robot.lease.token(),
            feedback_callback=self._on_feedback), REWIND_LIMIT_S, "the rewind")
        self._update(lambda: setattr(self, "result", result))

    def _on_feedback(self, fb: Rewind.Feedback) -> None:
        def apply() -> None:
            if fb.fraction > self._fraction:                    # progress only increases
                self._fraction = fb.fraction
                self._note(fb.fraction, 1.0, "rewinding")
        self._update(apply)

    def _answer(self, hand_over: bool) -> m.ExecutionAnswer:
        r = self.result
        if r is None:
            return m.ExecutionAnswer(**self._common(self.dry_run), **self._unsettled())
        return m.ExecutionAnswer(**dict(self._common(self.dry_run), duration_s=r.duration_s),
                                 **self._settled(r.success, r.message),
                                 rewind=m.RewindAnswer(success=r.success, message=r.message,
                                                       waypoints=r.waypoints,
                                                       duration_s=r.duration_s,
                                                       dry_run=self.dry_run))


@dataclass(frozen=True)
class SkillRequest:
    """What save_skill asked for."""
    name: str
    code: str
    description: str
    from_execution_id: str
    dry_runs: int


class SaveJob(OwnIdJob):
    """One skills/save request; its progress the dry runs the node starts for it."""

    kind, id_prefix = "save_skill", "save"

    def __init__(self, robot: Robot, request: SkillRequest) -> None:
        super().__init__(robot)
        self.request = request
        self.reply: Any = None      # SaveSkill.Response
        self.dry_run_ids: list[str] = []
        self._replied = False       # the request is over (answered or given up): stop no more
        self._stopper: threading.Thread | None = None

    def _run(self) -> None:
        q = self.request
        self.robot.lease.token()
        with self._changed:
            if self._cancelled:     # cancelled while the lease was being taken
                raise TidybotClientError("canceled before it was sent: nothing was saved")
            self._sent = True
        try:
            reply = self.robot.client.save_skill(q.name, q.code, q.description,
                                                 q.from_execution_id, q.dry_runs)
        except TidybotClientError as exc:
            raise TidybotClientError(f"no reply from the node to the save ({exc}): "
                                     f"list_skills shows whether {q.name} was saved") from None
        finally:
            # the job ends only after its stopper: no stop of it may reach the next job's goal
            self._update(lambda: setattr(self, "_replied", True))
            with self._changed:
                stopper = self._stopper
            if stopper is not None:
                stopper.join()
        self._update(lambda: setattr(self, "reply", reply))

    def ids(self) -> list[str]:
        return [self._id, *self.dry_run_ids]

    def identify(self, status: ExecutionStatus) -> None:
        """A dry run of this save started (skill_saver labels them "skill NAME: dry run
        k/N"): a progress notification, its id, and a cancelled save stops it at once."""
        label = f"skill {self.request.name}: dry run "
        if (status.state == "running" and status.holder == self.robot.holder
                and status.label.startswith(label) and self.reply is None):
            def apply() -> None:
                if status.execution_id not in self.dry_run_ids:
                    self.dry_run_ids.append(status.execution_id)
                    self._note(len(self.dry_run_ids) - 1, self.request.dry_runs,
                               f"{status.label} (execution {status.execution_id})")
            self._update(apply)

    def cancel(self) -> None:
        """Nothing is sent any more; a save sent is stopped at its dry runs (see the module's
        docstring): execution/stop under this server's lease until the node replies."""
        with self._changed:
            self._cancelled = True
            if self._sent and not self._replied and self._stopper is None:
                self._stopper = threading.Thread(target=self._stop_dry_runs, daemon=True,
                                                 name="tidybot-mcp-save-stop")
                self._stopper.start()       # (under the lock: _run joins only a started one)

    def _stop_dry_runs(self) -> None:
        """Until the node replied: stop what runs under the lease (only this save's dry runs:
        the book runs one job at a time), again whenever a dry run of it starts."""
        while not self._replied and not self.robot.closing.is_set():
            version = self.version
            try:
                self.robot.client.stop()
            except TidybotClientError:
                pass                # the node is gone or the lease ended: nothing runs
            self.wait_change(version, STOP_EVERY_S)

    def _answer(self, hand_over: bool) -> m.ExecutionAnswer:
        r = self.reply
        if r is None:
            return m.ExecutionAnswer(**self._common(False), **self._unsettled())
        message = r.message + (" (your cancel came after its dry runs had passed: it is saved, "
                               "and a saved version is never taken back)"
                               if r.success and self._cancelled else "")
        return m.ExecutionAnswer(**self._common(False), **self._settled(r.success, r.message),
                                 skill=m.SkillSaved(success=r.success, message=message,
                                                    version=r.version,
                                                    dry_runs_passed=r.dry_runs_passed))


class JobBook:
    """This server's jobs: the one that runs (one at a time, of any kind: the robot runs one
    writer at a time anyway) and the last KEEP_JOBS, found by any of their ids; and the ends
    that cancelled calls could not tell."""

    def __init__(self, robot: Robot) -> None:
        self.robot = robot
        self._jobs: deque[Job] = deque(maxlen=KEEP_JOBS)
        self._owed: list[Job] = []
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

    def start(self, job: Job) -> Job:
        """Take the lease if needed and start ``job``; refused while another job runs."""
        self.robot.ready()
        with self._starting:
            busy = self.running()
            if busy is not None:
                raise TidybotClientError(
                    f"{WHAT[busy.kind]} {busy.execution_id or '(starting)'} is still running: "
                    f"wait for it with get_execution, or stop it with cancel_execution, first")
            self.robot.lease.token()    # a busy robot is the caller's error now, not the job's
            with self._lock:
                for old in self._jobs:
                    old.forget_progress()
                self._jobs.append(job)
        job.start()
        return job

    def find(self, execution_id: str) -> Job | None:
        with self._lock:
            return next((job for job in reversed(self._jobs) if execution_id in job.ids()), None)

    def owe(self, job: Job) -> None:
        """A call following ``job`` was cancelled: the client answered it "cancelled"."""
        with self._lock:
            if job not in self._owed:
                self._owed.append(job)

    def news(self) -> list[m.ExecutionAnswer]:
        """The ends owed to the model: jobs whose call was cancelled and that have ended
        otherwise than canceled (a save the cancel came too late for, code that had
        finished). Each is told once; one that ended canceled was told the truth already."""
        with self._lock:
            ended = [job for job in self._owed if job.done]
            self._owed = [job for job in self._owed if not job.done]
        answers = (job.answer(hand_over=False) for job in ended)
        return [a for a in answers if a.status != "canceled"]

    def close(self) -> None:
        """Leave every job's thread (the goals themselves end with the lease's release)."""
        self.robot.closing.set()
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.join(RESULT_SLICE_S * 3)
