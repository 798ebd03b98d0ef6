"""``robot_sdk.sensors`` as the predecessor's scripts import it."""
from tidybot_sdk.errors import SensorError
from tidybot_sdk.sensors_api import SensorAPI

__all__ = ["SensorAPI", "SensorError"]
