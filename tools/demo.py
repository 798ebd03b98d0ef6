#!/usr/bin/env python3
"""The main job on the simulator: start the simulator and the node (as the launch file
would), run an example skill through execute_code with live output, and shut down.

Run through ``./tidybot demo [example.py]`` (which sets up the environment first).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tidybot_exec.clients.client import TidybotClientError, spun_client
from tidybot_exec.clients.run_cli import LiveOutput
from tidybot_exec.execution.records import Status
from tidybot_exec.ros.launch_plan import LaunchFailed, Started, plan

ROOT = Path(__file__).resolve().parent.parent


def say(text: str) -> None:
    print(f"\033[1mdemo:\033[0m {text}" if sys.stdout.isatty() else f"demo: {text}", flush=True)


def main() -> int:
    example = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "examples" / "look_and_pick.py")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # the launch file's plan and rules: the node starts once its simulator serves, and
    # the demo ends when one of them exits
    stack = Started(plan({"use_sim": "true"}, ROOT, rsp_available=False),
                    Path(sys.executable).parent)
    code = 1
    try:
        stack.start(say)
        with spun_client("tidybot_demo") as client:
            if not client.wait_for_server(30):
                stack.check()
                say("tidybot_exec did not come up")
                return 1
            client.acquire("tidybot-demo")
            say(f"running {example.relative_to(ROOT) if example.is_relative_to(ROOT) else example} "
                f"through the execute_code action:")
            run = client.execute(example.read_text(), label=f"demo: {example.name}", timeout_s=300)
            live = LiveOutput(to_stderr_only=False)
            while not run.is_done():
                live.pump(run)
                stack.check()
                time.sleep(0.02)
            result = run.result()
            live.finish(run, result)
            say(f"execution {result.execution_id} {Status(result.status).name.lower()} in "
                f"{result.duration_s:.1f}s" + (f": {result.error}" if result.error else ""))
            client.release()
            code = 0 if result.status == Status.SUCCEEDED else 1
    except (TidybotClientError, LaunchFailed) as exc:
        say(str(exc))
    finally:
        for name, exit_code in stack.stop().items():
            say(f"{name} exited with {exit_code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
