"""The errors predecessor scripts catch when no backend answers (no node, no simulator)."""
from __future__ import annotations

from support import free_port
from tidybot_sdk import Robot, backend
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import (ArmError, ArmUnavailable, BackendUnavailable, SafetyError,
                                SensorError)
from tidybot_sdk.protocol import tcp_endpoints


def test_unreachable_backends_raise_part_and_kind_errors(monkeypatch):
    # a backend that is down waits all of the first state's wait: shortened, as only the
    # error's kind is judged here
    monkeypatch.setattr(backend, "FIRST_STATE_WAIT_S", 0.5)
    ports = {"arm": (free_port(), free_port(), free_port()), "gripper": (free_port(), free_port()),
             "base": (free_port(), free_port())}
    robot = Robot(SdkConfig(request_timeout_s=0.3).with_endpoints(tcp_endpoints("127.0.0.1", ports)))
    try:
        for read in (robot.sensors.get_gripper_position, robot.sensors.get_arm_joints):
            try:
                read()
                raise AssertionError("a reading without a backend")
            except SensorError as exc:
                assert isinstance(exc, BackendUnavailable)
        try:
            robot.arm.stop()
            raise AssertionError("a command without a backend")
        except ArmError as exc:
            assert isinstance(exc, ArmUnavailable) and not isinstance(exc, SafetyError)
    finally:
        robot.close()
