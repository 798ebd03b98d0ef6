#!/usr/bin/env python3
"""CPU of the tidybot-exec node while it republishes state (joint_states at 100 Hz).

    ./tidybot run python bench/node_cpu.py --seconds 10

Starts the simulator (arm state 100 Hz) and the node as processes, lets them settle, then
reads the node's CPU time over the window, idle and with a subscriber on /joint_states.
"""
from __future__ import annotations

import argparse
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from common import cpu_seconds, start_stack, stop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warm-worker", choices=("true", "false"), default="true",
                   help="the node's warm_worker parameter (a spare's guard relays state too)")
    a = p.parse_args()
    sim, node = start_stack(77, warm_worker=a.warm_worker)
    time.sleep(3.0)

    def window(label: str, count=lambda: 0) -> None:
        c0, n0, t0 = cpu_seconds(node.pid), count(), time.monotonic()
        time.sleep(a.seconds)
        c1, n1, t1 = cpu_seconds(node.pid), count(), time.monotonic()
        extra = f", {(n1 - n0) / (t1 - t0):.1f} joint_states/s received" if n1 else ""
        print(f"node CPU {label}: {100 * (c1 - c0) / (t1 - t0):.1f}% of one core{extra}")

    window("publishing, no subscriber")
    rclpy.init()
    sub_node = rclpy.create_node("bench_listener")
    got = []
    sub_node.create_subscription(JointState, "/joint_states", got.append, 10)
    ex = SingleThreadedExecutor()
    ex.add_node(sub_node)
    threading.Thread(target=ex.spin, daemon=True).start()
    time.sleep(2.0)
    window("with a /joint_states subscriber", lambda: len(got))
    ex.shutdown()
    rclpy.try_shutdown()
    stop(node, sim)


if __name__ == "__main__":
    main()
