"""The static world the guard keeps the arm out of: parameter ``keep_out`` (no rclpy).

``keep_out`` is a YAML file of boxes in the odometry frame (a list of ``{name, center:
[x, y, z], size: [sx, sy, sz], yaw}``), ``''`` for none, or ``auto``: the table of the
simulator's scene when the node's world is a simulator's (its camera server answers
``get_world``), none otherwise — a lab describes its own tables, benches and walls. The
floor and the robot's own base and mast are always kept out (tidybot_sdk.collision).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from tidybot_sdk.collision import Box

AUTO = "auto"
World = Callable[[], "dict[str, Any] | None"]


def table_box(world: dict[str, Any]) -> Box:
    """The table of a simulator's world snapshot (sim.world.Scene.to_dict) as a box."""
    t = world["table"]
    (cx, cy), (sx, sy), height = t["center"], t["size"], float(t["height"])
    return Box("table", (float(cx), float(cy), height / 2), (float(sx), float(sy), height))


def load_file(path: str | Path) -> list[Box]:
    """The boxes of a keep-out YAML file; ValueError says what is wrong with it."""
    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"keep_out {path}: cannot read it: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"keep_out {path}: expected a list of boxes "
                         f"({{name, center: [x, y, z], size: [sx, sy, sz], yaw}}), got {type(data).__name__}")
    boxes = [Box.from_dict(d) if isinstance(d, dict) else _not_a_box(path, d) for d in data]
    names = [b.name for b in boxes]
    if len(set(names)) != len(names):
        raise ValueError(f"keep_out {path}: box names must be unique, got {names}")
    return boxes


def _not_a_box(path: str | Path, item: object) -> Box:
    raise ValueError(f"keep_out {path}: each item must be a box mapping, got {item!r}")


def resolve(value: str, world: World) -> tuple[list[Box], str]:
    """(the boxes ``keep_out`` names, a line saying where they came from)."""
    if not value.strip():
        return [], "keep_out: none (the floor and the robot itself only)"
    if value.strip() != AUTO:
        boxes = load_file(value)
        return boxes, f"keep_out: {', '.join(b.name for b in boxes) or 'none'} from {value}"
    snapshot = world()
    if snapshot is None or "table" not in snapshot:
        return [], ("keep_out: auto, and no simulator's world answered: none (the floor and "
                    "the robot itself only; give a YAML file of the lab's tables and walls)")
    return [table_box(snapshot)], "keep_out: auto, the simulator scene's table"
