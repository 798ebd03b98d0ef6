"""tidybot_sdk: the robot API that submitted code imports.

    from tidybot_sdk import arm, base, gripper, sensors, rewind

The objects are ready at import and connect to the backends on first use, at the
endpoints the executor passes in ``TIDYBOT_SDK_CONFIG`` (see config.py). Calls block until
done or raise a subclass of TidybotError. ``describe()`` returns this API as markdown.
"""
from __future__ import annotations

from .arm_api import ArmAPI
from .backend import Backend
from .base_api import BaseAPI
from .config import SdkConfig
from .describe import describe
from .errors import (ArmError, ArmSafetyError, ArmUnavailable, BackendUnavailable, BaseError,
                     BaseSafetyError, BaseUnavailable, GripperError, GripperSafetyError,
                     GripperUnavailable, RewindError, SafetyError, SensorError,
                     SensorUnavailable, TidybotError)
from .gripper_api import GripperAPI
from .limits import SafetyLimits
from .node_channel import NodeChannel
from .rewind_api import RewindAPI, RewindResult
from .sensors_api import SensorAPI

__all__ = ["arm", "base", "gripper", "sensors", "rewind", "RewindResult", "RewindError", "describe", "config", "robot", "Robot", "SdkConfig", "TidybotError",
           "ArmError", "BaseError", "GripperError", "SensorError", "SafetyError",
           "BackendUnavailable", "SafetyLimits", "ArmSafetyError", "BaseSafetyError",
           "GripperSafetyError", "ArmUnavailable", "BaseUnavailable", "GripperUnavailable",
           "SensorUnavailable"]

# Staleness limits: a few periods of each backend's state stream.
_MAX_AGE = {"arm": 0.2, "base": 0.5, "gripper": 0.5}


class Robot:
    """arm, base, gripper and sensors connected to one set of backends."""

    def __init__(self, config: SdkConfig) -> None:
        self.config = config
        self._backends = {name: Backend(name, getattr(config, name), config.request_timeout_s,
                                        age) for name, age in _MAX_AGE.items()}
        b = self._backends
        self.arm = ArmAPI(b["arm"], config.limits, config.kept_out(), b["base"])
        self.base = BaseAPI(b["base"], config.limits)
        self.gripper = GripperAPI(b["gripper"], config.limits)
        self._node = NodeChannel(config.node)
        self.sensors = SensorAPI(b["arm"], b["base"], b["gripper"], self._node)
        self.rewind = RewindAPI(self._node)

    @property
    def node_channel(self) -> NodeChannel:
        """The channel to the node (rewinds, camera frames, skills) the APIs share."""
        return self._node

    def backend(self, name: str) -> Backend:
        """The connection to backend ``name`` (arm, base, gripper) the API objects share."""
        return self._backends[name]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._node.close()


robot = Robot(SdkConfig.from_env())
config = robot.config
arm, base, gripper, sensors, rewind = (robot.arm, robot.base, robot.gripper, robot.sensors,
                                       robot.rewind)
