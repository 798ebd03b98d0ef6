"""Where the SDK finds the backends and its safety limits.

The executor passes one JSON document in the environment variable ``TIDYBOT_SDK_CONFIG``:

    {"arm": {"cmd": "tcp://h:5555", "state": "tcp://h:5556", "stream": "tcp://h:5557"},
     "gripper": {"cmd": ..., "state": ...}, "base": {"cmd": ..., "state": ...},
     "limits": {...SafetyLimits fields...}, "timeouts": {"request_s": 2.0},
     "keep_out": [{"name": "table", "center": [x, y, z], "size": [sx, sy, sz], "yaw": 0}],
     "keep_out_margin_m": 0.01}

``keep_out``: boxes in the odometry frame the arm's collision geometry must stay
``keep_out_margin_m`` away from, besides the floor and the robot's own base and mast
(collision.KeepOut; the SDK's path check and the guard apply it).

Any ZMQ address works (tcp://, ipc://), so a guard process can stand between user code and
the hardware. Without the variable (a script run by hand) the defaults are the standard
ports on localhost and the default limits.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from . import protocol as proto
from .collision import MARGIN_M, Box, KeepOut
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
    # Boxes (odometry frame), given as Box or its dict form; kept as Box, checked here.
    keep_out: tuple[Box, ...] = ()
    keep_out_margin_m: float = MARGIN_M

    def __post_init__(self) -> None:
        if not isinstance(self.keep_out, (list, tuple)):
            raise ValueError(f"keep_out must be a list of boxes, got {self.keep_out!r}")
        boxes = tuple(b if isinstance(b, Box) else Box.from_dict(b) for b in self.keep_out)
        names = [b.name for b in boxes]
        if len(set(names)) != len(names):
            raise ValueError(f"keep_out: box names must be unique, got {names}")
        try:
            margin = float(self.keep_out_margin_m)
        except (TypeError, ValueError):
            margin = math.nan
        if not (math.isfinite(margin) and margin >= 0.0):
            raise ValueError(f"keep_out_margin_m must be a finite number >= 0, got "
                             f"{self.keep_out_margin_m!r}")
        object.__setattr__(self, "keep_out", boxes)
        object.__setattr__(self, "keep_out_margin_m", margin)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SdkConfig":
        default = cls()
        return cls(arm={**default.arm, **data.get("arm", {})},
                   gripper={**default.gripper, **data.get("gripper", {})},
                   base={**default.base, **data.get("base", {})},
                   limits=SafetyLimits.from_dict(data.get("limits", {})),
                   request_timeout_s=float(data.get("timeouts", {}).get("request_s", 2.0)),
                   node=str(data.get("node", "")), keep_out=data.get("keep_out", ()),
                   keep_out_margin_m=data.get("keep_out_margin_m", MARGIN_M))

    def to_json(self) -> str:
        return json.dumps({"arm": self.arm, "gripper": self.gripper, "base": self.base,
                           "limits": self.limits.to_dict(),
                           "timeouts": {"request_s": self.request_timeout_s}, "node": self.node,
                           "keep_out": [b.to_dict() for b in self.keep_out],
                           "keep_out_margin_m": self.keep_out_margin_m})

    def kept_out(self) -> KeepOut:
        """The keep-out rule these settings give (collision.KeepOut)."""
        return KeepOut(self.keep_out, self.keep_out_margin_m)

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
