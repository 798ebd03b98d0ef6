"""The warm worker's zygote: one sandboxed process, SDK imported, that forks each execution.

Runs as ``python -I -u zygote.py CONTROL_FD`` inside bwrap (``bwrap.command(..., zygote=True)``), with
capabilities *only* in the sandbox's own user namespace, which it needs to give every
execution namespaces of its own. On each ``spawn ID`` from the node (the control socket) it
forks:

* **W** (setup, exits at once): new mount, PID, IPC, network and UTS namespaces; a fresh
  capped tmpfs on ``/tmp`` (the code's working directory) and ``/dev/shm``, ``/dev``
  read-only, the execution's own guard directory bound read-only at ``INSIDE/guard`` and the
  other executions' guard directories hidden. Forks C, sends the node C's pidfd and the
  node's ends of C's pipes, and exits.
* **C** (PID 1 of the execution's PID namespace, trusted): mounts its own ``/proc``, makes
  itself undumpable (the code cannot ptrace it or read its memory), drops every capability
  for good, then waits for the node's go. It forks D, forwards a soft stop (SIGINT from the
  node) to D's process group, reaps everything; once D has ended it kills whatever D left
  and reports D's wait status. When C exits the kernel kills whatever is left in the
  namespace, so "C is dead" is "the tree is dead".
* **D** (the code process): the code's limits (code_process.confine), stdout/stderr on the node's
  pipes, reads the code from its pipe until EOF and runs it (code_process.run_source).

So every execution is a fresh process that shares only read-only pages with the zygote
(copy-on-write), and nothing an execution writes — files, shared memory, IPC objects,
sockets, processes — outlives it or is seen by the next one. The zygote never runs
submitted code, holds no per-execution file descriptors, and no execution can see it
(PID namespace) or signal it.
"""
from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Iterable, NamedTuple, NoReturn

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_exec.sandbox import bwrap, code_process, linux  # noqa: E402  (stdlib only)

READY = b"ready"
GO = b"g"                           # the node's go: C is in its process cap, fork the code
GUARDS = f"{bwrap.INSIDE}/guards"  # every execution's guard directory (hidden per execution)
GUARD = f"{bwrap.INSIDE}/guard"    # this execution's, where the SDK's endpoints point
NAMESPACES = (linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWIPC
              | linux.CLONE_NEWNET | linux.CLONE_NEWUTS)


class Job(NamedTuple):
    """What D runs once it returns to the top level (normal interpreter exit follows)."""
    source: str
    report_fd: int


def main(control_fd: int) -> Job:
    """Serve spawn requests until the node closes the control socket; returns only in D."""
    with open(f"{bwrap.INSIDE}/zygote.json") as f:
        spec = json.load(f)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=control_fd)
    import tidybot_sdk.compat  # noqa: F401  (paid here once: numpy, the kinematics, zmq)
    gc.freeze()          # what the zygote allocated stays shared: GC never touches it again
    control.sendall(READY)
    while True:
        request = control.recv(256)
        if not request:
            os._exit(0)
        execution_id = request.decode().removeprefix("spawn ")
        pid = os.fork()
        if pid == 0:
            try:
                return _setup(control, execution_id, spec)
            except BaseException as exc:  # noqa: BLE001 - told to the node, never raised
                control.sendall(json.dumps({"id": execution_id, "error": repr(exc)}).encode())
                os._exit(1)
        os.waitpid(pid, 0)


def _setup(control: socket.socket, execution_id: str, spec: dict) -> Job:
    """W: the execution's namespaces and filesystem; returns only in D."""
    linux.unshare(NAMESPACES)
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    quiet = linux.MS_NOSUID | linux.MS_NODEV
    # Python, the venv or the package may live under /tmp (a checkout there): hold on to
    # them before the fresh /tmp covers them, and bind them back (read-only, as they were).
    kept = _outermost(p for p in bwrap.visible() if p.startswith("/tmp/"))
    held = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in kept]
    linux.mount("tmpfs", "/tmp", "tmpfs", quiet, f"size={spec['disk_bytes']},mode=1777")
    for path, fd in held:
        os.makedirs(path)
        linux.mount(f"/proc/self/fd/{fd}", path, None, linux.MS_BIND | linux.MS_REC)
        os.close(fd)
    os.mkdir(bwrap.WORKDIR)
    linux.mount("tmpfs", "/dev/shm", "tmpfs", quiet, f"size={spec['disk_bytes']},mode=1777")
    linux.mount("none", "/dev", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | quiet)
    linux.mount(f"{GUARDS}/{execution_id}", GUARD, None, linux.MS_BIND)
    linux.mount("none", GUARD, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | quiet)
    linux.mount("tmpfs", GUARDS, "tmpfs", linux.MS_RDONLY | quiet, "size=4096")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    code_r, code_w = os.pipe()
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        control.close()
        for fd in (out_r, err_r, code_w, status_r):
            os.close(fd)
        return _init(execution_id, spec, out_w, err_w, code_r, status_w)
    pidfd = os.pidfd_open(pid)
    socket.send_fds(control, [json.dumps({"id": execution_id, "error": ""}).encode()],
                    [out_r, err_r, code_w, status_r, pidfd])
    os._exit(0)


def _init(execution_id: str, spec: dict, out_w: int, err_w: int, code_r: int,
          status_w: int) -> Job:
    """C: PID 1 of the execution; returns only in D."""
    linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV)
    os.chdir(bwrap.WORKDIR)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    linux.drop_capabilities()
    if os.read(code_r, 1) != GO:
        os._exit(1)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            os.close(status_w)
            os.setpgid(0, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            os.environ["TIDYBOT_EXECUTION_ID"] = execution_id
            code_process.confine(spec["limits"])
            with os.fdopen(code_r, "rb") as code:
                source = code.read().decode("utf-8")
            return Job(source, report_w)
        except BaseException as exc:  # noqa: BLE001 - the code never ran: say why
            os.write(2, f"[tidybot] the code process could not start: {exc!r}\n".encode())
            os._exit(1)
    for fd in (out_w, err_w, code_r, report_w):
        os.close(fd)
    signal.signal(signal.SIGINT, lambda signum, frame: _signal_group(pid, signal.SIGINT))
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            break
    try:
        os.kill(-1, signal.SIGKILL)   # what the code left behind (it may hold the report pipe)
    except ProcessLookupError:
        pass
    try:       # D wrote it, so it is the code's word: only a string is taken
        error = str(json.loads(os.read(report_r, 65536) or b"{}").get("error", ""))
    except (ValueError, AttributeError):
        error = ""
    os.write(status_w, json.dumps({"status": status, "error": error}).encode())
    os._exit(0)


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another of them (a recursive bind brings those)."""
    chosen: list[str] = []
    for path in sorted(paths):
        if not any(path.startswith(f"{outer}/") for outer in chosen):
            chosen.append(path)
    return chosen


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _exit(code: object) -> NoReturn:
    """Exit as the interpreter would — wait for the code's non-daemon threads, run its
    atexit functions, flush — but skip tearing down the zygote's modules (13 ms)."""
    import atexit
    import threading
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is None or isinstance(code, int):
        status = (code or 0) & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    job = main(int(sys.argv[1]))
    try:
        code_process.run_source(job.source, os.fdopen(job.report_fd, "w"))
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)
