"""launch_plan's processes as launch actions, for the launch files (needs launch, launch_ros).

Imported only by launch/*.launch.py, where the launch packages are installed; the plan
itself stays in launch_plan.py, which plain tests check without them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ament_index_python.packages import get_package_prefix
from launch.actions import ExecuteProcess
from launch_ros.actions import Node

from tidybot_exec.ros.launch_plan import Process


def actions(processes: Iterable[Process]) -> list:
    """A Node for each ROS node, an ExecuteProcess (from lib/<package>) for the rest."""
    out = []
    for p in processes:
        if p.is_ros_node:
            out.append(Node(package=p.package, executable=p.executable, name=p.name,
                            namespace=p.namespace,
                            parameters=[*p.params_files, *([p.parameters] if p.parameters else [])],
                            # unbuffered, so output is live; no emulated tty, so no colour
                            # codes in output piped to a file
                            output="screen", additional_env={"PYTHONUNBUFFERED": "1"}))
        else:
            exe = str(Path(get_package_prefix(p.package)) / "lib" / p.package / p.executable)
            out.append(ExecuteProcess(cmd=[exe, *p.arguments], name=p.name, output="screen",
                                      sigterm_timeout="5"))
    return out
