"""A dry run's private simulated robot: ``python -I -u private.py WORKDIR``.

Started by the execution's supervisor, outside the sandbox, on unix sockets in WORKDIR,
seeded with the real robot's state (spec.json ``dry_run``, dry_run.Seed); dies with it.
Ended with SIGTERM, it leaves the world as the code left it in WORKDIR (WORLD_AT_END).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

if not __package__:      # run as a script under -I: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tidybot_exec.sandbox import linux  # noqa: E402
from tidybot_exec.sandbox.supervisor import WORLD_AT_END  # noqa: E402
from tidybot_exec.sim import SimConfig, Simulator  # noqa: E402
from tidybot_exec.sim.cli import serve  # noqa: E402


def main(workdir: str) -> int:
    with open(os.path.join(workdir, "spec.json")) as f:
        seed = json.load(f)["dry_run"]
    linux.die_with_parent(signal.SIGKILL, os.getppid())
    return serve(SimConfig.seeded(seed, workdir), lambda sim: _keep_world(sim, workdir))


def _keep_world(sim: Simulator, workdir: str) -> None:
    """The world as the code left it, for the run's result (world_watch.py): the
    supervisor ends this simulator with SIGTERM once the code has ended, and reports it."""
    path = os.path.join(workdir, WORLD_AT_END)
    with open(path + ".tmp", "w") as f:
        json.dump(sim.world.snapshot(), f)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
