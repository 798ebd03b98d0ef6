"""The packages are valid for ROS users: package.xml is format 3 and colcon builds both."""
from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def bootstrap_module():
    """tools/bootstrap.py, imported (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "tools" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.build
def test_colcon_builds_both_packages_against_the_venv_underlay(tmp_path):
    """Both packages, built and installed by colcon. The interfaces are built in the
    bootstrap's own build tree (same source, same arguments): colcon configures, finds them
    compiled and installs them, instead of compiling them a second time."""
    colcon = shutil.which("colcon")
    assert colcon, "colcon is installed by the bootstrap"
    venv = Path(os.environ.get("VIRTUAL_ENV", sys.prefix))
    bootstrap = bootstrap_module()
    build_base = bootstrap.interface_build_dir(venv).parent
    build_base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(venv), "CMAKE_PREFIX_PATH": str(venv)}
    with open(build_base / ".colcon-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)           # one colcon build in this tree at a time
        done = subprocess.run(
            [colcon, "--log-base", str(tmp_path / "log"), "build",
             "--build-base", str(build_base), "--install-base", str(tmp_path / "install"),
             "--paths", str(ROOT), str(ROOT / "tidybot_interfaces"),
             # configured each time: colcon would keep the install prefix of the last build
             "--cmake-force-configure",
             "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
             *bootstrap.INTERFACE_CMAKE_ARGS],
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
    # the installed package finds its own URDF (the simulator and the cameras are built on it)
    (site,) = (install / "tidybot_exec").glob("lib/python3*/site-packages")
    found = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
                            "from tidybot_exec.cameras import robot_model as m; "
                            "print(m.__file__); print(m.urdf_path())"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    module, urdf = found.stdout.split()
    assert module.startswith(str(site)) and urdf == str(share / "tidybot_exec" / "urdf" / "tidybot.urdf")


def test_the_venv_is_a_complete_ament_prefix_for_the_package():
    """As a colcon install is: `ros2 pkg prefix`, `ros2 launch` and `ros2 run` find the
    package, its share files and its executables (launch_ros looks in lib/<package>)."""
    from ament_index_python.packages import get_package_prefix, get_package_share_directory
    venv = Path(os.environ.get("VIRTUAL_ENV", sys.prefix)).resolve()
    assert Path(get_package_prefix("tidybot_exec")).resolve() == venv
    share = Path(get_package_share_directory("tidybot_exec"))
    for name in ("package.xml", "launch/tidybot_exec.launch.py", "config/tidybot_exec.yaml",
                 "urdf/tidybot.urdf"):
        installed = share / name
        assert installed.is_file() and not installed.is_symlink(), name
        assert installed.read_bytes() == (ROOT / name).read_bytes(), f"{name} is stale"
    for executable in ("tidybot-exec", "tidybot-sim", "tidybot-run", "tidybot-mcp"):
        assert os.access(venv / "lib" / "tidybot_exec" / executable, os.X_OK), executable
