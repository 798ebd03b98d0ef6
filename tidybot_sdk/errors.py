"""Errors raised by the SDK: one base class, one subclass per part of the robot.

Messages are written for the agent that reads them: what was asked, what blocked it,
and what to do instead. A refusal or an unreachable backend is raised as the class of its
part *and* of its kind (an arm limit refusal is an ``ArmError`` and a ``SafetyError``),
so scripts written for the predecessor, which catch ``ArmError``/``BaseError``/
``GripperError``/``SensorError``, still catch them.
"""
from __future__ import annotations


class TidybotError(Exception):
    """Base of every error the SDK raises on purpose."""


class ArmError(TidybotError):
    """An arm command failed (reflex, did not settle, backend refused it)."""


class BaseError(TidybotError):
    """A mobile-base command failed."""


class GripperError(TidybotError):
    """A gripper command failed (not activated, fault, bad arguments)."""


class SensorError(TidybotError):
    """A sensor reading cannot be given (e.g. gripper width before calibration)."""


class RewindError(TidybotError):
    """A rewind could not be asked for: invalid arguments, code not run through the node,
    or no answer. (A rewind that was refused or stopped returns ``success=False``.)"""


class SafetyError(TidybotError):
    """A command was refused before any motion because it breaks a safety limit."""


class ResourceNotLeased(SafetyError):
    """A command to a part of the robot (arm, gripper or base) that this execution's lease
    does not hold; ``resource`` names the part and ``holder`` who holds it ("" when
    nobody does). Reading any part's state is always allowed."""

    def __init__(self, message: str, resource: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.resource, self.holder = resource, holder


class BackendUnavailable(TidybotError, ConnectionError):
    """A backend does not answer, or its state is missing or stale (never read as zeros)."""


class ArmSafetyError(ArmError, SafetyError):
    """An arm command refused by a safety limit (by the SDK or by the node's guard)."""


class BaseSafetyError(BaseError, SafetyError):
    """A base command refused by a safety limit."""


class GripperSafetyError(GripperError, SafetyError):
    """A gripper command refused by a safety limit."""


class ArmUnavailable(ArmError, BackendUnavailable):
    """The arm backend does not answer, or its state is missing or stale."""


class BaseUnavailable(BaseError, BackendUnavailable):
    """The base backend does not answer, or its state is missing or stale."""


class GripperUnavailable(GripperError, BackendUnavailable):
    """The gripper backend does not answer, or its state is missing or stale."""


class SensorUnavailable(SensorError, BackendUnavailable):
    """A ``sensors`` reading whose backend does not answer, or whose state is stale; a
    camera without a fresh frame (never a stale image)."""


SAFETY = {"arm": ArmSafetyError, "base": BaseSafetyError, "gripper": GripperSafetyError}
UNAVAILABLE = {"arm": ArmUnavailable, "base": BaseUnavailable, "gripper": GripperUnavailable}


def unavailable(part: str, message: str) -> BackendUnavailable:
    """The BackendUnavailable of ``part`` (plain BackendUnavailable for anything else)."""
    return UNAVAILABLE.get(part, BackendUnavailable)(message)
