#!/usr/bin/env python3
"""The main job on the simulator: start the node, show that it serves, shut it down cleanly.

Run through ``./tidybot demo`` (which sets up the environment first).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import rclpy
from rcl_interfaces.srv import ListParameters


def wait_for_node(node, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (name, "/") in node.get_node_names_and_namespaces():
            return True
        rclpy.spin_once(node, timeout_sec=0.1)
    return False


def main() -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    server = subprocess.Popen(["tidybot-exec"])
    rclpy.init()
    node = rclpy.create_node("tidybot_demo")
    try:
        if not wait_for_node(node, "tidybot_exec", 30):
            print("demo: tidybot_exec did not appear in the ROS graph", file=sys.stderr)
            return 1
        client = node.create_client(ListParameters, "/tidybot_exec/list_parameters")
        client.wait_for_service(timeout_sec=10)
        future = client.call_async(ListParameters.Request())
        rclpy.spin_until_future_complete(node, future, timeout_sec=10)
        names = sorted(future.result().result.names)
        print(f"demo: tidybot_exec is serving with {len(names)} parameters: {', '.join(names)}")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        server.send_signal(signal.SIGINT)
        code = server.wait(15)
        print(f"demo: tidybot_exec exited with {code}")


if __name__ == "__main__":
    sys.exit(main())
