"""The packages are valid for ROS users: package.xml is format 3 and colcon builds both."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from catkin_pkg.package import parse_package

from support import ROOT


@pytest.mark.parametrize("path,build_type", [
    (ROOT, "ament_python"), (ROOT / "tidybot_interfaces", "ament_cmake")])
def test_package_xml_is_format_3(path, build_type):
    pkg = parse_package(str(path / "package.xml"))
    pkg.validate()
    assert pkg.package_format == 3
    assert pkg.get_build_type() == build_type


def test_colcon_builds_both_packages_against_the_venv_underlay(tmp_path):
    colcon = shutil.which("colcon")
    assert colcon, "colcon is installed by the bootstrap"
    venv = os.environ.get("VIRTUAL_ENV", sys.prefix)
    env = {**os.environ, "AMENT_PREFIX_PATH": venv, "CMAKE_PREFIX_PATH": venv}
    done = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build",
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
         "--paths", str(ROOT), str(ROOT / "tidybot_interfaces"),
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "2 packages finished" in done.stdout
    install = tmp_path / "install"
    assert (install / "tidybot_exec" / "lib" / "tidybot_exec" / "tidybot-exec").is_file()
    share = install / "tidybot_exec" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "tidybot_exec").is_file()
    assert (share / "tidybot_exec" / "config" / "tidybot_exec.yaml").is_file()
    assert list((install / "tidybot_interfaces").glob("lib/python3*/site-packages/"
                                                      "tidybot_interfaces/action/__init__.py"))
