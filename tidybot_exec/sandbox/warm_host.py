"""The warm pool's trusted end outside the sandbox, stdlib only.

Runs as ``python -I -u warm_host.py POOLDIR CONTROL_FD``: starts the zygote (zygote.py) in
bwrap, keeps its whole tree as a subreaper, and stands in for the node when the node dies
(the running warm execution is among what it kills; then the hold, as the supervisor's).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_exec.sandbox import bwrap, linux  # noqa: E402  (stdlib only)
from tidybot_exec.sandbox.supervisor import kill_tree, orphan_with_parent  # noqa: E402


def host(pooldir: str, control_fd: str) -> None:
    """The warm pool's trusted end outside the sandbox: runs the zygote (zygote.py) in
    bwrap, keeps its whole tree as a subreaper, and stands in for the node when the node
    dies (the running warm execution is among what it kills; then the hold). SIGTERM: the
    node closes the pool; kill the tree and exit."""
    with open(os.path.join(pooldir, "spec.json")) as f:
        spec = json.load(f)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)

    def close(signum: int, frame: object) -> None:
        kill_tree()
        os._exit(0)

    signal.signal(signal.SIGTERM, close)
    orphan_with_parent(pooldir, spec)
    box = spec["sandbox"]
    zygote = str(Path(__file__).with_name("zygote.py"))
    argv = bwrap.command(box["bwrap"], Path(pooldir) / "files", box["disk_bytes"],
                           box["hidden"], [sys.executable, "-I", "-u", zygote, control_fd],
                           zygote=True)
    status = subprocess.call(argv, pass_fds=(int(control_fd),), stdin=subprocess.DEVNULL)
    kill_tree()
    sys.exit(1 if status else 0)


if __name__ == "__main__":
    host(*sys.argv[1:])
