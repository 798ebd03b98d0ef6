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
from .sensors_api import SensorAPI

_OBJECTS = (("arm", ArmAPI), ("base", BaseAPI), ("gripper", GripperAPI), ("sensors", SensorAPI))


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def describe() -> str:
    """Markdown reference of ``arm``, ``base``, ``gripper``, ``sensors``, errors and limits."""
    out = ["# tidybot_sdk reference", "",
           "```python", "from tidybot_sdk import arm, base, gripper, sensors", "```", "",
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
    out += ["## Errors", ""]
    for cls in (errors.TidybotError, errors.ArmError, errors.BaseError, errors.GripperError,
                errors.SensorError, errors.SafetyError, errors.BackendUnavailable):
        base = cls.__bases__[0].__name__
        out.append(f"- `{cls.__name__}` ({base}): {_doc(cls)}")
    out += ["", "## Safety limits (defaults; the node's parameters set the real ones)", "",
            _doc(SafetyLimits), ""]
    for key, value in SafetyLimits().to_dict().items():
        shown = [round(v, 4) if isinstance(v, float) else v for v in value] if isinstance(
            value, (list, tuple)) else value
        out.append(f"- `{key}`: {shown}")
    return "\n".join(out).rstrip() + "\n"
