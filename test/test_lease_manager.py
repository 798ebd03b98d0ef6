"""LeaseManager alone: take and drain, refusals, what a busy answer says, tokens."""
from __future__ import annotations

import re

from tidybot_exec.execution.leases import LeaseManager


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
