"""The warm worker: the next execution's process, started before its goal (no rclpy).

A ``WarmPool`` keeps a **spare** for each lease held (at least one; leases of disjoint parts
run side by side, so each agent's next goal finds its own): a code process forked by the
sandboxed zygote (zygote.py) with the SDK imported, in namespaces of its own, its safety
guard listening, waiting for code on a pipe. A goal takes a spare and writes its code; the
pool starts the next one in the background. Every execution still gets a fresh process and a
fresh filesystem — a spare runs no code before it is taken and is never reused — so nothing
passes from one holder's code to the next; when a lease ends the spares are replaced anyway.

A goal that finds no spare ready (the zygote starting or restarting, or goals faster than
spares) waits a moment for the one being prepared, else starts cold (launchers.launch_cold: correct,
just slower). Dry runs always start cold: their guard relays to a private simulator.

The zygote runs under a trusted host process outside the sandbox (warm_host.py),
which, if the node dies, kills everything in the sandbox and commands the robot to hold.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Callable

from tidybot_sdk.config import SdkConfig

from tidybot_exec.execution.launchers import KILL_WAIT_S, Launched, read_report
from tidybot_exec.execution.settings import ExecutorSettings
from tidybot_exec.guard.relay import Guard, code_config
from tidybot_exec.sandbox import bwrap, cgroup, linux, warm_host
from tidybot_exec.sandbox.zygote import GO, GUARD, READY

Log = Callable[[str], None]
TAKE_WAIT_S = 0.5           # a goal waits this long for a spare being prepared, then goes cold
START_TIMEOUT_S = 60.0      # for the zygote's imports (a busy machine)
REPLY_TIMEOUT_S = 10.0      # for one spawn
HOST_CHECK_S = 1.0          # how often an idle pool looks whether its zygote still lives
MAX_SPARES = 3              # one per part: no more leases can be held at once


class SpawnRefused(Exception):
    """The zygote is up but could not prepare a worker."""


class WarmTree:
    """A pre-started execution seen from the node: C (the PID namespace's first process,
    by pidfd, so no PID reuse can misdirect a signal) and D's pipes. C dead = tree dead."""

    def __init__(self, fds: list[int], cap: cgroup.ProcessCap,
                 on_close: Callable[[], None] = lambda: None) -> None:
        out_r, err_r, self._code_w, self._status_r, self._pidfd = fds
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)
        self.pid = -1
        self.returncode: int | None = None
        self._report: dict = {}
        self._cap, self._on_close = cap, on_close
        self._lock = threading.Lock()
        try:
            self.pid = linux.pidfd_pid(self._pidfd)
            cap.join(self.pid)           # before the go: D and all it starts are in the cap
            os.write(self._code_w, GO)
        except BaseException:
            self.kill()
            self.close()
            raise

    def start(self, code: str) -> None:
        """Hand the code over; D compiles and runs it once the pipe closes."""
        try:
            view = memoryview(code.encode("utf-8"))
            while view:
                view = view[os.write(self._code_w, view):]
        finally:
            os.close(self._code_w)
            self._code_w = -1

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
                self._reap()
            return self.returncode

    def wait(self, timeout: float | None = None) -> bool:
        """True once the whole tree is dead (within ``timeout``)."""
        select.select([self._pidfd], [], [], timeout)
        return self.poll() is not None

    def _reap(self) -> None:
        # C wrote D's status just before it exited; nobody else holds the pipe's write end.
        self._report = read_report(self._status_r)
        try:
            self.returncode = os.waitstatus_to_exitcode(self._report["status"])
        except (KeyError, TypeError, ValueError):
            self.returncode = -signal.SIGKILL       # C was killed: the stop path's kill
            self._report = {}

    def interrupt(self) -> None:
        """The soft stop: C forwards SIGINT to the code's process group."""
        linux.pidfd_signal(self._pidfd, signal.SIGINT)

    def kill(self) -> None:
        """Kill C: the kernel kills the rest of the namespace before C is gone."""
        try:
            linux.pidfd_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(KILL_WAIT_S)

    def report(self) -> dict:
        return self._report

    def close(self) -> None:
        """After the end: release the descriptors and the process cap."""
        for fd in (self._code_w, self._status_r, self._pidfd):
            if fd >= 0:
                os.close(fd)
        self._code_w = self._status_r = self._pidfd = -1
        self.stdout.close()
        self.stderr.close()
        self._cap.remove()
        self._on_close()


class WarmPool:
    """Spares (``want`` of them) from a zygote that this pool starts and restarts."""

    def __init__(self, settings: ExecutorSettings, log: Log = lambda line: None) -> None:
        self._settings, self._log = settings, log
        self._robot = SdkConfig.from_dict(json.loads(settings.sdk_config_json))
        self.dir = Path(tempfile.mkdtemp(prefix="tidybot-warm-"))
        files = self.dir / "files"
        (files / "guards").mkdir(parents=True)
        (files / "guard").mkdir()          # each execution's mount point for its own
        inside = code_config(self._robot, GUARD)
        (files / "zygote.json").write_text(json.dumps(
            {"limits": settings.child_limits(), "disk_bytes": settings.disk_bytes}))
        (self.dir / "spec.json").write_text(json.dumps({
            "parent_pid": os.getpid(), "hold": json.loads(settings.sdk_config_json),
            "sandbox": {"bwrap": settings.bwrap, "disk_bytes": settings.disk_bytes,
                        "hidden": list(settings.hidden)}}))
        self._env = bwrap.environment(bwrap.WORKDIR, inside.to_json())
        self._env["OPENBLAS_NUM_THREADS"] = "1"     # the zygote must stay one thread to fork
        self._cond = threading.Condition()
        self._spares: list[Launched] = []
        self._wanted = 1
        self._retired: list[Launched] = []
        self._generation = 0        # lease ends so far: a spare from an older one is retired
        self._lent: set[str] = set()     # spares handed out whose execution has not ended
        self.problem = ""           # why the pool is degraded ("" when a spare was made since)
        self._zygote_up = False
        self._closed = False
        self._host: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="warm-pool", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        with self._cond:
            return bool(self._spares)

    def want(self, count: int) -> None:
        """Keep ``count`` spares ready (1 to MAX_SPARES): one per lease held. Spares beyond
        it are retired."""
        with self._cond:
            self._wanted = max(1, min(count, MAX_SPARES))
            self._retired += self._spares[self._wanted:]
            del self._spares[self._wanted:]
            self._cond.notify_all()

    def take(self) -> Launched | None:
        """A spare, or None (start cold). Waits up to TAKE_WAIT_S for one being prepared."""
        with self._cond:
            self._cond.wait_for(lambda: self._spares or not self._zygote_up
                                or self._closed, TAKE_WAIT_S)
            spare = self._spares.pop(0) if self._spares else None
            if spare is not None:
                self._lent.add(spare.id)
            self._cond.notify_all()
        return spare

    def _returned(self, execution_id: str) -> None:
        """A spare's tree was closed: its execution (if any) has ended."""
        with self._cond:
            self._lent.discard(execution_id)
            self._cond.notify_all()

    def give_back(self, spare: Launched) -> None:
        """A spare taken for a goal that was then refused."""
        with self._cond:
            self._lent.discard(spare.id)
            if (len(self._spares) < self._wanted and not self._closed
                    and spare.generation == self._generation):
                self._spares.append(spare)
            else:
                self._retired.append(spare)
            self._cond.notify_all()

    def discard(self) -> None:
        """Replace the spares (a lease ended): the next holder's code gets a new one."""
        with self._cond:
            self._generation += 1
            self._retired += self._spares
            self._spares = []
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ the filler thread
    def _run(self) -> None:
        """Start the zygote, keep a spare ready, tear down retired spares. A spare that
        fails to prepare is discarded and another tried later; a zygote that fails is
        stopped only once no execution it started still runs (stopping it kills its whole
        sandbox). Goals start cold meanwhile; the reason is logged and kept in ``problem``.
        All processes are started from this thread: it lives as long as the pool, so the
        host's parent-death signal means the node died."""
        backoff = 0.5
        while True:
            try:
                if self._host is None:
                    self._start_zygote()
                while self._fill():
                    backoff = 0.5
                break
            except SpawnRefused as exc:     # the zygote lives (and so may a running execution)
                self._degraded(f"a spare failed to prepare ({exc}); trying again")
            except Exception as exc:  # noqa: BLE001 - the pool degrades to cold starts
                self._degraded(f"the zygote failed ({exc!r}); restarting it once no execution "
                               f"it started still runs")
                with self._cond:
                    self._cond.wait_for(lambda: not self._lent or self._closed)
                self._stop_zygote()
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, backoff):
                    break
            backoff = min(backoff * 2, 30.0)
        self._stop_zygote()

    def _discard(self, spare: Launched) -> None:
        for problem in spare.discard():
            self._log(f"warm worker {spare.id}: {problem}")

    def _degraded(self, problem: str) -> None:
        self.problem = problem
        self._log(f"warm worker: {problem}; goals start cold meanwhile")

    def _fill(self) -> bool:
        """One step: retire, or prepare a spare when fewer are ready than wanted. False once
        closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._retired
                                or len(self._spares) < self._wanted, HOST_CHECK_S)
            if self._host.poll() is not None and not self._closed:
                raise RuntimeError(f"the zygote exited ({self._host.returncode})")
            retired, self._retired = self._retired, []
            closed, generation = self._closed, self._generation
            needed = len(self._spares) < self._wanted
        for spare in retired:
            self._discard(spare)
        if closed:
            return False
        if needed:
            spare = self._prepare()
            spare.generation = generation
            with self._cond:
                if (len(self._spares) < self._wanted and not self._closed
                        and generation == self._generation):
                    self._spares.append(spare)
                    self.problem = ""
                    self._cond.notify_all()
                    return True
            self._discard(spare)
        return True

    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._host = subprocess.Popen(
                [sys.executable, "-I", "-u", warm_host.__file__, str(self.dir),
                 str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=self._env,
                stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            theirs.close()
        self._control = ours
        ours.settimeout(START_TIMEOUT_S)
        if ours.recv(64) != READY:
            raise RuntimeError("the zygote exited while starting (see the log above)")
        ours.settimeout(REPLY_TIMEOUT_S)
        with self._cond:
            self._zygote_up = True
            self._cond.notify_all()

    def _prepare(self) -> Launched:
        """One spare. SpawnRefused: this spare failed, the zygote is fine; anything else:
        the zygote cannot be trusted to answer in step any more."""
        execution_id = uuid.uuid4().hex[:12]
        workdir = self.dir / "files" / "guards" / execution_id
        try:
            guard = Guard(self._robot, workdir, self._log).start()
        except Exception as exc:  # noqa: BLE001 - the zygote was not asked yet
            shutil.rmtree(workdir, ignore_errors=True)
            raise SpawnRefused(f"its safety guard did not start: {exc!r}") from exc
        try:
            self._control.sendall(f"spawn {execution_id}".encode())
            message, fds, _, _ = socket.recv_fds(self._control, 4096, 5)
            if not message:
                raise RuntimeError("the zygote exited")
            error = json.loads(message).get("error")
            if error or len(fds) != 5:
                for fd in fds:
                    os.close(fd)
                raise SpawnRefused(f"the zygote could not start a worker: {error}")
        except BaseException:
            guard.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        try:
            cap = cgroup.ProcessCap(f"tidybot-{execution_id}", self._settings.max_processes)
            tree = WarmTree(fds, cap, lambda: self._returned(execution_id))
        except Exception as exc:  # noqa: BLE001 - WarmTree killed and closed what it had
            guard.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise SpawnRefused(f"its process could not be set up: {exc!r}") from exc
        return Launched(execution_id, workdir, guard, tree)

    def _stop_zygote(self) -> None:
        with self._cond:
            self._zygote_up = False
            spares = self._retired + self._spares
            self._retired, self._spares = [], []
            self._cond.notify_all()
        for spare in spares:
            self._discard(spare)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._host is not None:
            self._host.terminate()
            try:
                self._host.wait(10)
            except subprocess.TimeoutExpired:
                self._host.kill()
                self._host.wait()
            self._host = None
