"""The warm worker (warm.py, zygote.py), on the real node: as contained as a cold start.

Every goal here starts from a spare forked by the sandboxed zygote (``warm_worker`` is on by
default). Each case is judged from outside (host processes, the node's log) or by what the
next execution can see: nothing an execution leaves behind — files, shared memory, SysV IPC,
processes — reaches the next one, and the code cannot reach its own init, the zygote or the
spare. Probes aim only at this stack's own processes.
"""
from __future__ import annotations

import json
import os
import signal
import uuid

from tidybot_interfaces.action import ExecuteCode

from support import LEASE_FREE, host_pids_with_argv, pid_alive, wait_until

R = ExecuteCode.Result
STACK_PARAMS = LEASE_FREE

LEAVE = """\
import ctypes, subprocess, sys
open('/tmp/work/left', 'w').write('x')
open('/dev/shm/left', 'w').write('x')
libc = ctypes.CDLL(None, use_errno=True)
assert libc.shmget(0x7164, 4096, 0o1000 | 0o600) >= 0      # IPC_CREAT
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{token}'],
                 start_new_session=True)
print('left', flush=True)
"""

LOOK = """\
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
print(json.dumps({
    'files': [p for p in ('/tmp/work/left', '/dev/shm/left') if os.path.exists(p)],
    'shm': libc.shmget(0x7164, 0, 0) >= 0,
    'processes': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
    'guards': os.listdir('/run/tidybot/guards'),
    'pid': os.getpid()}))
"""


def zygote_pids(node_pid: int) -> list[int]:
    """This stack's zygote: the Python process running zygote.py whose parent is bwrap
    (bwrap's command line names zygote.py too) and that is two PID namespaces deep (the
    executions, whose init is re-parented to bwrap too, are three deep)."""
    def argv0(pid: int) -> bytes:
        return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]

    found = []
    for pid in host_pids_with_argv("zygote.py"):
        try:
            if (b"bwrap" not in argv0(pid) and b"bwrap" in argv0(_parent(pid))
                    and _namespace_depth(pid) == 2 and _descends_from(pid, node_pid)):
                found.append(pid)
        except (OSError, ValueError):
            continue
    return found


def _namespace_depth(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return len(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()) - 1


def _parent(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _parent(pid)
        if pid == ancestor:
            return True
    return False


def test_nothing_an_execution_leaves_reaches_the_next(stack):
    _, client = stack
    token = f"tidybot-left-{uuid.uuid4().hex}"
    _, result = client.run(LEAVE.format(token=token))
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    wait_until(lambda: not host_pids_with_argv(token), 10, "the left-behind process to die")
    _, result = client.run(LOOK)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    seen = json.loads(result.stdout)
    assert seen["files"] == [] and not seen["shm"], seen
    assert seen["pid"] == 2 and seen["processes"] == [1, 2], seen    # its init and itself
    assert seen["guards"] == [], seen      # no other execution's guard sockets


def test_the_code_has_no_capabilities_and_cannot_touch_its_init(stack):
    _, client = stack
    code = ("import os, signal\n"
            "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
            "print(status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip())\n"
            "for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):\n"
            "    os.kill(1, sig)\n"
            "try:\n"
            "    open('/proc/1/mem', 'rb')\n"
            "    print('read init')\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__)\n"
            "print('alive', flush=True)\n")
    _, result = client.run(code)
    assert result.status == R.STATUS_SUCCEEDED, result.stderr
    caps, denied, alive = result.stdout.splitlines()
    assert caps == "0000000000000000 0000000000000000 1"
    assert denied == "PermissionError" and alive == "alive"


def test_a_dead_zygote_means_cold_starts_then_a_new_zygote(stack):
    sim_stack, client = stack
    node_pid = sim_stack.node.popen.pid
    wait_until(lambda: zygote_pids(node_pid), 30, "the zygote to start")
    (old,) = zygote_pids(node_pid)
    sandbox_init = _parent(old)
    os.kill(old, signal.SIGKILL)
    # The sandbox's init (bwrap) ends when the zygote does, and the kernel kills the spare
    # with it; a goal sent between the two would run in the doomed spare and be killed.
    wait_until(lambda: not pid_alive(sandbox_init), 10, "the zygote's sandbox to end")
    for _ in range(3):      # the dead spare turns out unusable: these start cold, then warm
        _, result = client.run("print('still here')")
        assert result.status == R.STATUS_SUCCEEDED and result.stdout == "still here\n", result
    wait_until(lambda: [p for p in zygote_pids(node_pid) if p != old], 60, "a new zygote")
    assert "warm worker: the zygote failed" in sim_stack.node.stderr + sim_stack.node.stdout
    _, result = client.run("print('warm again')")
    assert result.status == R.STATUS_SUCCEEDED and result.stdout == "warm again\n"
