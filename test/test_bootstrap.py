"""The environment bootstrap: the run that built this session's venv (`./tidybot` runs it
first; from a clean clone it builds everything from scratch) left the interfaces built in
its prefix, and the next run executes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import ROOT

pytestmark = pytest.mark.build


def bootstrap(venv: Path, distro: str) -> tuple[str, float]:
    env = {**os.environ, "TIDYBOT_VENV": str(venv), "TIDYBOT_ROS_DISTRO": distro}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-I", str(ROOT / "tools" / "bootstrap.py")],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == str(venv)
    return done.stderr, time.monotonic() - start


def test_interface_build_runs_once_then_is_a_no_op():
    """Not a third build: the CI's own bootstrap is the cold run (a broken one fails CI before
    any test). Its products are checked, and a second run must change and execute nothing."""
    distro = os.environ.get("TIDYBOT_ROS_DISTRO", "jazzy")
    venv = Path(sys.prefix).resolve()
    built = sorted(venv.glob("lib/libtidybot_interfaces__*.so"))
    assert built, "the interface libraries were not installed into the venv prefix"
    mtimes = [p.stat().st_mtime_ns for p in built]

    second, seconds = bootstrap(venv, distro)
    assert "(interfaces up to date)" in second
    assert "$ " not in second, f"the warm run ran commands:\n{second}"
    assert [p.stat().st_mtime_ns for p in built] == mtimes
    assert seconds < 30, f"warm bootstrap took {seconds:.1f}s"

    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from tidybot_interfaces.action import ExecuteCode; print(ExecuteCode.Result.STATUS_ERROR)"],
        capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "5", probe.stderr
