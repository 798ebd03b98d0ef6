"""Session-wide process hygiene and the load mode (a pytest plugin loaded by conftest).

* Every process this session starts, and every process those start, inherits
  ``TIDYBOT_TEST_SESSION``; at the session's end any still alive is killed and the run
  fails, naming it. Fixtures must own what they start, even when a test fails: a leaked node
  answers the next module's goals.
* ``TIDYBOT_TEST_LOAD=1`` runs the session beside busy-looping CPU hogs (robots run other
  nodes): the process suites must pass with the cores busy. Two hogs by default (both cores
  of this 2-core machine); ``TIDYBOT_TEST_HOGS=N`` sets how many (CI runs one, beside the
  other distro's session, which keeps the rest of the machine busy).

Only processes carrying this session's own marker are looked at or killed (never by name).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

MARKER = "TIDYBOT_TEST_SESSION"
_token = uuid.uuid4().hex
os.environ[MARKER] = _token
_hogs: list[subprocess.Popen] = []


def session_processes() -> list[tuple[int, str]]:
    """(pid, command line) of the live processes that carry this session's marker."""
    needle, found = f"{MARKER}={_token}".encode(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue                # exited; its parent reaps it
        except OSError:
            continue
        found.append((int(entry), cmdline))
    return found


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TIDYBOT_TEST_LOAD") == "1":
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        hog = ("import ctypes, signal\n"            # dies with this session, however it ends
               "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
               "while True:\n    pass\n")
        count = int(os.environ.get("TIDYBOT_TEST_HOGS", "2"))
        _hogs.extend(subprocess.Popen([sys.executable, "-c", hog], env=env) for _ in range(count))


def pytest_report_header() -> str | None:
    return f"load mode: {len(_hogs)} busy-loop CPU hogs running beside the tests" if _hogs else None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for hog in _hogs:
        hog.kill()
        hog.wait()
    leaked = session_processes()
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if leaked:
        lines = "\n".join(f"  {pid} {cmd[:160]}" for pid, cmd in leaked)
        session.config.stash[_leaked_key] = lines
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_leaked_key = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_leaked_key, "")
    if lines:
        terminalreporter.write_line(
            f"FAILED session: processes started by tests outlived them (now killed):\n{lines}",
            red=True)
