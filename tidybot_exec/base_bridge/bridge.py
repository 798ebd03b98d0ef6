"""The ZMQ side: the base protocol (docs/protocols.md, "Base") served from the base server's
RPC, on the simulator's BackendServer (its sockets, threads and command parsing).

Its physics loop polls the server (POLL_HZ) and publishes the last state; its command thread
forwards each command. The bridge commands nothing by itself but the rest of a STOP
(upstream, see _halt); what a client asks for goes through whatever guards the ZMQ side.

Where the two sides differ:

- θ: the base's odometry θ is unwrapped and it takes pose targets as given (3.1 -> -3.1
  would turn 6.2 rad). The protocol's θ is wrapped and turns the short way: targets are
  unwrapped around the measured θ, and the state's θ is wrapped.
- watchdog: 250 ms without a command and the real base drops its target and lets its motors
  coast (no brake). The state says so (``active`` and ``motors_enabled`` false) and the
  bridge does not hide it: clients re-send their targets at 10 Hz, as the protocol asks.
- an unreachable server: the bridge falls silent, as a dead backend does (no state, no
  replies), so the SDK raises BaseUnavailable; it reconnects in the background.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from tidybot_exec.sim.server import BackendServer
from tidybot_sdk.kinematics import wrap_angle
from tidybot_sdk.protocol import BASE_MAX_ACCEL, BASE_MAX_VEL, BASE_WATCHDOG_S, BaseMsg

from .rpc import INIT_TIMEOUT_S, BaseRpc, BaseServerError, ServerLost, ServerRefused

POLL_HZ = 100.0             # state polls (the base's own loop runs at 250 Hz)
STALE_S = 0.25              # a state older than this is not published: the server is gone
VELOCITY_WINDOW_S = 0.05    # velocity by differencing poses over about this long
RECONNECT_S = 0.5           # between attempts to reach a lost server
RESEND_S = 0.1              # a STOP's brake target, re-sent until the base stands
SETTLED = 0.01              # m/s, rad/s: the base stands
A_MAX = np.array(BASE_MAX_ACCEL)
V_MAX = np.array(BASE_MAX_VEL)


def _log(text: str) -> None:
    print(f"tidybot-base-bridge: {text}", file=sys.stderr, flush=True)


class BaseBridge(BackendServer):
    """The base protocol's REP and PUB sockets in front of one base server."""

    name = "base"
    msg_types = BaseMsg

    def __init__(self, rpc: BaseRpc, cmd_addr: str, state_addr: str, *,
                 state_rate_hz: float = 50.0, log: Callable[[str], None] = _log) -> None:
        super().__init__(cmd_addr, state_addr, state_rate_hz=state_rate_hz, tick_hz=POLL_HZ)
        self.rpc, self.log = rpc, log
        self._mx = threading.Lock()          # the fields below; never held during a call
        self._send = threading.Lock()        # motion commands reach the server one at a time
        self._pose: np.ndarray | None = None  # measured; θ unwrapped, as the server counts it
        self._vel = np.zeros(3)
        self._polled_at = -np.inf            # monotonic time of the last state polled
        self._stamp = 0.0                    # its wall-clock time
        self._history: deque[tuple[float, np.ndarray]] = deque(maxlen=64)
        self._target = np.zeros(3)           # last pose target, wrapped (for the state)
        self._velocity_mode = False
        self._cmd_vel = np.zeros(3)
        self._following = False              # a client's command is being followed
        self._commanded_at = -np.inf         # the last client motion command forwarded
        self._sent_at = -np.inf              # the last motion command the server received
        self._brake: np.ndarray | None = None  # upstream STOP: the target re-sent until still
        self._brake_until = 0.0
        self._retry_at = 0.0
        self._complaint = ""                 # the last problem logged (each is logged once)

    # ------------------------------------------------------------------- commands
    def handle(self, msg_type: BaseMsg, fields: dict[str, Any]) -> dict[str, Any]:
        if msg_type == BaseMsg.GET_STATE:
            return self.state() or self._silent()
        with self._mx:
            pose = None if self._pose is None else self._pose.copy()
            vel = self._vel.copy()
        if pose is None or not self.rpc.up:
            return self._silent()
        try:
            with self._send:
                refusal = self._forward(msg_type, fields, pose, vel)
        except ServerLost as exc:
            self._lost(exc)
            return self._silent()
        except ServerRefused as exc:
            return self.error_reply(str(exc))
        if refusal:
            return self.error_reply(refusal)
        return {"msg_type": int(msg_type), "success": True}

    def _forward(self, msg_type: BaseMsg, fields: dict[str, Any], pose: np.ndarray,
                 vel: np.ndarray) -> str:
        """Send one command to the server; a refusal's text, or "" when it was sent."""
        now = time.monotonic()
        if msg_type == BaseMsg.EXECUTE_ACTION:
            wanted = np.array(fields["base_pose"])
            target = wanted.copy()
            target[2] = pose[2] + wrap_angle(wanted[2] - pose[2])   # the short way round
            self.rpc.call("execute_action", {"base_pose": target})
            wanted[2] = wrap_angle(wanted[2])
            self._commanded(now, velocity_mode=False, target=wanted)
        elif msg_type == BaseMsg.SET_TARGET_VELOCITY:
            if not self.rpc.has("set_target_velocity"):
                return (f"{self.rpc.where} ({self.rpc.api} API) has no velocity control: "
                        f"drive the base with pose targets (base.move_to_pose, move_delta)")
            v, frame = np.array(fields["velocity"]), fields.get("frame", "global")
            self.rpc.call("set_target_velocity", v, frame=frame)
            v = np.clip(v, -V_MAX, V_MAX)
            if frame == "local":                      # reported in odometry axes, as the sim
                c, s = np.cos(pose[2]), np.sin(pose[2])
                v = np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])
            self._commanded(now, velocity_mode=True, cmd_vel=v)
        elif msg_type == BaseMsg.STOP:
            self._halt(now, pose, vel)
        elif msg_type == BaseMsg.RESET:
            if not self.rpc.has("reset"):
                return f"{self.rpc.where} ({self.rpc.api} API) has no reset()"
            self.rpc.call("reset", timeout_s=INIT_TIMEOUT_S)
            with self._mx:
                self._history.clear()                 # the odometry starts again at 0
                self._following, self._brake = False, None
        return ""

    def _halt(self, now: float, pose: np.ndarray, vel: np.ndarray) -> None:
        """The fork's stop(), or, upstream (no stop), a pose target where a full brake ends.

        Silence would not do: the watchdog lets the motors coast, so a moving base rolls
        on. A target at the measured pose would brake and then drive back to where the
        STOP arrived (up to 0.5 m at full speed); the braking point stops it without
        reversing. That target is re-sent (RESEND_S) until the base stands, or the
        watchdog would coast it mid-brake; then the watchdog disables the motors."""
        with self._mx:
            self._following, self._brake = False, None
        if self.rpc.has("stop"):
            self.rpc.call("stop")
            with self._mx:
                self._sent_at = now
            return
        with self._mx:
            here = pose + vel * (now - self._polled_at)     # where it is by now
        brake = here + vel * np.abs(vel) / (2 * A_MAX)
        self.rpc.call("execute_action", {"base_pose": brake})
        with self._mx:
            self._sent_at = now
            self._brake = brake
            self._brake_until = now + float(np.max(np.abs(vel) / A_MAX)) + 1.0

    def settle(self, timeout_s: float) -> bool:
        """Brake a base that is still moving, before the bridge goes (SIGINT, SIGTERM):
        after it nobody would re-send the brake, and the real base's watchdog lets its motors
        coast. True once it stands (or stood); False after ``timeout_s``."""
        def moving() -> bool:
            with self._mx:
                return self._pose is not None and float(np.max(np.abs(self._vel))) >= SETTLED
        if not moving() or not self.rpc.up:
            return not moving()
        self.handle(BaseMsg.STOP, {})            # the polling loop goes on braking meanwhile
        deadline = time.monotonic() + timeout_s
        while moving():
            if time.monotonic() > deadline or self._stop.wait(RESEND_S):
                return False
        return True

    def _commanded(self, now: float, *, velocity_mode: bool, target: np.ndarray | None = None,
                   cmd_vel: np.ndarray | None = None) -> None:
        with self._mx:
            self._velocity_mode, self._following, self._brake = velocity_mode, True, None
            self._commanded_at = self._sent_at = now
            if target is not None:
                self._target = target
            self._cmd_vel = cmd_vel if cmd_vel is not None else np.zeros(3)

    def _silent(self) -> dict[str, Any]:
        """No reply, as from a dead backend: the client's request times out (the SDK raises
        BaseUnavailable). BackendServer's own way of swallowing a reply does it."""
        self.faults.drop_replies += 1
        return {}

    # ---------------------------------------------------------------- polling loop
    def step(self, dt: float) -> None:
        now = time.monotonic()
        if not self.rpc.up:
            if now >= self._retry_at:
                self._reconnect()
            return
        # Not while a command is in flight: the calls run one at a time, and a poll queued
        # behind a long one (a reset takes seconds) would time out and call the server lost.
        if not self._send.acquire(blocking=False):
            return
        try:
            try:
                raw = self.rpc.call(self.rpc.poll_method)
            finally:
                self._send.release()
            pose = np.asarray(raw["base_pose"], dtype=float).reshape(3)
            velocity = raw.get("base_velocity")
        except ServerLost as exc:
            self._lost(exc)
            return
        except (ServerRefused, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._complain(f"cannot read the base's state: {exc}")
            return
        self._record(time.monotonic(), pose, velocity)
        self._keep_braking(time.monotonic())

    def _record(self, now: float, pose: np.ndarray, velocity: Any) -> None:
        with self._mx:
            self._history.append((now, pose))
            if velocity is not None and np.size(velocity) == 3:
                self._vel = np.asarray(velocity, dtype=float).reshape(3)
            else:                       # upstream reports no velocity: differentiate
                t0, p0 = next((t, p) for t, p in self._history if now - t <= VELOCITY_WINDOW_S)
                self._vel = (pose - p0) / (now - t0) if now > t0 else np.zeros(3)
            self._pose, self._polled_at, self._stamp = pose, now, time.time()
        self._complaint = ""

    def _keep_braking(self, now: float) -> None:
        with self._mx:
            brake = self._brake
            if brake is None:
                return
            if np.max(np.abs(self._vel)) < SETTLED or now > self._brake_until:
                self._brake = None
                return
            if now - self._sent_at < RESEND_S:
                return
        with self._send:
            with self._mx:
                if self._brake is not brake:     # a client's command came first
                    return
            try:
                self.rpc.call("execute_action", {"base_pose": brake})
            except ServerLost as exc:
                self._lost(exc)
                return
            except ServerRefused as exc:
                self._complain(f"cannot brake: {exc}")
                return
            with self._mx:
                self._sent_at = now

    def _reconnect(self) -> None:
        try:
            api = self.rpc.open()
        except BaseServerError as exc:
            self._complain(f"{exc}; trying again every {RECONNECT_S:g}s")
            self._retry_at = time.monotonic() + RECONNECT_S
            return
        self.log(f"connected to {self.rpc.where} ({api} API)")
        self._complaint = ""

    def _lost(self, exc: BaseServerError) -> None:
        with self._mx:
            self._pose, self._brake, self._following = None, None, False
            self._history.clear()
        self._complain(f"{exc}; no state and no replies until it is back")
        self._retry_at = 0.0

    def _complain(self, text: str) -> None:
        if text != self._complaint:
            self._complaint = text
            self.log(text)

    # ----------------------------------------------------------------------- state
    def state(self) -> dict[str, Any] | None:  # type: ignore[override]
        """The last state polled, in the simulator's format; None (nothing is published,
        GET_STATE is not answered) when it is stale."""
        now = time.monotonic()
        with self._mx:
            if self._pose is None or now - self._polled_at > STALE_S:
                return None
            pose = self._pose.copy()
            pose[2] = wrap_angle(pose[2])
            following = self._following and now - self._commanded_at <= BASE_WATCHDOG_S
            return {
                "base_pose": pose.tolist(), "base_velocity": self._vel.tolist(),
                "is_velocity_mode": self._velocity_mode,
                "cmd_vel": self._cmd_vel.tolist() if following else [0.0, 0.0, 0.0],
                "target_pose": self._target.tolist(),
                "active": following,
                # the watchdog's coast: silent for 250 ms, the motors go neutral
                "motors_enabled": now - self._sent_at <= BASE_WATCHDOG_S,
                "timestamp": self._stamp,
            }

