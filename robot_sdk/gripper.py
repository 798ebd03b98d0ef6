"""``robot_sdk.gripper`` as the predecessor's scripts import it."""
from tidybot_sdk.errors import GripperError
from tidybot_sdk.gripper_api import GripperAPI

__all__ = ["GripperAPI", "GripperError"]
