"""Stop and hold every backend: the last step of every abnormal end, and the estop.

Commands go out to the three backends in parallel with short timeouts, so one backend
that is down delays the others by nothing and the whole stop by at most the timeout.
"""
from __future__ import annotations

import threading
from typing import Callable

from tidybot_sdk.config import SdkConfig
from tidybot_sdk.errors import BackendUnavailable
from tidybot_sdk.protocol import ArmMsg, BaseMsg, GripperMsg, ProtocolError
from tidybot_sdk.transport import RequestClient

Log = Callable[[str], None]


class RobotStopper:
    def __init__(self, config: SdkConfig, log: Log, timeout_s: float = 1.0) -> None:
        self._targets = [
            (RequestClient(config.arm["cmd"], "arm", timeout_s), ArmMsg.STOP),
            (RequestClient(config.base["cmd"], "base", timeout_s), BaseMsg.STOP),
            (RequestClient(config.gripper["cmd"], "gripper", timeout_s), GripperMsg.STOP)]
        self._log = log

    def __call__(self) -> list[str]:
        """Send stop to every backend; returns the problems (empty when all acknowledged)."""
        problems: list[str] = []
        threads = [threading.Thread(target=self._stop_one, args=(c, m, problems))
                   for c, m in self._targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for problem in problems:
            self._log(problem)
        return problems

    @staticmethod
    def _stop_one(client: RequestClient, msg_type: int, problems: list[str]) -> None:
        try:
            reply = client.request({"msg_type": int(msg_type)})
        except (BackendUnavailable, ProtocolError) as exc:
            problems.append(f"stop {client.name}: {exc}")
            return
        if reply.get("error") or reply.get("success") is False:
            problems.append(f"stop {client.name}: refused: {reply}")

    def close(self) -> None:
        for client, _ in self._targets:
            client.close()
