"""What tidybot-mcp's tools return: the structured content (and so the output schemas) an
MCP client sees. One place, so the tools' contract reads as one page.

Units are SI (m, rad, s). Nothing here ever holds the lease token: the server keeps it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

StatusWord = Literal["running", "succeeded", "failed", "timeout", "canceled", "rejected",
                     "error"]
JobKind = Literal["code", "rewind", "save_skill"]


class DryRunCheck(BaseModel):
    """--approval dry-run-first: the dry run that had to pass before the real run."""
    execution_id: str
    status: StatusWord
    error: str = Field(description="why it did not pass ('' when it did)")
    duration_s: float
    passed: bool = Field(description="succeeded with no safety-guard refusal: the real run "
                                     "went ahead")


class RewindAnswer(BaseModel):
    """A rewind's end, as the node's rewind action answered it."""
    success: bool
    message: str = Field(description="what was done, or why not")
    waypoints: int
    duration_s: float
    dry_run: bool


class SkillSaved(BaseModel):
    """A save's end, as the node's skills/save answered it."""
    success: bool
    message: str = Field(description="what was saved (NAME@VERSION), or why not")
    version: int
    dry_runs_passed: int


class ExecutionAnswer(BaseModel):
    """What execute_code, rewind or save_skill started, as far as it got: the end (status
    other than running), or how far it is. stdout and stderr hold only output not given in
    an earlier answer (code only)."""
    execution_id: str = Field(description=(
        "the id get_execution and cancel_execution take: the node's execution id for code "
        "(as the history has it); for a rewind or a save this server's own (rewind-..., "
        "save-...)"))
    kind: JobKind = Field(description="what was started: code (execute_code), rewind or "
                                      "save_skill")
    status: StatusWord
    exit_code: int | None = Field(description="the code's exit code (negative: killed by that "
                                              "signal); null while running, and for a rewind "
                                              "or a save")
    stdout: str
    stderr: str
    error: str = Field(description="one line: why it did not succeed ('' when it did)")
    duration_s: float = Field(description="seconds it ran (so far, while running)")
    truncated: bool = Field(description="output was cut to its head and tail (by the robot's "
                                        "output cap, or to keep this answer small)")
    dry_run: bool = Field(description="the real robot did not move: the code ran against a "
                                      "private simulated robot, the rewind was only planned")
    collisions: list[str] = Field(default_factory=list, description=(
        "code run on a simulator (every dry run): each contact of the robot with anything but "
        "an object it holds or pushes, '<link> hit <body> at t=<s> s, <depth> m deep'; a "
        "collision fails the run. Empty on the real robot, which does not report them"))
    moved_objects: list[str] = Field(default_factory=list, description=(
        "code run on a simulator: the world's objects that moved > 1 cm or turned > 0.1 rad, "
        "'<name> moved <d> m, turned <a> rad, to [x, y, z]'"))
    approval: DryRunCheck | None = Field(
        default=None, description="the dry run --approval dry-run-first made first")
    rewind: RewindAnswer | None = Field(default=None, description="a rewind's end")
    skill: SkillSaved | None = Field(default=None, description="a save's end: whether the "
                                                               "skill was saved")


class JointState(BaseModel):
    positions: dict[str, float] = Field(description="joint name -> position, rad (the gripper "
                                                    "joint: 0 open .. 0.8 closed)")
    age_s: float


class EndEffector(BaseModel):
    """Pose in the arm base frame, m and rad; R = Rz(yaw) Ry(pitch) Rx(roll), as the SDK's."""
    x: float
    y: float
    z: float
    roll: float
    pitch: float
    yaw: float
    age_s: float


class BasePose(BaseModel):
    """Pose in the odometry frame (m, rad); velocity in the robot's own frame (m/s, rad/s)."""
    x: float
    y: float
    theta: float
    vx: float
    vy: float
    wz: float
    age_s: float


class Gripper(BaseModel):
    width_m: float | None = Field(description="opening between the fingers; null when the "
                                              "gripper is not calibrated")
    position: int = Field(description="0 open .. 255 closed (raw Robotiq units)")
    is_activated: bool
    is_moving: bool
    object_detected: bool
    fault: str
    age_s: float


class ExecutionState(BaseModel):
    state: str = Field(description="idle, running, stopping, rewinding or estopped")
    execution_id: str
    holder: str
    label: str
    elapsed_s: float
    estopped: bool


class LeaseState(BaseModel):
    held: bool
    holder: str
    ours: bool = Field(description="held by this MCP server for you")
    seconds_to_lapse: float
    waiting_holders: list[str]


class RobotState(BaseModel):
    """The robot's state topics, one fresh message each; a part missing from them is listed in
    unavailable (a backend down or stale), never made up."""
    arm_joints: JointState | None
    end_effector: EndEffector | None
    base: BasePose | None
    gripper: Gripper | None
    unavailable: list[str]
    execution: ExecutionState | None
    lease: LeaseState | None


class RobotDescription(BaseModel):
    namespace: str
    sdk_version: str
    lease_holder: str = Field(description="the holder name this server takes the lease as")
    approval: Literal["none", "dry-run-first"]
    cameras: list[str]
    limits_yaml: str
    skills_markdown: str
    sdk_manual_markdown: str


class HistoryEntry(BaseModel):
    execution_id: str
    label: str
    holder: str
    status: StatusWord
    exit_code: int
    error: str
    started: str = Field(description="ISO 8601, UTC")
    duration_s: float
    dry_run: bool
    replay_of: str
    skills: list[str] = Field(description="NAME@VERSION of each skill it imported")
    stdout_tail: str
    stderr_tail: str


class History(BaseModel):
    executions: list[HistoryEntry] = Field(description="newest first")


class Skill(BaseModel):
    name: str
    version: int
    signature: str
    description: str
    docstring: str
    runs: int
    successes: int
    saved: str = Field(description="ISO 8601, UTC")
    saved_by: str
    from_execution_id: str
    dry_runs_passed: int


class Skills(BaseModel):
    skills: list[Skill]


class StopAnswer(BaseModel):
    success: bool
    message: str
