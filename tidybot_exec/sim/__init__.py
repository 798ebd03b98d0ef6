"""Simulated TidyBot backends (arm, gripper, base) on the real wire protocols.

``Simulator`` runs all three in-process (tests); ``tidybot-sim`` runs them as a command.
They share a physical world (world.py, physics.py: a table and objects, MuJoCo contact,
the robot's collision geometry following the servers) that an optional camera server
(camera_server.py) renders for the node, as the real TidyBot's does.
An optional control socket lets tests in another process inject faults and read what the
servers received (docs/protocols.md, "Simulator control").
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from tidybot_sdk import kinematics as kin
from tidybot_sdk import protocol as proto

from tidybot_exec.cameras.robot_model import ARM_BASE_LINK, robot_model, transform

from .arm import SimArm
from .base import SimBase
from .camera_server import CameraServer
from .gripper import SimGripper
from .physics import Pose
from .server import BackendServer
from .world import Scene, World




def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@functools.cache
def _arm_base() -> np.ndarray:
    """The arm's base (panda_link0) on the mobile base, from the URDF."""
    return robot_model().link_poses({})[ARM_BASE_LINK]


@dataclass
class SimConfig:
    """Where the simulated servers listen and how they start."""

    host: str = "127.0.0.1"
    arm_ports: tuple[int, int, int] = (proto.ARM_CMD_PORT, proto.ARM_STATE_PORT,
                                       proto.ARM_STREAM_PORT)
    gripper_ports: tuple[int, int] = (proto.GRIPPER_CMD_PORT, proto.GRIPPER_STATE_PORT)
    base_ports: tuple[int, int] = (proto.BASE_CMD_PORT, proto.BASE_STATE_PORT)
    arm_state_rate_hz: float = 100.0
    gripper_state_rate_hz: float = 10.0
    base_state_rate_hz: float = 50.0
    initial_q: list[float] = field(default_factory=lambda: kin.HOME_Q.tolist())
    initial_base_pose: tuple[float, float, float] = (0.0, 0.0, 0.0)
    initial_gripper: proto.GripperSeed | None = None    # None: activated and closed, as the
                                                       # real server leaves it at start-up
    object_width_mm: float | None = None
    control_port: int | None = None
    ipc_dir: str | None = None        # bind unix sockets here instead of host/ports
    scene: dict | None = None         # Scene.from_dict form; None: Scene.default()
    camera_port: int | None = None    # serve the cameras here (ipc_dir: on its cameras.sock)
    camera_size: tuple[int, int] = (320, 240)

    @classmethod
    def seeded(cls, seed: dict, ipc_dir: str) -> "SimConfig":
        """A dry run's private robot on unix sockets in ``ipc_dir``, starting where the real
        one is (``seed``: dry_run.Seed.to_dict; None fields keep the defaults)."""
        config = cls(ipc_dir=ipc_dir, initial_gripper=seed.get("gripper"),
                     scene=seed.get("world"), camera_port=0)
        if seed.get("q") is not None:
            config.initial_q = list(seed["q"])
        if seed.get("base_pose") is not None:
            config.initial_base_pose = tuple(seed["base_pose"])
        return config

    def addresses(self) -> proto.Endpoints:
        """Where each backend socket binds (and so where clients connect)."""
        if self.ipc_dir is not None:
            return proto.ipc_endpoints(self.ipc_dir)
        return proto.tcp_endpoints(self.host, {"arm": self.arm_ports, "gripper": self.gripper_ports,
                                               "base": self.base_ports})


class Simulator:
    """The three simulated backends, started and stopped together."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = c = config or SimConfig()
        if not 1.0 <= c.arm_state_rate_hz <= 1000.0:
            raise ValueError("arm state rate must be 1..1000 Hz")
        q0 = np.array(c.initial_q, dtype=float)
        if q0.shape != (7,) or np.any(q0 < kin.Q_MIN) or np.any(q0 > kin.Q_MAX):
            raise ValueError("initial_q must be 7 joint angles within the Panda limits")
        at = c.addresses()
        self.arm = SimArm(*at["arm"].values(), state_rate_hz=c.arm_state_rate_hz, q0=q0)
        self.gripper = SimGripper(*at["gripper"].values(), state_rate_hz=c.gripper_state_rate_hz,
                                  object_width_mm=c.object_width_mm, seed=c.initial_gripper)
        self.base = SimBase(*at["base"].values(), state_rate_hz=c.base_state_rate_hz,
                            pose0=c.initial_base_pose)
        self.world = World(Scene.from_dict(c.scene) if c.scene else Scene.default(),
                           self.robot_pose, self.arm, log=_log)
        self.gripper.world = self.world
        self.cameras = None if c.camera_port is None else CameraServer(
            self.world, self.robot_pose, width=c.camera_size[0], height=c.camera_size[1],
            host=c.host, port=c.camera_port,
            path=os.path.join(c.ipc_dir, proto.CAMERA_SOCKET) if c.ipc_dir else None,
            log=_log)
        self.servers: dict[str, BackendServer] = {
            "arm": self.arm, "gripper": self.gripper, "base": self.base}
        self._control_stop = threading.Event()
        self._control_thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            for server in self.servers.values():
                server.start()
        except Exception:
            self.stop()          # a port in use: release the ones already bound
            raise
        if self.cameras is not None and self.cameras.path:
            # a dry run's: started beside its first commands (importing websockets takes
            # ~80 ms that the code's start should not wait for; the node retries meanwhile),
            # and the physics after them (importing MuJoCo takes ~120 ms more of a CPU,
            # which slowed the cameras' start and so the node's first look at the world)
            threading.Thread(target=self._start_private_cameras, daemon=True,
                             name="sim-cameras").start()
        else:
            self.world.start()
        if self.cameras is not None and not self.cameras.path:
            try:
                self.cameras.start()
            except ImportError as exc:        # websockets missing or older than 14
                print(f"tidybot-sim: cameras not served: {exc} (pip install 'websockets>=14')",
                      file=sys.stderr, flush=True)
            except OSError:
                self.stop()
                raise
        if self.config.control_port is not None:
            sock = zmq.Context.instance().socket(zmq.REP)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"tcp://{self.config.host}:{self.config.control_port}")
            self._control_thread = threading.Thread(
                target=self._control_loop, args=(sock,), name="sim-control", daemon=True)
            self._control_thread.start()

    def _start_private_cameras(self) -> None:
        try:
            self.cameras.start()
        except (OSError, ImportError) as exc:
            print(f"tidybot-sim: cameras not served: {exc}", file=sys.stderr, flush=True)
        self.world.start()

    def stop(self) -> bool:
        """Stop serving; whether every thread has ended (the physics may still be inside
        MuJoCo's import, which cannot be interrupted)."""
        ended = self.world.stop()
        self._control_stop.set()
        if self._control_thread is not None:
            self._control_thread.join(timeout=5)
        if self.cameras is not None:
            self.cameras.stop()
        for server in self.servers.values():
            server.stop(wait=False)
        for server in self.servers.values():
            server.stop()
        return ended

    def robot_pose(self) -> Pose:
        """Joints, base pose and gripper position now (each read under its own lock)."""
        with self.arm.lock:
            q = self.arm.q.copy()
        with self.base.lock:
            base = self.base.pose.copy()
        with self.gripper.lock:
            gripper = self.gripper.position
        return Pose(q, base, gripper)

    def hand_pose(self) -> np.ndarray:
        """The gripper's TCP frame in the world (odometry) frame."""
        with self.arm.lock:
            q = self.arm.q.copy()
        with self.base.lock:
            x, y, theta = self.base.pose
        return transform((x, y, 0.0), (0.0, 0.0, theta)) @ _arm_base() @ kin.fk(q)

    def __enter__(self) -> "Simulator":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def endpoints(self) -> list[str]:
        """One line per socket, for people and for the docs."""
        c = self.config
        lines = [f"{backend:8} " + "  ".join(f"{'commands' if role == 'cmd' else role} {addr}"
                                              for role, addr in roles.items())
                 for backend, roles in c.addresses().items()]
        if self.cameras is not None:
            lines.append(f"cameras  {self.cameras.address}")
        if c.control_port is not None:
            lines.append(f"control  tcp://{c.host}:{c.control_port}")
        return lines

    # ------------------------------------------------------------------ control
    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one control request (fault injection, inspection); see docs/protocols.md."""
        cmd = request.get("cmd")
        if cmd == "stats":
            return {"ok": True, "received": {n: dict(s.received) for n, s in self.servers.items()},
                    "running": {n: s.running for n, s in self.servers.items()},
                    "camera_frames": self.cameras.frames_rendered if self.cameras else 0,
                    "held": self.world.held}
        if request.get("server") == "cameras" and self.cameras is not None and cmd in (
                "kill", "restart"):
            self.cameras.stop()
            if cmd == "restart":
                self.cameras.start()
            return {"ok": True}
        server = self.servers.get(request.get("server", ""))
        if server is None:
            return {"ok": False, "error": f"server must be one of {', '.join(self.servers)}"}
        value = request.get("value")
        with server.lock:
            if cmd == "freeze_state":
                server.faults.freeze_state = bool(value)
            elif cmd == "drop_replies":
                server.faults.drop_replies = int(value)
            elif cmd == "reply_delay":
                server.faults.reply_delay_s = float(value)
            elif cmd == "inject_wrench" and server is self.arm:
                self.arm.wrench = np.array(value, dtype=float).reshape(6)
            elif cmd == "object_width_mm" and server is self.gripper:
                self.gripper.object_width_mm = None if value is None else float(value)
            elif cmd == "gripper_fault" and server is self.gripper:
                self.gripper.fault_code = int(value)
            elif cmd == "gripper_jam" and server is self.gripper:
                self.gripper.jammed = bool(value)
            elif cmd not in ("kill", "restart"):
                return {"ok": False, "error": f"unknown command {cmd!r} for {server.name}"}
        if cmd == "kill":
            server.stop()
        elif cmd == "restart":
            server.stop()
            server.start()
        return {"ok": True}

    def _control_loop(self, sock: zmq.Socket) -> None:
        try:
            while not self._control_stop.is_set():
                if sock.poll(50):
                    try:
                        reply = self.control(proto.decode(sock.recv()))
                    except (proto.ProtocolError, ValueError, TypeError) as exc:
                        reply = {"ok": False, "error": str(exc)}
                    sock.send(proto.encode(reply))
        finally:
            sock.close()
