"""The supervisor of a cold execution: trusted, outside the sandbox, stdlib only.

Runs as ``python -I -u supervisor.py WORKDIR REPORT_FD``. It becomes a *child subreaper*,
so every process of the execution is re-parented to it rather than to init; starts the code
process (code_process.py) inside the **sandbox** (bwrap.py: bwrap namespaces, its PID
namespace dies with it) unless the node runs unsandboxed; waits for it, then kills whatever
is left, writes the one report (launchers.read_report: the code's wait status and its
one-line error) to REPORT_FD and exits like the code did. On SIGUSR1 (the stop path's
"kill now") it SIGKILLs the whole tree, round after round until nothing is left, and exits
likewise. If the node dies (parent-death signal SIGHUP) it kills the tree, has the robot
held (hold.py, a process of its own: this one imports nothing but the standard
library) and removes the working directory: nobody else is left to. The parent-death
signal follows the node *thread* that started the supervisor; rclpy's executor threads
live as long as the node, so that is the node's life.

A dry run's private simulated robot (sim/private.py) is started first, outside the sandbox
and in its own session (the stop path's SIGINT reaches only the code); the node's safety
guard for this execution relays to it instead of the robot.

SIGINT reaches the code through the process group: the supervisor and bwrap ignore it; the
code gets KeyboardInterrupt, which stops any SDK motion cleanly.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_exec.sandbox import bwrap, cgroup, linux  # noqa: E402  (stdlib only)

HOLD_TIMEOUT_S = 10.0       # for the orphan's hold process (its own requests time out sooner)
PRIVATE_END_S = 2.0         # a dry run's simulator has this long to leave its world and exit
WORLD_AT_END = "world-end.json"     # where it leaves it, in the working directory
WORLD_REPORT_MAX = 48 * 1024    # a dry run's world larger than this is not reported (the
                                # report pipe holds 64 KiB and is read once)


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


def orphan_with_parent(workdir: str, spec: dict) -> None:
    """When the node dies, nobody is left to run the stop path, and the code's way to the
    robot (the node's guard) died with it: kill everything, have the robot held
    (``spec["hold"]``: the robot's endpoints, None for a dry run), remove ``workdir``."""
    def parent_died(signum: int, frame: object) -> None:
        # Once only: Linux repeats the parent-death signal each time this process is
        # handed to another of the dying node's threads.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        kill_tree()
        if spec["hold"] is not None:
            hold = Path(__file__).resolve().parents[1] / "guard" / "hold.py"
            try:
                subprocess.run([sys.executable, "-I", "-u", str(hold), json.dumps(spec["hold"])],
                               stdin=subprocess.DEVNULL, timeout=HOLD_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired) as exc:
                sys.stderr.write(f"[tidybot] hold failed: {exc}\n")
        shutil.rmtree(workdir, ignore_errors=True)
        os._exit(1)

    signal.signal(signal.SIGHUP, parent_died)
    linux.die_with_parent(signal.SIGHUP, spec["parent_pid"])


def supervise(workdir: str, report_fd: str) -> None:
    with open(os.path.join(workdir, "spec.json")) as f:
        spec = json.load(f)
    report = int(report_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the code gets it; we do not
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    code_proc: list[int] = []
    sandboxed = spec["sandbox"] is not None
    cap: cgroup.ProcessCap | None = None

    def kill_now(signum: int, frame: object) -> None:
        statuses = kill_tree()
        status = statuses.get(code_proc[0], signal.SIGKILL) if code_proc else signal.SIGKILL
        if cap is not None:         # a cgroup left behind would cap a later, reused PID
            cap.remove()
        _report(report, status)
        _exit_like(status, sandboxed)

    signal.signal(signal.SIGUSR1, kill_now)
    signal.signal(signal.SIGTERM, kill_now)
    orphan_with_parent(workdir, spec)

    private: subprocess.Popen | None = None
    if spec.get("dry_run") is not None:
        private, problem = _start_private_robot(workdir)
        if problem:
            kill_tree()
            _report(report, 1 << 8, problem, server_error=True)
            sys.exit(1)
    files = os.path.join(workdir, "files")
    report_r, report_w = os.pipe()
    code = str(Path(__file__).resolve().with_name("code_process.py"))
    argv = [sys.executable, "-I", "-u", code, files, str(report_w)]
    if sandboxed:
        box = spec["sandbox"]
        cap = cgroup.ProcessCap(os.path.basename(workdir), spec["limits"]["processes"])
        argv = bwrap.command(box["bwrap"], Path(files), box["disk_bytes"], box["hidden"],
                               [sys.executable, "-I", "-u", code, bwrap.INSIDE, str(report_w)])
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
    world = _end_private_robot(private, workdir) if private is not None else None
    kill_tree()                                  # whatever the code left running
    try:       # the code process wrote it, so it is the code's word: only a string is taken
        error = str(json.loads(os.read(report_r, 65536) or b"{}").get("error", ""))
    except (ValueError, AttributeError):
        error = ""
    if cap is not None:
        cap.remove()
    _report(report, status, error, world=world)
    _exit_like(status, sandboxed)


def _start_private_robot(workdir: str, timeout_s: float = 30.0
                         ) -> tuple[subprocess.Popen, str | None]:
    """Start the dry run's simulator: (it, None once it listens, else why it did not start)."""
    log_path = os.path.join(workdir, "sim.log")
    with open(log_path, "wb") as log:
        private = Path(__file__).resolve().parents[1] / "sim" / "private.py"
        sim = subprocess.Popen([sys.executable, "-I", "-u", str(private), workdir],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if "listening" in text:
            return sim, None
        if sim.poll() is not None or time.monotonic() > deadline:
            last = text.strip().splitlines()[-1:] or ["no output"]
            return sim, f"dry run: the simulated robot did not start ({last[0]})"
        time.sleep(0.02)


def _end_private_robot(sim: subprocess.Popen, workdir: str) -> dict | None:
    """End the dry run's simulator (SIGTERM) and take the world it leaves (WORLD_AT_END,
    sim/private.py) for the report: what the code did to the world, read after it ended.
    None when it did not leave one within PRIVATE_END_S or it is too large to report."""
    path = os.path.join(workdir, WORLD_AT_END)
    try:
        sim.send_signal(signal.SIGTERM)
    except OSError:
        return None
    # The file is renamed into place whole; then the simulator is killed with the tree (its
    # own stop would take ~0.2 s more).
    deadline = time.monotonic() + PRIVATE_END_S
    while not os.path.exists(path):
        if sim.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.005)
    try:
        with open(path, "rb") as f:
            data = f.read(WORLD_REPORT_MAX + 1)
        world = json.loads(data) if len(data) <= WORLD_REPORT_MAX else None
    except (OSError, ValueError):
        return None
    return world if isinstance(world, dict) else None


def _report(fd: int, status: int, error: str = "", server_error: bool = False,
            world: dict | None = None) -> None:
    """The execution's one report to the node (launchers.read_report); small, so the pipe
    never blocks (the code's error is bounded by code_process.ERROR_MAX_CHARS, a dry run's
    world by WORLD_REPORT_MAX)."""
    try:
        os.write(fd, json.dumps({"status": status, "error": error, "server_error": server_error,
                                 **({"world": world} if world is not None else {})}).encode())
    except OSError:
        pass


if __name__ == "__main__":
    supervise(*sys.argv[1:])
