"""``robot_sdk.base`` as the predecessor's scripts import it (``from robot_sdk.base import BaseError``)."""
from tidybot_sdk.base_api import BaseAPI
from tidybot_sdk.errors import BaseError

__all__ = ["BaseAPI", "BaseError"]
