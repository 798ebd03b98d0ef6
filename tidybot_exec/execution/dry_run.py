"""Dry runs: the code drives a private simulated robot that starts where the real one is.

The node takes the newest fresh state of each backend and the simulated world's objects
when its camera source is a simulator (``Seed.from_states``); the
execution's supervisor starts a simulator seeded with it (sim/private.py,
``SimConfig.seeded``), on unix sockets in the
execution's private directory, and the code's SDK is pointed there. The simulator lives in
the execution's process tree, so it ends with the code whatever happens, and nothing is
sent to the real robot — not even the stop-and-hold that follows an abnormal end.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from tidybot_sdk import kinematics as kin
from tidybot_sdk.protocol import GripperSeed

_GRIPPER_FIELDS = tuple(GripperSeed.__annotations__)


@dataclass(frozen=True)
class Seed:
    """Where the private robot starts; None where the real state is unknown (defaults)."""

    q: list[float] | None = None
    base_pose: list[float] | None = None
    gripper: GripperSeed | None = None
    world: dict[str, Any] | None = None      # sim.world.Scene.from_dict form

    @classmethod
    def from_states(cls, states: Mapping[str, Mapping[str, Any] | None],
                    world: dict[str, Any] | None = None) -> "Seed":
        """From backend state messages (None for a backend that is down or stale) and the
        live world's snapshot (None: the simulator's default scene)."""
        arm, base, gripper = states.get("arm"), states.get("base"), states.get("gripper")
        return cls(
            # a real reading may sit a hair outside the nominal limits the simulator enforces
            q=np.clip(np.asarray(arm["q"], dtype=float), kin.Q_MIN, kin.Q_MAX).tolist()
            if arm else None,
            base_pose=[float(v) for v in base["base_pose"]] if base else None,
            gripper=GripperSeed(**{k: gripper[k] for k in _GRIPPER_FIELDS if k in gripper})
            if gripper else None, world=world)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Seed":
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def notes(self) -> list[str]:
        """What the code's output should say about this dry run."""
        unknown = [name for name, value in (("arm", self.q), ("base", self.base_pose),
                                            ("gripper", self.gripper)) if value is None]
        lines = ["dry run: a private simulated robot that starts where the real one is; "
                 "the real robot does not move"]
        if unknown:
            lines.append(f"dry run: no fresh state from the {', '.join(unknown)}: starting "
                         f"from the simulator's defaults there")
        return lines
