"""LeaseManager alone: take and drain, refusals, what a busy answer says, tokens; leases
per resource (held side by side, all or nothing, FIFO without starvation, take, status)."""
from __future__ import annotations

import re

import pytest

from support import wait_until
from tidybot_exec.execution.leases import RESOURCES, Grant, LeaseManager, resource_set


def test_lease_manager_unit_take_drain_and_close():
    ended = []
    manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=5,
                           on_end=lambda token, reason: ended.append(reason))
    answers = []
    manager.acquire("a", 0, 0, answers.append)
    assert answers[0].success and answers[0].ttl_s == 10
    binding = manager.begin_execution(answers[0].lease_id)       # code runs under "a"
    manager.acquire("b", 0, 5, answers.append)
    manager.take("op", 3.0, answers.append)                      # first in line, ahead of "b"
    assert ended == ["lease revoked: taken over by 'op'"] and len(answers) == 1
    assert not manager.status().held                             # draining: a's code stops
    manager.end_execution(binding)
    assert answers[1].success and answers[1].ttl_s == 3.0 and manager.status().holder == "op"
    manager.acquire("c", 0, 5, answers.append)
    manager.close()
    assert [a.success for a in answers[2:]] == [False, False]
    assert all("shutting down" in a.message for a in answers[2:])


def test_lease_manager_refuses_durations_that_make_no_sense():
    manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=5)
    answers = []
    manager.acquire("a", 5e-324, 0, answers.append)      # what an int in a float64 becomes
    manager.acquire("a", 1.0, float("nan"), answers.append)
    assert [a.success for a in answers] == [False, False]
    assert answers[0].message == "ttl_s must be 0 (the default) or at least 0.1s, got 4.94066e-324"
    assert answers[1].message == "wait_s must be a number of seconds"
    manager.take("op", 0.01, answers.append)
    assert not answers[2].success and not manager.status().held
    manager.close()


def test_a_busy_answer_says_when_the_lease_lapses_and_what_a_lost_token_means():
    now = [100.0]
    manager = LeaseManager(default_ttl_s=120, max_lease_s=1800, max_wait_s=5,
                           clock=lambda: now[0])
    answers = []
    manager.acquire("person", 0, 0, answers.append)
    now[0] += 20.0
    manager.acquire("person", 0, 0, answers.append)     # the token was lost: asks again
    refusal = answers[1]
    assert not refusal.success and refusal.lease_id == ""
    assert "held by 'person' (it lapses in 100s unless renewed or used)" in refusal.message
    assert "lease/take" in refusal.message
    binding = manager.begin_execution(answers[0].lease_id)
    manager.acquire("other", 0, 0, answers.append)
    assert "(it does not lapse while its code runs)" in answers[2].message
    manager.end_execution(binding)
    manager.close()


def test_tokens_are_safe_on_a_command_line():
    """`tidybot-run --lease-id TOKEN`: a token starting with '-' would be taken for an option
    (urlsafe base64 did that for one token in 64)."""
    manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=5)
    tokens = []
    for _ in range(200):
        manager.acquire("a", 0, 0, lambda grant: tokens.append(grant.lease_id))
        manager.release(tokens[-1])
    manager.close()
    assert len(set(tokens)) == 200
    assert all(re.fullmatch(r"[0-9a-f]{64}", token) for token in tokens), tokens


class Agents:
    """A manager on a fake clock and every answer each holder got, in order."""

    def __init__(self, **options) -> None:
        self.now = [100.0]
        self.ended: list[tuple[str, tuple[str, ...], str]] = []
        self.bindings: list = []        # the ended leases, as on_end got them
        self.manager = LeaseManager(default_ttl_s=10, max_lease_s=60, max_wait_s=30,
                                    clock=lambda: self.now[0], on_end=self._ended, **options)
        self.answers: dict[str, list[Grant]] = {}

    def _ended(self, binding, reason: str) -> None:
        self.bindings.append(binding)
        self.ended.append((binding.holder, binding.resources, reason))

    def acquire(self, holder: str, resources=None, wait_s: float = 0.0, ttl_s: float = 0.0
                ) -> list[Grant]:
        answers = self.answers.setdefault(holder, [])
        self.manager.acquire(holder, ttl_s, wait_s, answers.append, resources)
        return answers

    def take(self, holder: str, resources=None) -> list[Grant]:
        answers = self.answers.setdefault(holder, [])
        self.manager.take(holder, 0.0, answers.append, resources)
        return answers

    def token(self, holder: str) -> str:
        grant = self.answers[holder][-1]
        assert grant.success, grant
        return grant.lease_id

    def holds(self) -> dict[str, str]:
        return {hold.resource: hold.holder for hold in self.manager.status().holds}

    def advance(self, seconds: float, until, what: str) -> None:
        """Move the clock on and wait for the clock thread to act on it."""
        self.now[0] += seconds
        self.manager.check_deadlines()
        wait_until(until, 10, what)


@pytest.fixture
def agents():
    made = Agents()
    yield made
    made.manager.close()


def test_leases_on_disjoint_resources_are_held_at_once_and_status_shows_each_part(agents):
    arm = agents.acquire("arm-agent", ["gripper", "arm"])
    nav = agents.acquire("nav", ["base"], ttl_s=5.0)
    assert arm[0].success and arm[0].resources == ("arm", "gripper")
    assert arm[0].message == "granted to 'arm-agent' on arm, gripper for 10s (renew to keep it)"
    assert nav[0].success and nav[0].resources == ("base",)
    assert agents.holds() == {"arm": "arm-agent", "gripper": "arm-agent", "base": "nav"}
    status = agents.manager.status()            # its single fields: the newest lease
    assert status.held and status.holder == "nav" and status.seconds_to_lapse == 5.0

    busy = agents.acquire("other", ["gripper"])[0]
    assert not busy.success and busy.message.startswith(
        "the lease on gripper is held by 'arm-agent' (it lapses in 10s unless renewed or used)")

    binding = agents.manager.begin_execution(agents.token("arm-agent"))
    assert binding.resources == ("arm", "gripper")
    agents.manager.name_execution(binding, "exec-1")
    assert [(h.resource, h.execution_id) for h in agents.manager.status().holds] == [
        ("arm", "exec-1"), ("gripper", "exec-1"), ("base", "")]

    # each lease lapses on its own ttl: nav's (5 s, no code) lapses, arm-agent's runs code
    agents.advance(6.0, lambda: agents.ended, "nav's lease to lapse")
    assert agents.ended == [("nav", ("base",), "lease lapsed: no renew or activity within ttl")]
    assert agents.holds() == {"arm": "arm-agent", "gripper": "arm-agent", "base": ""}
    assert agents.manager.status().holder == "arm-agent"

    agents.manager.end_execution(binding)
    assert agents.manager.status().holds[0].execution_id == ""
    assert agents.manager.release(agents.token("arm-agent")) == (True, "released")
    status = agents.manager.status()
    assert not status.held and status.holder == ""
    assert agents.holds() == dict.fromkeys(RESOURCES, "")


def test_a_grant_is_all_or_nothing_and_overlapping_waiters_are_served_in_order(agents):
    """Nobody holds one part while waiting for another; a free part that an earlier waiter
    wants is not given to a later one (it would starve the earlier), a part nobody waits for
    is."""
    agents.acquire("nav", ["base"])
    both = agents.acquire("both", ["arm", "base"], wait_s=20)
    arm = agents.acquire("arm-agent", ["arm"], wait_s=20)
    gripper = agents.acquire("gripper-agent", ["gripper"], wait_s=20)
    assert both == [] and arm == []             # the arm is free, yet nobody holds it
    assert gripper[0].success                   # overlaps nobody in line: goes ahead
    assert agents.holds() == {"arm": "", "gripper": "gripper-agent", "base": "nav"}
    assert agents.manager.status().waiting_holders == ["both", "arm-agent"]
    refused = agents.acquire("impatient", ["arm"])[0]
    assert refused.message == ("the lease on arm is promised to 'both'; pass wait_s > 0 to wait "
                               "in line")

    agents.manager.release(agents.token("nav"))
    assert both[0].success and both[0].resources == ("arm", "base") and arm == []
    agents.manager.release(agents.token("both"))
    assert arm[0].success and agents.holds() == {"arm": "arm-agent", "gripper": "gripper-agent",
                                                 "base": ""}


def test_a_later_waiter_goes_ahead_only_past_waiters_it_overlaps_none_of(agents):
    """FIFO is by overlap, transitively: 'arm' waits behind 'arm+base', which waits behind
    'base' for nav's base, although the arm is free; it goes ahead once they left."""
    agents.acquire("nav", ["base"])
    first = agents.acquire("base-agent", ["base"], wait_s=1.0)
    second = agents.acquire("both", ["arm", "base"], wait_s=2.0)
    third = agents.acquire("arm-agent", ["arm"], wait_s=20)
    assert first == second == third == []

    agents.advance(1.5, lambda: first, "the first waiter's wait to end")
    assert first[0].message == "gave up waiting: the lease on base is still held by 'nav'"
    assert second == third == []
    agents.advance(1.0, lambda: third, "the arm to go to the last waiter once 'both' left")
    assert second[0].message == "gave up waiting: the lease on base is still held by 'nav'"
    assert third[0].success and agents.holds()["arm"] == "arm-agent"


def test_take_ends_only_the_leases_it_overlaps_and_waits_for_their_code(agents):
    agents.acquire("arm-agent", ["arm", "gripper"])
    agents.acquire("nav", ["base"])
    binding = agents.manager.begin_execution(agents.token("arm-agent"))   # code runs
    gripper = agents.acquire("gripper-agent", ["gripper"], wait_s=20)
    op = agents.take("op", ["arm"])
    assert agents.ended == [("arm-agent", ("arm", "gripper"), "lease revoked: taken over by 'op'")]
    assert op == [] and gripper == []           # the ended lease drains: its code stops
    assert agents.holds() == {"arm": "", "gripper": "", "base": "nav"}
    busy = agents.acquire("late", ["gripper"])[0]
    assert busy.message.startswith("the lease of 'arm-agent' on gripper ended and the robot is "
                                   "not handed on yet")

    agents.manager.end_execution(binding)
    assert op[0].success and op[0].resources == ("arm",)
    assert gripper[0].success                   # waited for the part op did not take
    assert agents.holds() == {"arm": "op", "gripper": "gripper-agent", "base": "nav"}
    assert agents.manager.renew(agents.token("nav"))[0]     # nav's lease was left alone


def test_no_resources_means_the_whole_robot_as_before(agents):
    for resources in (None, [], ("base", "arm", "gripper")):
        grant = agents.acquire("a", resources)[-1]
        assert grant.resources == RESOURCES
        assert grant.message == "granted to 'a' for 10s (renew to keep it)"
        assert agents.acquire("b", ["base"])[-1].message.startswith(
            "the lease on base is held by 'a'")
        assert agents.acquire("b")[-1].message.startswith("the lease is held by 'a'")
        agents.manager.release(grant.lease_id)
    agents.acquire("a")
    part = agents.acquire("part", ["gripper"], wait_s=20)
    agents.take("op")
    assert agents.ended[-1] == ("a", RESOURCES, "lease revoked: taken over by 'op'")
    assert agents.answers["op"][0].resources == RESOURCES and part == []


def test_unknown_resources_are_refused_by_name(agents):
    message = ("unknown resource 'legs': a lease holds any of arm, gripper, base (none named: "
               "all three)")
    assert agents.acquire("a", ["arm", "legs"])[0] == Grant(False, message=message)
    assert agents.take("op", ["legs"])[0] == Grant(False, message=message)
    with pytest.raises(ValueError, match="unknown resources '', 'Arm'"):
        resource_set(["Arm", ""])
    assert resource_set("base, arm") == ("arm", "base") and resource_set("") == RESOURCES
    assert not agents.manager.status().held and agents.ended == []


def test_reset_on_release_keeps_only_the_ended_leases_parts():
    agents = Agents(keep_after_end=True)
    try:
        agents.acquire("arm-agent", ["arm"])
        agents.acquire("nav", ["base"])
        arm = agents.acquire("next", ["arm"], wait_s=20)
        agents.manager.release(agents.token("arm-agent"))
        assert arm == []                  # the arm is first reset to where the lease began
        assert agents.acquire("gripper-agent", ["gripper"])[0].success
        agents.manager.end_execution(agents.bindings[0])        # the reset is done
        assert arm[0].success
        assert agents.holds() == {"arm": "next", "gripper": "gripper-agent", "base": "nav"}
    finally:
        agents.manager.close()


def test_a_grant_while_another_lease_drains_keeps_that_leases_trajectory():
    """on_grant names every lease whose trajectory must stay: held ones and one that ended
    and still drains (its code stopping, or reset_on_release about to rewind it)."""
    grants: list[tuple[int, list[int], tuple[str, ...]]] = []
    made = Agents(on_grant=lambda serial, others, parts: grants.append((serial, others, parts)))
    try:
        made.acquire("nav", ["base"])
        binding = made.manager.begin_execution(made.token("nav"))      # its code runs
        made.manager.release(made.token("nav"))                        # ... and drains
        made.acquire("hand", ["gripper"])
        assert grants[-1] == (grants[-1][0], [binding.serial], ("gripper",))
        made.manager.end_execution(binding)
    finally:
        made.manager.close()
