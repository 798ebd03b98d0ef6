"""The generated interfaces match the contract of DESIGN.md section 5, name for name."""
from __future__ import annotations

import pytest

from tidybot_interfaces.action import ExecuteCode
from tidybot_interfaces.msg import (ExecutionRecord, ExecutionStatus, GripperState, LeaseStatus,
                                    ResourceHold, SkillInfo)
from tidybot_interfaces.srv import (AcquireLease, Describe, GetHistory, GetSkill, ListSkills,
                                    ReleaseLease, RenewLease, ResetEstop, SaveSkill,
                                    StopExecution)


def fields(msg_type) -> dict[str, str]:
    return dict(msg_type.get_fields_and_field_types())


def assert_contract(msg_type, contract: dict[str, str]) -> None:
    """The contract's fields come first, in order and type; extra fields may follow."""
    actual = list(fields(msg_type).items())
    assert actual[:len(contract)] == list(contract.items())


def test_execute_code_goal():
    assert_contract(ExecuteCode.Goal, {
        "code": "string", "timeout_s": "double", "lease_id": "string", "label": "string",
        "dry_run": "boolean"})


def test_execute_code_result():
    assert_contract(ExecuteCode.Result, {
        "execution_id": "string", "status": "uint8", "exit_code": "int32", "stdout": "string",
        "stderr": "string", "truncated": "boolean", "error": "string", "duration_s": "double"})


@pytest.mark.parametrize("name,value", [
    ("STATUS_SUCCEEDED", 0), ("STATUS_FAILED", 1), ("STATUS_TIMEOUT", 2),
    ("STATUS_CANCELED", 3), ("STATUS_REJECTED", 4), ("STATUS_ERROR", 5)])
def test_execute_code_status_constants(name, value):
    assert getattr(ExecuteCode.Result, name) == value


def test_execute_code_feedback():
    assert_contract(ExecuteCode.Feedback, {
        "execution_id": "string", "stream": "string", "text": "string", "seq": "uint32",
        "elapsed_s": "double"})


def test_lease_services():
    assert_contract(AcquireLease.Request, {"holder": "string", "ttl_s": "double", "wait_s": "double"})
    assert_contract(AcquireLease.Response, {
        "success": "boolean", "lease_id": "string", "message": "string", "ttl_s": "double"})
    assert_contract(RenewLease.Request, {"lease_id": "string"})
    assert_contract(RenewLease.Response, {
        "success": "boolean", "message": "string", "remaining_s": "double"})
    assert_contract(ReleaseLease.Request, {"lease_id": "string"})
    assert_contract(ReleaseLease.Response, {"success": "boolean", "message": "string"})


def test_lease_status_has_no_token():
    assert_contract(LeaseStatus, {
        "stamp": "builtin_interfaces/Time", "held": "boolean", "holder": "string",
        "seconds_to_lapse": "double", "waiting_holders": "sequence<string>"})
    assert not any("lease_id" in f or "token" in f for f in fields(LeaseStatus))


def test_execution_status():
    assert_contract(ExecutionStatus, {
        "stamp": "builtin_interfaces/Time", "state": "string", "execution_id": "string",
        "holder": "string", "label": "string", "elapsed_s": "double", "dry_run": "boolean"})
    assert {k: fields(ExecutionStatus)[k] for k in ("estopped", "hold_error")} == {
        "estopped": "boolean", "hold_error": "string"}
    assert (ExecutionStatus.STATE_IDLE, ExecutionStatus.STATE_RUNNING,
            ExecutionStatus.STATE_STOPPING, ExecutionStatus.STATE_ESTOPPED) == (
        "idle", "running", "stopping", "estopped")


def test_reset_estop():
    assert fields(ResetEstop.Request) == {"lease_id": "string"}
    assert fields(ResetEstop.Response) == {"success": "boolean", "message": "string"}


def test_stop_and_history():
    assert_contract(StopExecution.Request, {"lease_id": "string"})
    assert_contract(StopExecution.Response, {
        "success": "boolean", "message": "string", "execution_id": "string"})
    assert fields(GetHistory.Request) == {
        "max_count": "uint32", "offset": "uint32", "holder": "string",
        "execution_id": "string", "statuses": "sequence<uint8>", "include_code": "boolean"}
    assert fields(GetHistory.Response) == {
        "records": "sequence<tidybot_interfaces/ExecutionRecord>", "total": "uint32"}
    record = fields(ExecutionRecord)
    for name in ("execution_id", "holder", "label", "status", "exit_code", "error", "started",
                 "finished", "duration_s", "code_sha256", "stdout_tail", "stderr_tail"):
        assert name in record
    assert not any("lease_id" in f for f in record)


def test_gripper_state():
    assert_contract(GripperState, {
        "header": "std_msgs/Header", "position": "uint8", "width_m": "double",
        "is_calibrated": "boolean", "is_activated": "boolean", "is_moving": "boolean",
        "object_detected": "boolean", "current_ma": "double", "fault_code": "uint8",
        "fault_message": "string"})


def test_messages_round_trip_through_serialization():
    """The typesupport libraries load and serialize (not just the Python classes)."""
    from rclpy.serialization import deserialize_message, serialize_message

    goal = ExecuteCode.Goal(code="print('hi')\n", timeout_s=2.5, label="x", dry_run=True)
    back = deserialize_message(serialize_message(goal), ExecuteCode.Goal)
    assert (back.code, back.timeout_s, back.label, back.dry_run) == (goal.code, 2.5, "x", True)
    status = LeaseStatus(held=True, holder="agent", waiting_holders=["a", "b"])
    assert deserialize_message(serialize_message(status), LeaseStatus).waiting_holders == ["a", "b"]


def test_describe():
    assert fields(Describe.Request) == {}
    assert fields(Describe.Response) == {"markdown": "string", "sdk_version": "string",
                                         "limits_yaml": "string", "skills_markdown": "string"}


def test_skills_and_replay_contract():
    """DESIGN.md section 11.3."""
    assert_contract(SaveSkill.Request, {
        "lease_id": "string", "name": "string", "description": "string", "code": "string",
        "from_execution_id": "string", "dry_runs": "uint32"})
    assert_contract(SaveSkill.Response, {
        "success": "boolean", "message": "string", "version": "uint32",
        "dry_runs_passed": "uint32"})
    assert_contract(ListSkills.Request, {"query": "string"})
    assert_contract(ListSkills.Response, {"skills": "sequence<tidybot_interfaces/SkillInfo>"})
    assert_contract(GetSkill.Request, {"name": "string", "version": "uint32"})
    assert_contract(GetSkill.Response, {
        "success": "boolean", "message": "string", "skill": "tidybot_interfaces/SkillInfo",
        "code": "string"})
    assert_contract(SkillInfo, {
        "name": "string", "version": "uint32", "description": "string", "signature": "string",
        "code_sha256": "string", "from_execution_id": "string",
        "saved": "builtin_interfaces/Time", "runs": "uint32", "successes": "uint32"})
    assert fields(ExecuteCode.Goal)["replay_of"] == "string"
    record = fields(ExecutionRecord)
    assert (record["replay_of"], record["skills"]) == ("string", "sequence<string>")


def test_round_4_contract():
    """DESIGN §12.2 and §12.3: the world a simulator reports, and leases per resource."""
    for msg_type in (ExecuteCode.Result, ExecutionRecord):
        assert {k: fields(msg_type)[k] for k in ("collisions", "moved_objects")} == {
            "collisions": "sequence<string>", "moved_objects": "sequence<string>"}
    assert fields(AcquireLease.Request)["resources"] == "sequence<string>"
    assert fields(ExecutionRecord)["resources"] == "sequence<string>"
    assert_contract(ResourceHold, {"resource": "string", "holder": "string",
                                   "execution_id": "string"})
    assert fields(LeaseStatus)["holds"] == "sequence<tidybot_interfaces/ResourceHold>"
