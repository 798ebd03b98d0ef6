"""``tidybot-base-bridge``: serve the ZMQ base protocol in front of the TidyBot base server's
RPC until SIGINT/SIGTERM (docs/real-robot.md, "Base bridge").

Exit status 2 when it cannot start: no key file, the base server down, the key refused, a
server that is not a TidyBot base server, or a port in use. Once serving, losing the base
server makes the bridge silent (the SDK raises BaseUnavailable) until it is back.
"""
from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
import threading

import zmq

from tidybot_exec.sim.args import ints_arg
from tidybot_sdk import protocol as proto

from .bridge import BaseBridge
from .rpc import BaseRpc, BaseServerError

PROG = "tidybot-base-bridge"


def _rpc_address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. localhost:50000), got {text!r}")
    return host, int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rpc", type=_rpc_address, default=("localhost", 50000), metavar="HOST:PORT",
                   help="the base server's RPC address (default localhost:50000)")
    p.add_argument("--authkey-file", required=True, metavar="FILE",
                   help="file holding the base server's authkey (its bytes; a final newline is "
                        "ignored). There is no built-in key: the RPC unpickles what it is sent, "
                        "so whoever knows the key can run code on the robot")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--base-ports", type=ints_arg(2), metavar="CMD,STATE",
                   default=(proto.BASE_CMD_PORT, proto.BASE_STATE_PORT))
    p.add_argument("--base-state-rate", type=float, default=50.0, metavar="HZ",
                   help="state publish rate (default 50; the server is polled at 100 Hz)")
    p.add_argument("--rpc-timeout", type=float, default=1.0, metavar="S",
                   help="longest wait for one RPC call (default 1); the SDK waits 2 s for a "
                        "reply, so keep it below that")
    return p.parse_args(argv)


def read_authkey(path: str) -> bytes:
    """The key file's bytes without a final newline; ValueError when it cannot be used."""
    try:
        with open(path, "rb") as f:
            key = f.read().rstrip(b"\r\n")
            mode = os.fstat(f.fileno()).st_mode
    except OSError as exc:
        raise ValueError(f"cannot read --authkey-file {path}: {exc.strerror}") from None
    if not key:
        raise ValueError(f"--authkey-file {path} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"{PROG}: warning: {path} can be read by others than its owner (chmod 600 it): "
              f"the key lets its reader run code on the robot", file=sys.stderr, flush=True)
    return key


# the longest brake from full speed is 0.5 / 0.25 = 2 s (1.57 / 0.79 turning)
EXIT_BRAKE_S = 4.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        key = read_authkey(args.authkey_file)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 2
    host, port = args.rpc
    rpc = BaseRpc(host, port, key, key_source=f"the authkey in {args.authkey_file}",
                  timeout_s=args.rpc_timeout)
    try:
        api = rpc.open()
    except BaseServerError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return _exit(rpc, 2)
    cmd, state = (f"tcp://{args.host}:{p}" for p in args.base_ports)
    bridge = BaseBridge(rpc, cmd, state, state_rate_hz=args.base_state_rate)
    try:
        bridge.start()
    except zmq.ZMQError as exc:
        print(f"{PROG}: cannot bind {cmd} / {state}: {exc}", file=sys.stderr, flush=True)
        rpc.close()
        return _exit(rpc, 2)
    print(f"{PROG}: listening", f"commands {cmd}", f"state {state}",
          f"base server {host}:{port} ({api} API)", sep="\n  ", flush=True)
    done.wait()
    if not bridge.settle(EXIT_BRAKE_S):
        print(f"{PROG}: the base was still moving {EXIT_BRAKE_S:g} s after the exit's stop",
              file=sys.stderr, flush=True)
    bridge.stop()
    rpc.close()
    print(f"{PROG}: stopped", flush=True)
    return _exit(rpc, 0)


def _exit(rpc: BaseRpc, code: int) -> int:
    """``code``, or, when an RPC call never returned, the process ends here: at exit
    multiprocessing releases its proxies on the server, and would wait for that one too."""
    if rpc.stuck:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
