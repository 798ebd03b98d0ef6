#!/usr/bin/env python3
"""The node's memory over many goals: it must stay flat however many an agent sends.

    ./tidybot run python bench/node_memory.py --goals 300

Starts the simulator and the node as processes and sends mixed goals back to back through
TidybotClient (prints, exceptions, timeouts, cancels, 16 MB output floods, forks), printing
the node's RSS every 50 goals. Results are kept result_keep_s (default 60 s) after a goal
ends; pass --result-keep-s to see its effect.
"""
from __future__ import annotations

import argparse
import time

import rclpy

from common import start_stack, stop
from tidybot_exec.clients.client import TidybotClient

GOALS = [
    ("print", "print('hello')\n", None),
    ("exception", "raise KeyError('k')\n", None),
    ("timeout", "while True:\n    pass\n", 0.5),
    ("cancel", "import time\nprint('x', flush=True)\ntime.sleep(30)\n", "cancel"),
    ("flood", "import sys\nblock = 'y' * 65535 + '\\n'\nfor _ in range(256):\n"
              "    sys.stdout.write(block)\n", None),
    ("fork", "import os\nfor _ in range(5):\n    if os.fork() == 0:\n"
             "        import time; time.sleep(30)\n", None),
]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--goals", type=int, default=300)
    p.add_argument("--result-keep-s", type=int, default=60)
    a = p.parse_args()
    sim, node = start_stack(78, require_lease="false", result_keep_s=a.result_keep_s)
    rclpy.init()
    client_node = rclpy.create_node("bench_memory")
    client = TidybotClient(client_node)
    try:
        assert client.wait_for_server(30), "no server"
        client.execute("print('warm')").result(60)
        print(f"goals {0:4d}: node RSS {rss_mb(node.pid):6.1f} MB")
        started = time.monotonic()
        for i in range(1, a.goals + 1):
            _, code, how = GOALS[i % len(GOALS)]
            run = client.execute(code, timeout_s=how if isinstance(how, float) else 0.0)
            if how == "cancel":
                while not run.feedback():
                    pass
                run.cancel()
            run.result(120)
            if i % 50 == 0:
                print(f"goals {i:4d}: node RSS {rss_mb(node.pid):6.1f} MB "
                      f"({time.monotonic() - started:.0f} s)")
    finally:
        client.destroy()
        client_node.destroy_node()
        rclpy.try_shutdown()
        stop(node, sim)


if __name__ == "__main__":
    main()
