"""``tidybot-sim``: run the simulated arm, gripper and base until SIGINT/SIGTERM."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Callable

import zmq

from tidybot_sdk import protocol as proto

from tidybot_exec.cameras.protocol import DEFAULT_PORT as CAMERA_PORT

from . import SimConfig, Simulator
from .args import floats_arg, ints_arg
from .world import Scene


def parse_args(argv: list[str] | None) -> SimConfig:
    p = argparse.ArgumentParser(prog="tidybot-sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--arm-ports", type=ints_arg(3), metavar="CMD,STATE,STREAM",
                   default=(proto.ARM_CMD_PORT, proto.ARM_STATE_PORT, proto.ARM_STREAM_PORT))
    p.add_argument("--gripper-ports", type=ints_arg(2), metavar="CMD,STATE",
                   default=(proto.GRIPPER_CMD_PORT, proto.GRIPPER_STATE_PORT))
    p.add_argument("--base-ports", type=ints_arg(2), metavar="CMD,STATE",
                   default=(proto.BASE_CMD_PORT, proto.BASE_STATE_PORT))
    p.add_argument("--arm-state-rate", type=float, default=100.0, metavar="HZ",
                   help="arm state publish rate, 1..1000 Hz (default 100)")
    p.add_argument("--gripper-state-rate", type=float, default=10.0, metavar="HZ")
    p.add_argument("--base-state-rate", type=float, default=50.0, metavar="HZ")
    p.add_argument("--initial-q", type=floats_arg(7), metavar="Q1,...,Q7",
                   help="initial arm joints in rad (default: home)")
    p.add_argument("--initial-base-pose", type=floats_arg(3), metavar="X,Y,THETA",
                   default=[0.0, 0.0, 0.0])
    p.add_argument("--object-width-mm", type=float, default=None,
                   help="width of a simulated object between the fingers (default: none)")
    p.add_argument("--control-port", type=int, default=None,
                   help="port of the fault-injection/inspection socket (default: off)")
    p.add_argument("--ipc-dir", default=None, metavar="DIR",
                   help="bind unix sockets in DIR instead of TCP ports (e.g. ipc://DIR/arm-cmd)")
    p.add_argument("--camera-port", type=int, default=CAMERA_PORT, metavar="PORT",
                   help=f"serve the cameras (TidyBot camera-server protocol) on this port; "
                        f"0: no cameras (default {CAMERA_PORT})")
    p.add_argument("--camera-size", default="320x240", metavar="WxH",
                   help="camera image size in pixels (default 320x240)")
    p.add_argument("--scene", default=None, metavar="FILE",
                   help="the world's table and objects, JSON (docs/cameras.md; default: a "
                        "table with a red cube and a green block)")
    a = p.parse_args(argv)
    try:
        width, height = (int(v) for v in a.camera_size.lower().split("x"))
        scene = Scene.load(a.scene).to_dict() if a.scene else None
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as exc:
        p.error(f"--camera-size WxH / --scene FILE: {exc}")
    config = SimConfig(host=a.host, arm_ports=a.arm_ports, gripper_ports=a.gripper_ports,
                       base_ports=a.base_ports, arm_state_rate_hz=a.arm_state_rate,
                       gripper_state_rate_hz=a.gripper_state_rate,
                       base_state_rate_hz=a.base_state_rate,
                       initial_base_pose=tuple(a.initial_base_pose),
                       object_width_mm=a.object_width_mm, control_port=a.control_port,
                       ipc_dir=a.ipc_dir, scene=scene, camera_size=(width, height),
                       camera_port=a.camera_port or None)
    if a.initial_q is not None:
        config.initial_q = a.initial_q
    return config


def main(argv: list[str] | None = None) -> int:
    return serve(parse_args(argv))


def serve(config: SimConfig, on_stop: Callable[[Simulator], None] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM (then ``on_stop`` sees it still running);
    2 when it cannot start."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        sim = Simulator(config)
        sim.start()
    except (ValueError, zmq.ZMQError, OSError) as exc:   # a bad seed, a port in use
        print(f"tidybot-sim: {exc}", file=sys.stderr)
        return 2
    print("tidybot-sim: listening", *sim.endpoints(), sep="\n  ", flush=True)
    done.wait()
    if on_stop is not None:
        on_stop(sim)
    ended = sim.stop()
    print("tidybot-sim: stopped", flush=True)
    if not ended:
        # A thread still inside MuJoCo's import at the interpreter's finalization crashes it
        # (SIGSEGV, seen in CI under load when stopped right after start): leave without it.
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
