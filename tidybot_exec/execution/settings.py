"""What the node's parameters make of an execution and of the lease (no rclpy): fixed for
the node's life, read by the service, supervision, the launchers and the warm pool."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutorSettings:
    default_timeout_s: float = 60.0
    max_timeout_s: float = 3600.0
    max_code_bytes: int = 256 * 1024
    max_output_bytes: int = 1024 * 1024
    feedback_rate_hz: float = 20.0
    feedback_max_bytes: int = 64 * 1024
    stop_grace_s: float = 1.0
    address_space_bytes: int = 4 * 1024 ** 3
    open_files: int = 1024
    file_size_bytes: int = 256 * 1024 ** 2
    sdk_config_json: str = "{}"     # the robot's endpoints and the limits: the guard's upstream
    tail_bytes: int = 4096      # of each stream, kept in history
    bwrap: str = ""             # sandbox the code with this bwrap ("": unsandboxed, unsafe)
    disk_bytes: int = 256 * 1024 ** 2       # the sandbox's writable tmpfs
    max_processes: int = 64
    hidden: tuple[str, ...] = ()            # directories the sandbox must not show
    warm_worker: bool = True                # keep a sandboxed code process ready (warm.py)

    def child_limits(self) -> dict[str, int]:
        """The code process's rlimits (code_process.confine)."""
        return {"address_space_bytes": self.address_space_bytes, "open_files": self.open_files,
                "file_size_bytes": self.file_size_bytes, "processes": self.max_processes}


@dataclass(frozen=True)
class LeasePolicy:
    require_lease: bool = True
    default_ttl_s: float = 120.0
    max_lease_s: float = 1800.0
    max_wait_s: float = 300.0
    reset_on_release: bool = False      # rewind to the lease's start before the next grant
