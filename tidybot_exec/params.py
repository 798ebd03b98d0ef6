"""The node's parameters: one table that the node declares, validates and documents.

Kept free of rclpy so the table can be checked against ``config/tidybot_exec.yaml`` and the
README by plain tests. Each parameter is read-only at run time: limits and endpoints must
not change under a running execution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

Value = bool | int | float | str


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, unit-bearing description and allowed range."""

    name: str
    default: Value
    description: str
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is unacceptable, or None when it is fine."""
        if type(value) is not type(self.default):
            return f"{self.name} must be {type(self.default).__name__}, got {value!r}"
        if isinstance(value, str):
            return None if value.strip() else f"{self.name} must not be empty"
        if self.minimum is not None and value < self.minimum:
            return f"{self.name} = {value} is below its minimum {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name} = {value} is above its maximum {self.maximum:g}"
        return None


def _port(name: str, default: int, what: str) -> ParamSpec:
    return ParamSpec(name, default, f"TCP port of the {what}", 1, 65535)


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("arm_host", "127.0.0.1", "host of the arm backend (franka_server)"),
    _port("arm_cmd_port", 5555, "arm REP command socket"),
    _port("arm_state_port", 5556, "arm PUB state socket"),
    _port("arm_stream_port", 5557, "arm SUB command-stream socket"),
    ParamSpec("gripper_host", "127.0.0.1", "host of the gripper backend (gripper_server)"),
    _port("gripper_cmd_port", 5570, "gripper REP command socket"),
    _port("gripper_state_port", 5571, "gripper PUB state socket"),
    ParamSpec("base_host", "127.0.0.1", "host of the mobile base backend"),
    _port("base_cmd_port", 5590, "base REP command socket"),
    _port("base_state_port", 5591, "base PUB state socket"),
)

BY_NAME: Mapping[str, ParamSpec] = {p.name: p for p in PARAMS}


def validate(values: Mapping[str, Any]) -> list[str]:
    """Return every problem with ``values`` (name -> value); empty when all are acceptable."""
    problems = [err for name, value in values.items()
                if name in BY_NAME and (err := BY_NAME[name].check(value))]
    ports = [(n, v) for n, v in values.items() if n.endswith("_port")]
    seen: dict[tuple[str, int], str] = {}
    for name, port in ports:
        host = values.get(name.split("_")[0] + "_host", "")
        other = seen.setdefault((host, port), name)
        if other != name:
            problems.append(f"{name} and {other} both use {host}:{port}")
    return problems
