#!/usr/bin/env python3
"""The floor for bench/latency.py: a bare rclpy ExecuteCode action server, in a process of
its own, that answers each goal with one feedback line and the result at once (and a
lease/renew service, for TidybotClient's handshake). Whatever the node adds on top of DDS,
rclpy's action machinery and the client is the difference to this.

    python bench/floor_server.py NAMESPACE
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.action import ActionServer
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.srv import RenewLease

from tidybot_exec.ros.qos import SERVICES


class Floor(Node):
    def __init__(self, namespace: str) -> None:
        super().__init__("floor", namespace=namespace)
        self._count = 0
        ActionServer(self, ExecuteCode, "execute_code", self._execute,
                     goal_service_qos_profile=SERVICES, result_service_qos_profile=SERVICES,
                     cancel_service_qos_profile=SERVICES)
        self.create_service(RenewLease, "lease/renew", lambda request, response: response,
                            qos_profile=SERVICES)

    def _execute(self, goal_handle) -> ExecuteCode.Result:
        self._count += 1
        execution_id = f"floor{self._count}"
        goal_handle.publish_feedback(ExecuteCode.Feedback(
            execution_id=execution_id, stream="stdout", text="hi\n", seq=0, elapsed_s=0.0))
        goal_handle.succeed()
        return ExecuteCode.Result(execution_id=execution_id, status=0, stdout="hi\n")


def main() -> None:
    rclpy.init()
    node = Floor(sys.argv[1])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("ready", flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
