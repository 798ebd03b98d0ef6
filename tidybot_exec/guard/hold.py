"""Hold the backends: the last step of every abnormal end (its lease's parts), and the estop (all).

Stop commands go out to the three backends in parallel, on sockets of their own (never the
guard's, which may be stuck on a dead backend) with a short timeout, so one backend that is
down delays the others by nothing and the whole hold by at most the timeout; a backend that
does not answer is reported ("arm: no answer in 0.5 s"), never waited for longer.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

if not __package__:      # run as a script by an orphaned supervisor: make the SDK importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_sdk.config import SdkConfig  # noqa: E402
from tidybot_sdk.errors import BackendUnavailable  # noqa: E402
from tidybot_sdk.protocol import (RESOURCES, ArmMsg, BaseMsg, GripperMsg,  # noqa: E402
                                  ProtocolError)
from tidybot_sdk.transport import RequestClient  # noqa: E402

Log = Callable[[str], None]


HOLD_TIMEOUT_S = 0.5


class RobotHold:
    def __init__(self, config: SdkConfig, log: Log, timeout_s: float = HOLD_TIMEOUT_S) -> None:
        self._targets = [
            (RequestClient(config.arm["cmd"], "arm", timeout_s), ArmMsg.STOP),
            (RequestClient(config.base["cmd"], "base", timeout_s), BaseMsg.STOP),
            (RequestClient(config.gripper["cmd"], "gripper", timeout_s), GripperMsg.STOP)]
        self._log, self.timeout_s = log, timeout_s

    def __call__(self, parts: Sequence[str] = RESOURCES) -> list[str]:
        """Send stop to the backends of ``parts`` (default: every one; an execution's end
        holds only the parts its lease holds — another agent may be driving the rest);
        returns the problems (empty when all acknowledged)."""
        problems: list[str] = []
        threads = [threading.Thread(target=self._stop_one, args=(c, m, problems),
                                    name=f"hold-{c.name}") for c, m in self._targets
                   if c.name in parts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for problem in problems:
            self._log(problem)
        return problems

    def _stop_one(self, client: RequestClient, msg_type: int, problems: list[str]) -> None:
        try:
            reply = client.request({"msg_type": int(msg_type)})
        except BackendUnavailable:
            problems.append(f"{client.name}: no answer in {self.timeout_s:g} s ({client.address})")
            return
        except ProtocolError as exc:
            problems.append(f"{client.name}: invalid reply: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a hold not known to be delivered is a problem
            problems.append(f"{client.name}: {exc!r}")
            return
        if reply.get("error") or reply.get("success") is False:
            problems.append(f"{client.name}: refused: {reply}")

    def close(self) -> None:
        for client, _ in self._targets:
            client.close()


def main(config_json: str) -> int:
    """``python -I -u hold.py CONFIG_JSON``: hold the robot once (a supervisor or warm host
    whose node died runs this: they themselves import nothing but the standard library)."""
    hold = RobotHold(SdkConfig.from_dict(json.loads(config_json)),
                     lambda line: sys.stderr.write(f"[tidybot] hold failed: {line}\n"))
    problems = hold()
    hold.close()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
