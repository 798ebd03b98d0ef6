#!/usr/bin/env python3
"""Cameras: frame rates and latencies, the idle cost, and bytes per frame through the guard.

    ./tidybot run python bench/cameras.py [--size 320x240] [--rate 30] [--seconds 10]

Starts the simulator (serving cameras at --size) and the node (camera_rate_hz = --rate) as
processes and measures, for each camera:
  * the colour topic's rate and its latency, render → ROS topic (receive time minus the
    header stamp, which is when the simulator took the frame), with colour and depth
    subscribed;
  * render → SDK: the age of the frame code gets from sensors.get_image (its info's stamp),
    and the call's own time, from sandboxed code through the guard;
  * the node's and the simulator's CPU with no subscriber, and with one camera streaming,
    against a stack without cameras (the idle cost of having them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from common import cpu_seconds, start_stack, stop
from tidybot_exec.clients.client import TidybotClient

SDK_PROBE = """
import json, time
from tidybot_sdk import sensors
for camera in sensors.list_cameras():
    sensors.get_image(camera)                    # subscribe, first frame
    calls, ages = [], []
    for _ in range({n}):
        t = time.time()
        img = sensors.get_image(camera)
        done = time.time()
        calls.append(done - t)
        ages.append(done - sensors.get_camera_info(camera)['stamp'])
        time.sleep(0.05)
    print(json.dumps({{'camera': camera, 'calls': calls, 'ages': ages, 'bytes': img.nbytes}}))
"""


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 2 else max(values)


def cpu(seconds: float, label: str, node, sim) -> None:
    """Print the node's and the simulator's CPU over the next ``seconds``."""
    procs = (("node", node), ("sim", sim))
    c0, t0 = {n: cpu_seconds(pr.pid) for n, pr in procs}, time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    print(f"  CPU {label}: " + ", ".join(f"{n} {100 * (cpu_seconds(pr.pid) - c0[n]) / dt:.1f}%"
                                         for n, pr in procs) + " of one core")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="320x240")
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    print(f"cameras at {a.size}, camera_rate_hz {a.rate:g}")
    sim, node = start_stack(79, require_lease="false")
    time.sleep(3.0)
    cpu(a.seconds, "without cameras (baseline)", node, sim)
    stop(node, sim)
    sim, node = start_stack(79, cameras=("--camera-size", a.size), camera_rate_hz=a.rate,
                            require_lease="false")
    rclpy.init()
    listener = rclpy.create_node("bench_cameras")
    ex = SingleThreadedExecutor()
    ex.add_node(listener)
    threading.Thread(target=ex.spin, daemon=True).start()
    client = TidybotClient(listener)
    try:
        assert client.wait_for_server(30), "the node did not come up"
        time.sleep(2.0)

        cpu(a.seconds, "with cameras, no subscriber", node, sim)
        for camera in ("base", "wrist"):
            got: list[tuple[float, Image]] = []
            subs = [listener.create_subscription(
                Image, f"/cameras/{camera}/color/image_raw",
                lambda m: got.append((time.time(), m)), 10),
                listener.create_subscription(Image, f"/cameras/{camera}/depth/image_raw",
                                             lambda m: None, 10)]
            time.sleep(3.0)
            got.clear()
            cpu(a.seconds, f"{camera} colour + depth subscribed", node, sim)
            stamps = [(t, m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) for t, m in got]
            lat = [1000 * (t - s) for t, s in stamps]
            span = stamps[-1][1] - stamps[0][1] if len(stamps) > 1 else float("nan")
            print(f"  {camera}: topic {(len(stamps) - 1) / span:.1f} frames/s, render -> topic "
                  f"p50 {statistics.median(lat):.0f} ms, p95 {pct(lat, 95):.0f} ms "
                  f"({len(lat)} frames)")
            for sub in subs:
                listener.destroy_subscription(sub)
        time.sleep(3.0)
        run = client.execute(SDK_PROBE.format(n=30), timeout_s=120)
        result = run.result(180)
        for line in result.stdout.splitlines():
            r = json.loads(line)
            calls, ages = [1000 * v for v in r["calls"]], [1000 * v for v in r["ages"]]
            print(f"  {r['camera']}: render -> SDK (frame age at return) p50 "
                  f"{statistics.median(ages):.0f} ms, p95 {pct(ages, 95):.0f} ms; get_image "
                  f"p50 {statistics.median(calls):.1f} ms; {r['bytes']} bytes per colour frame "
                  f"through the guard")
        if result.error:
            print("  SDK probe:", result.error)
    finally:
        client.destroy()
        ex.shutdown()
        rclpy.try_shutdown()
        stop(node, sim)


if __name__ == "__main__":
    main()
