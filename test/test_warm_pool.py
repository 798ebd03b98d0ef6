"""The warm worker without a node: a checkout under /tmp seen read-only by the code, and no
spare from before a lease ended is handed out."""
from __future__ import annotations

import shutil
import subprocess
import sys

from support import ROOT, wait_until
from tidybot_exec.execution.settings import ExecutorSettings
from tidybot_exec.execution.warm import WarmPool
from tidybot_exec.sandbox import bwrap


CHECKOUT_UNDER_TMP = """\
import sys, tempfile
sys.path.insert(0, sys.argv[1])
from tidybot_exec.execution.history import History
from tidybot_exec.execution.records import Request
from tidybot_exec.execution.service import ExecutionService
from tidybot_exec.execution.settings import ExecutorSettings, LeasePolicy
from tidybot_exec.sandbox import bwrap
assert bwrap.__file__.startswith(sys.argv[1])
service = ExecutionService(ExecutorSettings(bwrap=bwrap.detect().bwrap),
                           History(tempfile.mkdtemp(), 10), hold=lambda parts: [],
                           policy=LeasePolicy(require_lease=False))
code = (f"import tidybot_exec.execution.history\\n"   # not imported by the zygote: read from /tmp
        f"open('/tmp/mine', 'w').write('x')\\n"
        f"try:\\n    open({sys.argv[1]!r} + '/tidybot_sdk/x', 'w')\\n"
        f"except OSError as exc:\\n    print(type(exc).__name__, exc.errno)\\n")
while not service.pool.ready:
    pass
result = service.run(Request(code=code))
service.shutdown()
print(result.status.name, result.stdout.strip(), result.error)
"""


def test_a_checkout_under_tmp_stays_visible_and_read_only(tmp_path):
    """The fresh /tmp of each execution must not hide a package that lives under /tmp (a
    CI checkout, say), nor make it writable."""
    assert str(tmp_path).startswith("/tmp/")
    for package in ("tidybot_exec", "tidybot_sdk"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", CHECKOUT_UNDER_TMP, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "SUCCEEDED OSError 30 ", done.stdout   # EROFS


def test_a_spare_from_before_a_lease_ended_is_never_handed_out():
    pool = WarmPool(ExecutorSettings(bwrap=bwrap.detect().bwrap))
    try:
        wait_until(lambda: pool.ready, 60, "the first spare")
        old = pool.take()
        pool.discard()                  # a lease ended while a goal held the spare ...
        pool.give_back(old)             # ... and that goal was then refused
        wait_until(lambda: old.tree.returncode is not None, 10, "the old spare to be killed")
        wait_until(lambda: pool.ready, 60, "a new spare")
        new = pool.take()
        assert new.id != old.id
        new.discard()
    finally:
        pool.close()


def test_the_pool_keeps_a_spare_for_each_lease_held():
    """Two agents' leases: two spares ready, so both goals start warm; back to one lease,
    the extra spare is retired (killed), not kept."""
    pool = WarmPool(ExecutorSettings(bwrap=bwrap.detect().bwrap))
    taken = []
    try:
        pool.want(2)
        wait_until(lambda: len(pool._spares) == 2, 60, "two spares")
        first, second = pool.take(), pool.take()
        assert first is not None and second is not None and first.id != second.id
        taken += [first, second]
        wait_until(lambda: len(pool._spares) == 2, 60, "two spares again")
        extra = pool._spares[1]
        pool.want(1)
        wait_until(lambda: extra.tree.returncode is not None, 10, "the extra spare to be killed")
        assert len(pool._spares) == 1
    finally:
        for spare in taken:
            spare.discard()
        pool.close()
