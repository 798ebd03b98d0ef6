"""What the node's parameters make of an execution and of the lease (no rclpy): fixed for
the node's life, read by the service, supervision, the launchers and the warm pool. The
parameters come as a plain dict (ros/params.py declares and validates them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tidybot_sdk import protocol as proto
from tidybot_sdk.collision import Box
from tidybot_sdk.config import SdkConfig
from tidybot_sdk.limits import SafetyLimits

from tidybot_exec.sandbox.bwrap import Isolation


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


def sdk_config(p: dict[str, Any], keep_out: Sequence[Box] = ()) -> SdkConfig:
    """What the code process needs: backend endpoints, safety limits and the boxes the arm
    is kept out of (keep_out.resolve), from parameters."""
    q = SafetyLimits()
    limits = SafetyLimits(
        joint_min=q.joint_min, joint_max=q.joint_max, joint_speed=p["joint_speed_cap"],
        cartesian_speed=p["cartesian_speed_cap"],
        cartesian_angular_speed=p["cartesian_angular_speed_cap"],
        ee_box=tuple(zip(p["ee_box_min"], p["ee_box_max"])), base_speed=p["base_speed_cap"],
        base_angular_speed=p["base_angular_speed_cap"],
        base_box=tuple(zip(p["base_box_min"], p["base_box_max"])),
        gripper_max_force=p["gripper_max_force"])
    endpoints = {backend: {role: f"tcp://{p[backend + '_host']}:{p[f'{backend}_{role}_port']}"
                           for role in roles} for backend, roles in proto.SOCKETS.items()}
    return SdkConfig(limits=limits, request_timeout_s=p["request_timeout_s"],
                     keep_out=[b.to_dict() for b in keep_out],
                     keep_out_margin_m=p["keep_out_margin_m"]).with_endpoints(endpoints)


def executor_settings(p: dict[str, Any], config: SdkConfig, isolation: Isolation) -> ExecutorSettings:
    """How executions run, from parameters: sandbox, limits, timeouts, output, the robot."""
    mib = 1024 ** 2
    return ExecutorSettings(
        bwrap=isolation.bwrap if isolation.sandboxed else "", disk_bytes=p["child_disk_mb"] * mib,
        max_processes=p["child_max_processes"], warm_worker=p["warm_worker"],
        hidden=(str(Path(p["history_dir"]).expanduser()),),
        default_timeout_s=p["default_timeout_s"], max_timeout_s=p["max_timeout_s"],
        max_code_bytes=p["max_code_bytes"], max_output_bytes=p["max_output_bytes"],
        feedback_rate_hz=p["feedback_rate_hz"], feedback_max_bytes=p["feedback_max_bytes"],
        stop_grace_s=p["stop_grace_s"], address_space_bytes=p["child_address_space_mb"] * mib,
        open_files=p["child_open_files"], file_size_bytes=p["child_file_size_mb"] * mib,
        sdk_config_json=config.to_json())
