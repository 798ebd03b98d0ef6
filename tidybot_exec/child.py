"""The child side of an execution: a supervisor process and the process running the code.

Runs with ``python -I -u child.py supervise WORKDIR``:

* **supervisor** — trusted, outside the sandbox. It becomes a *child subreaper*, so every
  process of the execution is re-parented to it rather than to init; starts the code
  process, inside the **sandbox**
  (sandbox.py: bwrap namespaces, its PID namespace dies with it) unless the node runs
  unsandboxed; waits for it, then kills whatever is left. On SIGUSR1 (the executor's "kill
  now") it SIGKILLs the whole tree, round after round until nothing is left, and exits
  with the code's status. If the node dies (parent-death signal SIGHUP) it kills the
  tree, commands the robot to stop and hold itself and removes the working directory
  (nobody else is left to). The parent-death signal follows the node
  *thread* that started the supervisor; rclpy's executor threads live as long as the
  node, so that is the node's life.
* **sim** — a dry run's private simulated robot (tidybot_exec.dry_run), started by the
  supervisor before the code, outside the sandbox and in its own session (the stop path's
  SIGINT reaches only the code); the node's safety guard for this execution relays to it
  instead of the robot.

The code reaches the robot only through that guard (guard.py, in the node), on unix
sockets in ``WORKDIR/files/guard``, the one directory of the host it sees (read-only).
* **run** — applies the resource limits, dies with its parent, makes the SDK importable
  and runs the code as ``__main__`` compiled under the name ``<submitted>``, so tracebacks
  show the user's own line numbers. On an exception it writes the one-line error with the
  user's line to the report pipe, which the supervisor turns into ``report.json``.

SIGINT reaches all of them through the process group: the supervisor and bwrap ignore it;
the code gets KeyboardInterrupt, which stops any SDK motion cleanly.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path
from typing import IO

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tidybot_exec import linux, sandbox  # noqa: E402  (stdlib only)

FILENAME = "<submitted>"
ERROR_MAX_CHARS = 4096   # of the one-line error: the report pipe never fills (64 KiB), the
                         # code process never blocks on it, and the result stays readable
# The package directories whose frames are the SDK's internals, not the user's code.
_INTERNAL = tuple(str(Path(__file__).resolve().parent.parent / name) + os.sep
                  for name in ("tidybot_sdk", "robot_sdk", "tidybot_exec"))


# ------------------------------------------------------------------------- supervisor
def _children() -> list[int]:
    """PIDs whose parent is this process (including zombies not yet reaped)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me:
            found.append(int(entry))
    return found


def _reap() -> dict[int, int]:
    statuses = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status


def kill_tree() -> dict[int, int]:
    """SIGKILL every descendant. Orphans of killed processes come to us (subreaper), so
    repeat until a scan finds none. Returns the wait statuses of the reaped children."""
    statuses: dict[int, int] = {}
    for _ in range(1000):
        children = _children()
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        statuses.update(_reap())
    return statuses


def _exit_like(status: int, sandboxed: bool = False) -> None:
    """Exit with the same status as the code process (signal or exit code). bwrap exits
    128 + N when its command was killed by signal N: that is a signal again here."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sandboxed and os.WIFEXITED(status) and os.WEXITSTATUS(status) > 128:
        sig = os.WEXITSTATUS(status) - 128
        status = sig if sig < signal.NSIG else status
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:          # SIGKILL cannot be handled, nor reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _orphan_with_parent(workdir: str, spec: dict) -> None:
    """When the node dies, nobody is left to run the stop path, and the code's way to the
    robot (the node's guard) died with it: kill everything, command the hold ourselves
    (``spec["hold"]``: the robot's endpoints, None for a dry run), remove ``workdir``."""
    def parent_died(signum: int, frame: object) -> None:
        # Once only: Linux repeats the parent-death signal each time this process is
        # handed to another of the dying node's threads.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        kill_tree()
        if spec["hold"] is not None:
            from tidybot_exec.robot_stop import RobotStopper
            from tidybot_sdk.config import SdkConfig
            RobotStopper(SdkConfig.from_dict(spec["hold"]),
                         lambda line: sys.stderr.write(f"[tidybot] {line}\n"))()
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGHUP, parent_died)
    linux.die_with_parent(signal.SIGHUP, spec["parent_pid"])


def host(pooldir: str, control_fd: str) -> None:
    """The warm pool's trusted end outside the sandbox: runs the zygote (zygote.py) in
    bwrap, keeps its whole tree as a subreaper, and stands in for the node when the node
    dies (the running warm execution is among what it kills; then the hold). SIGTERM: the
    node closes the pool; kill the tree and exit."""
    with open(os.path.join(pooldir, "spec.json")) as f:
        spec = json.load(f)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)

    def close(signum: int, frame: object) -> None:
        kill_tree()
        os._exit(0)

    signal.signal(signal.SIGTERM, close)
    _orphan_with_parent(pooldir, spec)
    box = spec["sandbox"]
    zygote = str(Path(__file__).with_name("zygote.py"))
    argv = sandbox.command(box["bwrap"], Path(pooldir) / "files", box["disk_bytes"],
                           box["hidden"], [sys.executable, "-I", "-u", zygote, control_fd],
                           zygote=True)
    status = subprocess.call(argv, pass_fds=(int(control_fd),), stdin=subprocess.DEVNULL)
    kill_tree()
    sys.exit(1 if status else 0)


def supervise(workdir: str) -> None:
    with open(os.path.join(workdir, "spec.json")) as f:
        spec = json.load(f)
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the code gets it; we do not
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    code_proc: list[int] = []
    sandboxed = spec["sandbox"] is not None
    cap: sandbox.ProcessCap | None = None

    def kill_now(signum: int, frame: object) -> None:
        statuses = kill_tree()
        status = statuses.get(code_proc[0], signal.SIGKILL) if code_proc else signal.SIGKILL
        if cap is not None:         # a cgroup left behind would cap a later, reused PID
            cap.remove()
        _exit_like(status, sandboxed)

    signal.signal(signal.SIGUSR1, kill_now)
    signal.signal(signal.SIGTERM, kill_now)
    _orphan_with_parent(workdir, spec)

    if spec.get("dry_run") is not None:
        problem = _start_private_robot(workdir)
        if problem:
            _report(workdir, problem, server_error=True)
            kill_tree()
            sys.exit(1)
    files = os.path.join(workdir, "files")
    report_r, report_w = os.pipe()
    argv = [sys.executable, "-I", "-u", __file__, "run", files, str(report_w)]
    if sandboxed:
        box = spec["sandbox"]
        cap = sandbox.ProcessCap(os.path.basename(workdir), spec["limits"]["processes"])
        argv = sandbox.command(box["bwrap"], Path(files), box["disk_bytes"], box["hidden"],
                               [sys.executable, "-I", "-u", __file__, "run", sandbox.INSIDE,
                                str(report_w)])
    proc = subprocess.Popen(argv, restore_signals=True, pass_fds=(report_w,),
                            cwd=None if sandboxed else os.path.join(workdir, "work"),
                            preexec_fn=cap.join if cap is not None else None)
    code_proc.append(proc.pid)
    os.close(report_w)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)     # reaps adopted orphans too
        except ChildProcessError:
            status = 0
            break
        if pid == proc.pid:
            break
    kill_tree()                                  # whatever the code left running
    try:
        error = json.loads(os.read(report_r, 65536) or b"{}").get("error", "")
    except (ValueError, AttributeError):
        error = ""
    if error:
        _report(workdir, error)
    if cap is not None:
        cap.remove()
    _exit_like(status, sandboxed)


def _start_private_robot(workdir: str, timeout_s: float = 30.0) -> str | None:
    """Start the dry run's simulator; None once it listens, else why it did not start."""
    log_path = os.path.join(workdir, "sim.log")
    with open(log_path, "wb") as log:
        sim = subprocess.Popen([sys.executable, "-I", "-u", __file__, "sim", workdir],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if "listening" in text:
            return None
        if sim.poll() is not None or time.monotonic() > deadline:
            last = text.strip().splitlines()[-1:] or ["no output"]
            return f"dry run: the simulated robot did not start ({last[0]})"
        time.sleep(0.02)


def sim(workdir: str) -> None:
    with open(os.path.join(workdir, "spec.json")) as f:
        spec = json.load(f)
    linux.die_with_parent(signal.SIGKILL, os.getppid())
    from tidybot_exec.dry_run import Seed
    from tidybot_exec.sim.cli import serve
    sys.exit(serve(Seed.from_dict(spec["dry_run"]).sim_config(workdir)))


# ------------------------------------------------------------------------ code process
def _limit(name: str, value: int) -> None:
    if value > 0:
        resource.setrlimit(getattr(resource, name), (value, value))


def _user_traceback(exc: BaseException) -> types.TracebackType | None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _user_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _print_traceback(exc: BaseException, tb: types.TracebackType | None) -> None:
    """The traceback as the user needs it: the frames below the user's last one that are
    the SDK's own internals (a KeyboardInterrupt from a stop lands deep in a motion loop,
    an SDK error is raised a few calls down) become one line, without install paths."""
    frames = traceback.extract_tb(tb)
    keep = len(frames)
    while keep > 0 and frames[keep - 1].filename.startswith(_INTERNAL):
        keep -= 1
    if keep == 0 or keep == len(frames):
        traceback.print_exception(type(exc), exc, tb)
        return
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[:keep]),
             f"  ... {len(frames) - keep} frame(s) inside the tidybot SDK\n",
             *traceback.format_exception_only(type(exc), exc)]
    sys.stderr.write("".join(lines))


def confine(limits: dict) -> None:
    """The code process's own limits: KeyboardInterrupt on SIGINT, death with its parent,
    the resource limits and no core dumps."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    linux.die_with_parent(signal.SIGKILL, os.getppid())
    _limit("RLIMIT_AS", limits["address_space_bytes"])
    _limit("RLIMIT_NOFILE", limits["open_files"])
    _limit("RLIMIT_FSIZE", limits["file_size_bytes"])
    _limit("RLIMIT_NPROC", limits["processes"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_source(source: str, report: IO[str]) -> None:
    """Run ``source`` as ``__main__``; on an exception, print the user's traceback and
    write the one-line error to ``report``. Exits like the code would."""
    import linecache
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    main = types.ModuleType("__main__")
    main.__file__ = FILENAME
    sys.modules["__main__"] = main
    sys.argv = [FILENAME]
    try:
        import tidybot_sdk  # (the SDK objects are ready before the code starts)
        from tidybot_sdk.compat import predecessor_globals
        main.__dict__.update(predecessor_globals(tidybot_sdk.robot))
        exec(compile(source, FILENAME, "exec", dont_inherit=True), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = _user_traceback(exc)
        _print_traceback(exc, tb)
        line = _user_line(tb)
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if len(error) > ERROR_MAX_CHARS:
            error = f"{error[:ERROR_MAX_CHARS]}... ({len(error)} characters; the whole " \
                    f"message is in stderr)"
        json.dump({"error": error + (f" (line {line})" if line else "")}, report)
        report.flush()
        sys.stderr.flush()
        if isinstance(exc, KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        sys.exit(1)


def run(files: str, report_fd: str) -> None:
    with open(os.path.join(files, "run.json")) as f:
        spec = json.load(f)
    confine(spec["limits"])
    with open(os.path.join(files, "code.py"), encoding="utf-8") as f:
        source = f.read()
    run_source(source, os.fdopen(int(report_fd), "w"))


def _report(workdir: str, error: str, server_error: bool = False) -> None:
    """Tell the executor why the execution failed (read back as the result's ``error``)."""
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump({"error": error, "server_error": server_error}, f)


if __name__ == "__main__":
    {"supervise": supervise, "host": host, "sim": sim, "run": run}[sys.argv[1]](*sys.argv[2:])
