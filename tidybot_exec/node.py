"""The tidybot_exec node: the thin ROS shell around the pure core.

Everything with behaviour lives in rclpy-free modules; this module only declares
parameters, wires the core to actions, services and topics, and runs the executor.
"""
from __future__ import annotations

import sys
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from tidybot_exec.params import PARAMS, validate

NODE_NAME = "tidybot_exec"

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


class InvalidParameters(Exception):
    """The parameters given to the node make no sense; the node refuses to start."""


class TidybotExecNode(Node):
    """Serves the execute_code action and its companions (filled in feature by feature)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.settings = self._declare_parameters()
        self.get_logger().info(
            f"ready: arm {self.settings['arm_host']}:{self.settings['arm_cmd_port']}, "
            f"gripper {self.settings['gripper_host']}:{self.settings['gripper_cmd_port']}, "
            f"base {self.settings['base_host']}:{self.settings['base_cmd_port']}")

    def _declare_parameters(self) -> dict[str, Any]:
        """Declare every parameter of params.PARAMS (read-only) and validate the values."""
        values = {}
        for spec in PARAMS:
            descriptor = ParameterDescriptor(
                description=spec.description, read_only=True, type=_TYPES[type(spec.default)])
            try:
                values[spec.name] = self.declare_parameter(
                    spec.name, spec.default, descriptor).value
            except InvalidParameterTypeException as exc:
                raise InvalidParameters(str(exc)) from None
        problems = validate(values)
        if problems:
            raise InvalidParameters("; ".join(problems))
        return values


def main(args: list[str] | None = None) -> int:
    """Console entry point ``tidybot-exec``: exits 0 on SIGINT/SIGTERM, 2 on bad parameters."""
    rclpy.init(args=args)
    node = None
    try:
        node = TidybotExecNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except InvalidParameters as exc:
        print(f"tidybot_exec: invalid parameters: {exc}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
