"""Errors raised by the SDK: one base class, one subclass per part of the robot.

Messages are written for the agent that reads them: what was asked, what blocked it,
and what to do instead.
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


class SafetyError(TidybotError):
    """A command was refused before any motion because it breaks a safety limit."""


class BackendUnavailable(TidybotError, ConnectionError):
    """A backend does not answer, or its state is missing or stale (never read as zeros)."""
