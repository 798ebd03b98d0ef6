"""Core types -> ROS messages, in one place (the node and nothing else uses these)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import (ExecutionRecord, ExecutionStatus, LeaseStatus,
                                    ResourceHold, SkillInfo)
from tidybot_interfaces.srv import AcquireLease, Describe

from tidybot_exec.execution import leases
from tidybot_exec.execution.history import Record
from tidybot_exec.execution.records import Result
from tidybot_exec.execution.service import Snapshot
from tidybot_exec.execution.skills import Skill
from tidybot_sdk import SafetyLimits, describe


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int((seconds % 1.0) * 1e9))


def result(r: Result) -> ExecuteCode.Result:
    return ExecuteCode.Result(
        execution_id=r.execution_id, status=int(r.status), exit_code=int(r.exit_code),
        stdout=r.stdout, stderr=r.stderr, truncated=r.truncated, error=r.error,
        duration_s=r.duration_s, collisions=r.collisions, moved_objects=r.moved_objects)


def record(r: Record) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=r.execution_id, holder=r.holder, label=r.label, status=r.status,
        exit_code=r.exit_code, error=r.error, started=stamp(r.started),
        finished=stamp(r.finished), duration_s=r.duration_s, code_sha256=r.code_sha256,
        stdout_tail=r.stdout_tail, stderr_tail=r.stderr_tail, truncated=r.truncated,
        code=r.code, dry_run=r.dry_run, replay_of=r.replay_of, skills=r.skills.split(),
        collisions=r.collisions.splitlines(), moved_objects=r.moved_objects.splitlines(),
        resources=r.resources.split() or list(leases.RESOURCES))


def skill_info(s: Skill) -> SkillInfo:
    return SkillInfo(
        name=s.name, version=s.version, description=s.description, signature=s.signature,
        docstring=s.docstring, code_sha256=s.code_sha256, from_execution_id=s.from_execution_id,
        dry_runs_passed=s.dry_runs_passed, saved=stamp(s.saved), saved_by=s.saved_by,
        origin=s.origin, runs=s.runs, successes=s.successes)


def execution_status(snap: Snapshot, isolation: str, now: Time) -> ExecutionStatus:
    """The most recently started execution of those running (or, when idle, the last
    one), every running one's id, the estop latch, the sandbox."""
    msg = ExecutionStatus(stamp=now, estopped=snap.estopped, hold_error=snap.hold_problem,
                          isolation=isolation, writers=list(snap.writers),
                          running_execution_ids=list(snap.running_ids))
    current, last = snap.current, snap.last
    if current is not None:
        msg.state = ExecutionStatus.STATE_STOPPING if snap.stopping else ExecutionStatus.STATE_RUNNING
        msg.execution_id, msg.holder = current.id, current.request.holder
        msg.label, msg.elapsed_s = current.request.label, current.elapsed
        msg.dry_run = current.request.dry_run is not None
    if snap.rewinding:            # an on_failure rewind runs while its execution is ending
        msg.state = ExecutionStatus.STATE_REWINDING
    elif current is None:
        msg.state = ExecutionStatus.STATE_ESTOPPED if snap.estopped else ExecutionStatus.STATE_IDLE
    if last is not None:
        msg.last_execution_id, msg.last_status = last.execution_id, int(last.status)
        if current is None:
            msg.execution_id, msg.holder, msg.label, msg.dry_run = (
                last.execution_id, last.holder, last.label, last.dry_run)
    return msg


def lease_status(s: leases.LeaseStatus, resetting: bool, now: Time) -> LeaseStatus:
    return LeaseStatus(stamp=now, held=s.held, holder=s.holder,
                       seconds_to_lapse=s.seconds_to_lapse, waiting_holders=s.waiting_holders,
                       resetting=resetting, holds=[ResourceHold(
                           resource=h.resource, holder=h.holder, execution_id=h.execution_id)
                           for h in s.holds])


def fill_grant(response: AcquireLease.Response, grant: leases.Grant) -> AcquireLease.Response:
    response.success, response.lease_id = grant.success, grant.lease_id
    response.message, response.ttl_s = grant.message, grant.ttl_s
    return response


def description(limits: SafetyLimits) -> Describe.Response:
    """sdk/describe's answer: the SDK manual, this package's version, the limits in force."""
    import json
    from importlib.metadata import PackageNotFoundError, version

    import yaml
    try:
        sdk_version = version("tidybot_exec")
    except PackageNotFoundError:        # run from a source tree that is not installed
        sdk_version = "unknown"
    return Describe.Response(markdown=describe(), sdk_version=sdk_version,
                             limits_yaml=yaml.safe_dump(json.loads(json.dumps(limits.to_dict())),
                                                         sort_keys=False))
