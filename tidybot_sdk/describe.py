"""The SDK reference as markdown, generated from the code's signatures and docstrings.

Agents read it to learn the API (docs/sdk.md is this output; a test keeps them equal).
"""
from __future__ import annotations

import inspect

from . import errors
from .arm_api import ArmAPI
from .base_api import BaseAPI
from .gripper_api import GripperAPI
from .limits import SafetyLimits
from .rewind_api import RewindAPI
from .sensors_api import SensorAPI

_OBJECTS = (("arm", ArmAPI), ("base", BaseAPI), ("gripper", GripperAPI), ("sensors", SensorAPI),
            ("rewind", RewindAPI))


PREDECESSOR_DIFFERENCES = """\
`from robot_sdk import arm, base, gripper, sensors` and `from robot_sdk.arm import ArmError`
work unchanged, and the code's globals hold `franka_backend`, `base_backend` and
`gripper_backend` as the predecessor's did — compatibility objects with the same calls
(`send_joint_position(q)`, `set_control_mode(m)`, `get_state()`, `execute_action(...)`,
`set_target_velocity(...)`, `move/open/close/activate/calibrate/stop`...), every command
checked against the limits and sent through the node's safety guard. Deliberate
differences, each because the old behaviour moved the robot wrongly or hid a failure:

- **Limits are enforced.** A command outside them raises a `SafetyError` of its part
  (`ArmSafetyError` is an `ArmError` too, and so on) before anything moves. A raw streamed
  target further from the arm than one 20 ms step at the speed cap (for example a 0.1 rad
  jump) is refused with a message naming `arm.move_joints`/`arm.move_to_pose` instead.
- **Missing data raises.** A dead or stale backend raises `ArmUnavailable`,
  `BaseUnavailable`, `GripperUnavailable` (each also a `BackendUnavailable`) or, from
  `sensors`, `SensorUnavailable` (a `SensorError`) — where the predecessor returned `{}`,
  zeros or an identity pose, or used `[0, 0, 0]` for a missing base pose.
- **Tolerances and `timeout`.** Arm moves end within 0.005 rad per joint, or 5 mm *and*
  0.02 rad of orientation (the predecessor: 0.02 rad, 3 cm, orientation never checked),
  once the arm has settled; base moves within 2 cm and 0.03 rad (predecessor 5 cm,
  0.05 rad). `timeout` bounds the wait *after* the planned motion, default 10 s (the
  predecessor's 30 s clock included the motion, so `timeout < duration` always failed),
  and `timeout=0` means no extra wait, not 30 s.
- **Gripper.** `grasp()` returns False when nothing is held instead of raising; the
  default force is 100 (about 92 N), not 255, and forces above the lab's cap are refused.
- **Rewind** is performed by the node, never beside the code's own commands: the code's
  motion waits while it runs, it starts from where the robot is (no jump to a waypoint),
  and `rewind_to_waypoint`, `get_config` and the safety monitor's automatic rewind are not
  provided.
- **Cameras.** The predecessor's docs promised a `sensors.get_camera_frame()` that never
  existed: here `sensors.list_cameras()`, `get_image`, `get_depth` and `get_camera_info`
  read frames the node passes through the guard (the sandbox has no network).
- **Not provided:** `yolo`, `display` (using them raises `TidybotError` saying so); `base_backend.reset()` (it would move the odometry origin) raises
  `BaseSafetyError`."""


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def describe() -> str:
    """Markdown reference of ``arm``, ``base``, ``gripper``, ``sensors``, errors and limits."""
    out = ["# tidybot_sdk reference", "",
           "```python", "from tidybot_sdk import arm, base, gripper, sensors, rewind", "```", "",
           "Scripts written for the predecessor also run: `from robot_sdk import arm, ...`.",
           "Every call blocks until done or raises a subclass of `TidybotError`.", ""]
    for name, cls in _OBJECTS:
        module = inspect.getmodule(cls)
        out += [f"## `{name}`", "", _doc(module), ""]
        for attr, member in inspect.getmembers(cls, inspect.isfunction):
            if attr.startswith("_"):
                continue
            signature = str(inspect.signature(member, eval_str=True)).replace("(self, ", "(").replace("(self)", "()")
            out += [f"### `{name}.{attr}{signature}`", "", _doc(member), ""]
    out += ["## Errors", "", _doc(errors), ""]
    for cls in (errors.TidybotError, errors.ArmError, errors.BaseError, errors.GripperError,
                errors.SensorError, errors.SafetyError, errors.BackendUnavailable, errors.RewindError,
                *errors.SAFETY.values(), *errors.UNAVAILABLE.values(), errors.SensorUnavailable):
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        out.append(f"- `{cls.__name__}` ({bases}): {_doc(cls)}")
    out += ["", "## Scripts written for the predecessor", "", PREDECESSOR_DIFFERENCES, ""]
    out += ["", "## Safety limits (defaults; the node's parameters set the real ones)", "",
            _doc(SafetyLimits), ""]
    for key, value in SafetyLimits().to_dict().items():
        shown = [round(v, 4) if isinstance(v, float) else v for v in value] if isinstance(
            value, (list, tuple)) else value
        out.append(f"- `{key}`: {shown}")
    return "\n".join(out).rstrip() + "\n"
