"""The environment bootstrap: builds from scratch into a fresh venv, then is a no-op."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from support import ROOT


def bootstrap(venv, distro: str) -> tuple[str, float]:
    env = {**os.environ, "TIDYBOT_VENV": str(venv), "TIDYBOT_ROS_DISTRO": distro}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-I", str(ROOT / "tools" / "bootstrap.py")],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == str(venv)
    return done.stderr, time.monotonic() - start


def test_interface_build_runs_once_then_is_a_no_op(tmp_path):
    distro = os.environ.get("TIDYBOT_ROS_DISTRO", "jazzy")
    venv = tmp_path / "venv"
    first, _ = bootstrap(venv, distro)
    assert "cmake --build" in first and "(interfaces up to date)" not in first
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
