"""``robot_sdk.arm`` as the predecessor's scripts import it (``from robot_sdk.arm import ArmError``)."""
from tidybot_sdk.arm_api import ArmAPI
from tidybot_sdk.errors import ArmError

__all__ = ["ArmAPI", "ArmError"]
