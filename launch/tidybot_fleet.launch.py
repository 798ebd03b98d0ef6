"""Launch a fleet: N robots, each a tidybot_exec node in its own namespace (robot1..robotN),
by default each with its own simulator on its own ports.

    ros2 launch tidybot_exec tidybot_fleet.launch.py robots:=3 [use_sim:=true]
        [params_file:=/path/to.yaml] [namespace_prefix:=robot] [port_step:=100]

What starts is decided in tidybot_exec/ros/launch_plan.py (fleet_plan), so plain tests can
check it without the launch packages; docs/fleet.md explains namespaces, ports and DDS
discovery for real robots.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from tidybot_exec.ros.launch_actions import actions
from tidybot_exec.ros.launch_plan import FLEET_ARGUMENTS, fleet_plan


def _actions(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in FLEET_ARGUMENTS}
    return actions(fleet_plan(args, Path(get_package_share_directory("tidybot_exec"))))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in FLEET_ARGUMENTS.items()]
        + [OpaqueFunction(function=_actions)])
