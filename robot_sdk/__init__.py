"""Predecessor-compatible alias of tidybot_sdk: ``from robot_sdk import arm, base, ...``.

Scripts written for the HTTP predecessor import from here unchanged, including
``from robot_sdk.arm import ArmError``, and ``rewind`` with the predecessor's methods. Its
``yolo`` and ``display`` are not part of this package; using them raises TidybotError
saying so.
"""
from __future__ import annotations

# Import the submodules first: importing a submodule later would replace the instance
# attribute of the same name (robot_sdk.arm) with the module.
from . import arm as _arm_module  # noqa: F401
from . import base as _base_module  # noqa: F401
from . import gripper as _gripper_module  # noqa: F401
from . import sensors as _sensors_module  # noqa: F401
from tidybot_sdk import (ArmError, BackendUnavailable, BaseError, GripperError, RewindError,
                         RewindResult, SafetyError, SensorError, TidybotError, describe)
from tidybot_sdk import arm, base, gripper, rewind, sensors  # noqa: E402  (instances win)


class _Unavailable:
    """Stands for a predecessor service this package does not provide."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        raise TidybotError(f"robot_sdk.{self._name} is not available in tidybot_exec "
                           f"({self._name}.{attr} cannot be used); use arm, base, gripper "
                           f"and sensors")


yolo = _Unavailable("yolo")
display = _Unavailable("display")

__all__ = ["arm", "base", "gripper", "sensors", "rewind", "yolo", "display", "describe",
           "TidybotError", "ArmError", "BaseError", "GripperError", "SensorError",
           "SafetyError", "BackendUnavailable", "RewindError", "RewindResult"]
