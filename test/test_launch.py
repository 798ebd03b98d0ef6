"""launch_testing: ros2 launch tidybot_exec tidybot_exec.launch.py use_sim:=true: the node
starts once its simulator listens and says that it drives that simulator, a goal through the
action, clean exit codes. Needs launch_testing (a real ROS install); the same behaviour is
covered by plain pytest (test_execute_code.py, test_cli.py, test_launch_plan.py, and
test_launch_crossing.py for the order and the crossing rule with real processes).
"""
import os
import unittest

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (not on PyPI); the plain pytest "
                             "suites cover the same behaviour")
import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from tidybot_exec.clients.client import TidybotClient  # noqa: E402

pytestmark = pytest.mark.stack        # it launches the node and the simulator


@pytest.mark.launch_test
def generate_test_description():
    path = os.path.join(get_package_share_directory("tidybot_exec"), "launch",
                        "tidybot_exec.launch.py")
    return launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            PythonLaunchDescriptionSource(path), launch_arguments={"use_sim": "true"}.items()),
        launch_testing.actions.ReadyToTest()])


class TestGoalThroughTheLaunchedNode(unittest.TestCase):
    def test_the_node_starts_after_its_simulator_and_says_it_drives_it(self, proc_output):
        proc_output.assertWaitFor("tidybot-sim: listening", timeout=60, stream="stdout")
        proc_output.assertWaitFor(
            "ready: arm simulator tcp://127.0.0.1:5555, gripper simulator tcp://127.0.0.1:5570, "
            "base simulator tcp://127.0.0.1:5590; cameras ws://127.0.0.1:5580", timeout=60)
        sim_said = [i for i, o in enumerate(proc_output)
                    if b"tidybot-sim: listening" in o.text]
        node_said = [i for i, o in enumerate(proc_output) if b"ready:" in o.text]
        self.assertLess(sim_said[0], node_said[0])

    def test_a_goal_succeeds(self):
        rclpy.init()
        node = rclpy.create_node("launch_test_client")
        try:
            client = TidybotClient(node)
            self.assertTrue(client.wait_for_server(60))
            client.acquire("launch-test")
            result = client.execute("from tidybot_sdk import arm\narm.go_home()\nprint('ok')").result(120)
            self.assertEqual(result.status, 0, result.error)
            self.assertEqual(result.stdout, "ok\n")
            client.release()
        finally:
            node.destroy_node()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        # a required process that exited early would have ended the launch with an error
        # before the tests ran; at the end every process stops cleanly
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
