"""Launch tidybot_exec, with the simulator by default.

    ros2 launch tidybot_exec tidybot_exec.launch.py [use_sim:=true] [namespace:=robot1]
        [params_file:=/path/to.yaml] [rsp:=true] [port_offset:=100]
    ros2 launch tidybot_exec tidybot_exec.launch.py use_sim:=false params_file:=real.yaml
        base_bridge:=true base_rpc:=HOST:50000 base_authkey_file:=~/.tidybot/base.key

What starts for which arguments, and in which order, is decided in
tidybot_exec/ros/launch_plan.py, so plain tests can check it without the launch packages.
The node starts once its simulator (or base bridge) serves; if one of them exits, the
launch ends and says why (docs/real-robot.md, "Launch").
"""
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from tidybot_exec.ros.launch_actions import actions
from tidybot_exec.ros.launch_plan import ARGUMENTS, plan, truthy


def _rsp_available() -> bool:
    try:
        get_package_share_directory("robot_state_publisher")
        return True
    except PackageNotFoundError:
        return False


def _actions(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    share = Path(get_package_share_directory("tidybot_exec"))
    notes = []
    if truthy(args["rsp"]) and not _rsp_available():
        notes.append(LogInfo(msg="rsp:=true but robot_state_publisher is not installed; skipped"))
    return notes + actions(plan(args, share, _rsp_available()))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_actions)])
