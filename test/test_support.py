"""The test sessions' own isolation (support.isolate_ros): a ROS_DOMAIN_ID set in the
environment is used as it is, else the session's reserved slot is its domain."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import ROOT

ISOLATE = ("import os, support\ndomain = support.isolate_ros()\n"
           "print(domain, os.environ['ROS_DOMAIN_ID'], support.free_port())\n")


def isolated(domain: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROS_DOMAIN_ID"}
    if domain is not None:
        env["ROS_DOMAIN_ID"] = domain
    return subprocess.run([sys.executable, "-c", ISOLATE], cwd=ROOT / "test", env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("domain", ["0", "42", " 232 "])
def test_a_domain_id_from_the_environment_is_used_as_it_is(domain):
    done = isolated(domain)
    assert done.returncode == 0, done.stderr
    used, exported, port = map(int, done.stdout.split())
    assert used == exported == int(domain)
    assert 20100 <= port < 30200               # still a port block of its own slot


def test_without_one_the_reserved_slot_is_the_domain():
    done = isolated(None)
    assert done.returncode == 0, done.stderr
    used, exported, port = map(int, done.stdout.split())
    assert 1 <= used == exported <= 101
    assert 20000 + 100 * used <= port < 20000 + 100 * (used + 1)


@pytest.mark.parametrize("domain", ["abc", "233", "-1"])
def test_a_value_that_is_no_domain_id_is_refused(domain):
    done = isolated(domain)
    assert done.returncode != 0 and f"ROS_DOMAIN_ID={domain!r} from the environment" in done.stderr
