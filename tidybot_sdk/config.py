"""Where the SDK finds the backends and its safety limits.

The executor passes one JSON document in the environment variable ``TIDYBOT_SDK_CONFIG``:

    {"arm": {"cmd": "tcp://h:5555", "state": "tcp://h:5556", "stream": "tcp://h:5557"},
     "gripper": {"cmd": ..., "state": ...}, "base": {"cmd": ..., "state": ...},
     "limits": {...SafetyLimits fields...}, "timeouts": {"request_s": 2.0}}

Any ZMQ address works (tcp://, ipc://), so a guard process can stand between user code and
the hardware. Without the variable (a script run by hand) the defaults are the standard
ports on localhost and the default limits.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from . import protocol as proto
from .limits import SafetyLimits

ENV_VAR = "TIDYBOT_SDK_CONFIG"


@dataclass(frozen=True)
class SdkConfig:
    arm: dict[str, str] = field(default_factory=lambda: proto.tcp_endpoints()["arm"])
    gripper: dict[str, str] = field(default_factory=lambda: proto.tcp_endpoints()["gripper"])
    base: dict[str, str] = field(default_factory=lambda: proto.tcp_endpoints()["base"])
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    request_timeout_s: float = 2.0
    node: str = ""        # the node's own requests from inside code (rewind); "": none

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SdkConfig":
        default = cls()
        return cls(arm={**default.arm, **data.get("arm", {})},
                   gripper={**default.gripper, **data.get("gripper", {})},
                   base={**default.base, **data.get("base", {})},
                   limits=SafetyLimits.from_dict(data.get("limits", {})),
                   request_timeout_s=float(data.get("timeouts", {}).get("request_s", 2.0)),
                   node=str(data.get("node", "")))

    def to_json(self) -> str:
        return json.dumps({"arm": self.arm, "gripper": self.gripper, "base": self.base,
                           "limits": self.limits.to_dict(),
                           "timeouts": {"request_s": self.request_timeout_s}, "node": self.node})

    def with_endpoints(self, endpoints: proto.Endpoints) -> "SdkConfig":
        """The same limits and timeouts, talking to other backends (a dry run's)."""
        return replace(self, **{backend: dict(endpoints[backend]) for backend in proto.SOCKETS})

    @classmethod
    def from_env(cls) -> "SdkConfig":
        text = os.environ.get(ENV_VAR)
        if not text:
            return cls()
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, TypeError, AttributeError) as exc:
            raise RuntimeError(f"{ENV_VAR} is not a valid SDK configuration: {exc}") from None
