"""Terminal statuses of an execution (the ExecuteCode result's STATUS_* values)."""
from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    SUCCEEDED = 0   # exited 0
    FAILED = 1      # raised or exited non-zero
    TIMEOUT = 2
    CANCELED = 3    # cancel, execution/stop, estop, lease loss, shutdown
    REJECTED = 4    # never ran
    ERROR = 5       # the server could not run it
