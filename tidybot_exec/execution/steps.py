"""Steps of an end that must all run: a failing one is recorded, never raised (no rclpy)."""
from __future__ import annotations

from typing import Callable


def attempt(problems: list[str], step: str, action: Callable[[], object]) -> bool:
    """Run one step; a failure is appended to ``problems`` as "step: error" (True)."""
    try:
        action()
        return False
    except Exception as exc:  # noqa: BLE001 - the end path must run whatever happens
        problems.append(f"{step}: {exc!r}")
        return True
