"""``tidybot_exec.client``, as the README documents it: TidybotClient and its companions
live in tidybot_exec.clients.client."""
from tidybot_exec.clients.client import (  # noqa: F401
    ExecutionHandle, TidybotClient, TidybotClientError, spun_client)
