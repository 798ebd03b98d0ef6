"""Camera sources on the node's side: the newest frame of each camera and stream, subscribed
at the source only while someone wants it (cameras/protocol.py for the camera server's).

Demand is a deadline per camera and stream (``want``): the node's topic publishers renew
it while a topic has subscribers, the code's SDK calls with each request; when it lapses
the stream is unsubscribed, so an idle node makes the server render nothing. A source never
serves a frame older than the caller's limit: a lost server is CameraUnavailable with the
reason, never a stale image. A frame's ``T_base_camera`` comes from the camera's mount
(robot_model.MOUNTS) and the arm's joints when the frame was taken (``ArmTrack``: the arm's
recent states by their timestamps). ``FrameStore`` is what every
source shares; ``CameraServerSource`` is the TidyBot camera server's client (the driver
topics' source is in ros/driver_cameras.py: it needs rclpy).
"""
from __future__ import annotations

import bisect
import json
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


from . import protocol as cp
from .robot_model import ARM_BASE_LINK, MOUNTS, ROOT_LINK

RECONNECT_S = 0.5           # between connection attempts
KEEPALIVE_S = 5.0           # ping this often; a server silent for as long again is gone
REFUSED_S = 2.0             # a refused subscription is asked again after this
CONNECT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 2.0
RATE_WINDOW = 20            # frames the measured rate is averaged over
LINGER_S = 2.0              # a stream the code read stays subscribed this long after

TRACK_S = 2.0               # the arm's states kept, by their timestamps
MATCH_S = 0.05              # a state this close to a frame's timestamp is where it was taken
FRESH_S = 0.5               # else (clocks that disagree) the newest state, if this fresh
EPOCH_SKEW_S = 10.0         # a frame timestamp further than this from now is another clock


class ArmTrack:
    """The arm's recent joints by the arm server's timestamps, so that a frame's pose is
    where the camera was when the frame was taken, not when it reached the node. Fed with
    arm state messages (``observe``) by a live-state feed: the node's, or a dry run's own
    (execution/live_state.py)."""

    def __init__(self) -> None:
        self._stamps: list[float] = []
        self._samples: list[tuple[float, Sequence[float]]] = []      # (arrival, q)
        self._lock = threading.Lock()

    def observe(self, msg: dict[str, Any]) -> None:
        stamp, q = msg.get("timestamp"), msg.get("q")
        if not isinstance(stamp, (int, float)) or q is None:
            return
        with self._lock:
            if self._stamps and stamp < self._stamps[-1]:      # a restarted server
                self._stamps, self._samples = [], []
            self._stamps.append(float(stamp))
            self._samples.append((time.monotonic(), q))
            if self._stamps[0] < stamp - TRACK_S:
                cut = bisect.bisect_left(self._stamps, stamp - TRACK_S)
                del self._stamps[:cut], self._samples[:cut]

    def at(self, stamp: float) -> Sequence[float] | None:
        """The joints nearest ``stamp`` (within MATCH_S); else the newest, if fresh; else None."""
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp)
            near = min((j for j in (i - 1, i) if 0 <= j < len(self._stamps)),
                       key=lambda j: abs(self._stamps[j] - stamp))
            if abs(self._stamps[near] - stamp) <= MATCH_S:
                return self._samples[near][1]
            arrived, q = self._samples[-1]
            return q if time.monotonic() - arrived <= FRESH_S else None


class CameraUnavailable(Exception):
    """No fresh frame of that camera, and why (the SDK raises SensorUnavailable with it)."""


@dataclass
class Frame:
    """One frame as it arrived: encoded (``data``, decoded on first use) or ``decoded``."""

    camera: str
    stream: str
    header: dict[str, Any]
    data: bytes
    received: float                      # time.monotonic() at arrival
    T_base_camera: np.ndarray | None     # optical frame in the arm's base frame, at arrival
    decoded: np.ndarray | None = None

    @property
    def stamp(self) -> float:
        """When it was taken, epoch seconds (epoch_stamp)."""
        return float(self.header["timestamp"])

    @property
    def width(self) -> int:
        return int(self.header["width"])

    @property
    def height(self) -> int:
        return int(self.header["height"])

    @property
    def image(self) -> np.ndarray:
        """Colour (H, W, 3) uint8 RGB, or depth (H, W) uint16 millimetres."""
        if self.decoded is None:
            decode = cp.decode_depth if self.stream == "depth" else cp.decode_color
            self.decoded = decode(self.data, (self.width, self.height))
        return self.decoded

    @property
    def encoding(self) -> str:
        """The decoded image's ROS encoding: rgb8 colour, 16UC1 depth (mm)."""
        return "16UC1" if self.stream == "depth" else "rgb8"

    @property
    def step(self) -> int:
        """Bytes per row of the decoded image (unpadded)."""
        return self.width * (2 if self.stream == "depth" else 3)

    @property
    def nbytes(self) -> int:
        """The decoded image's size (known before decoding it)."""
        return self.step * self.height


@dataclass
class _Stream:
    latest: Frame | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    wanted_until: float = 0.0


class FrameStore:
    """The newest frames of a source's cameras, what is wanted of them, and waiting for
    a fresh one. ``arm`` tracks the arm's joints (None: no pose for arm-mounted cameras)."""

    kind = "camera source"

    def __init__(self, address: str, arm: ArmTrack | None = None,
                 on_frame: Callable[[Frame], None] = lambda frame: None,
                 log: Callable[[str], None] = lambda line: None) -> None:
        self.address = address
        self._arm, self._on_frame, self._log = arm, on_frame, log
        self._lock = threading.Condition()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._cameras: list[str] = []
        self._intrinsics: dict[str, dict[str, Any]] = {}
        self._error = "not connected yet"
        self._refused = 0.0             # when the source last refused to stream (e.g. no GL)
        self._stop = threading.Event()

    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    @property
    def error(self) -> str:
        """Why frames cannot come now ("" while they can)."""
        return self._error

    def wait_cameras(self, wait_s: float) -> list[str]:
        """The camera names, waiting up to ``wait_s`` for the source to name them."""
        with self._lock:
            self._lock.wait_for(lambda: self._cameras or self._stop.is_set(), wait_s)
            return list(self._cameras)

    def want(self, camera: str, stream: str, for_s: float) -> None:
        """Keep ``camera``'s ``stream`` coming for ``for_s`` seconds more."""
        with self._lock:
            s = self._streams.setdefault((camera, stream), _Stream())
            s.wanted_until = max(s.wanted_until, time.monotonic() + for_s)

    def wanted(self, camera: str) -> set[str]:
        """The streams of ``camera`` wanted now."""
        now = time.monotonic()
        with self._lock:
            return {st for (c, st), s in self._streams.items() if c == camera and s.wanted_until > now}

    def frame(self, camera: str, stream: str, max_age_s: float, wait_s: float) -> Frame:
        """The newest frame no older than ``max_age_s``, waiting up to ``wait_s`` for one
        (and wanting the stream meanwhile); CameraUnavailable when none comes, ValueError
        for a camera the source does not have."""
        deadline = time.monotonic() + wait_s
        self.wait_cameras(wait_s)
        with self._lock:
            if camera not in self._cameras:
                raise (ValueError if self._cameras else CameraUnavailable)(
                    f"unknown camera {camera!r}: this robot's cameras are "
                    f"{', '.join(self._cameras)}" if self._cameras else
                    f"camera {camera!r}: no camera list from {self.address}: {self._error}")
        self.want(camera, stream, wait_s + LINGER_S)
        with self._lock:
            while True:
                s = self._streams[(camera, stream)]
                now = time.monotonic()
                if s.latest is not None and now - s.latest.received <= max_age_s:
                    return s.latest
                if now >= deadline or self._stop.is_set() or now - self._refused < REFUSED_S:
                    break
                self._lock.wait(deadline - now)
        age = (f"the newest is {time.monotonic() - s.latest.received:.2f}s old (limit "
               f"{max_age_s:g}s)" if s.latest is not None else "none has come")
        raise CameraUnavailable(f"camera {camera!r}: no fresh {stream} frame within "
                                f"{wait_s:g}s: {age}" + (f"; {self._error}" if self._error else ""))

    def intrinsics(self, camera: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._intrinsics.get(camera, {}))

    def status(self) -> dict[str, dict[str, Any]]:
        """Per camera: the rate and the newest frame's age of its freshest stream, whether
        it is wanted, the source and its error — for /diagnostics."""
        now = time.monotonic()
        out = {}
        with self._lock:
            for camera in self._cameras:
                s = max((st for (c, _), st in self._streams.items() if c == camera and st.latest),
                        key=lambda st: st.latest.received, default=_Stream())
                times = list(s.arrivals)
                fresh = len(times) > 1 and now - times[-1] < 2.0 and times[-1] > times[0]
                out[camera] = {"rate_hz": (len(times) - 1) / (times[-1] - times[0]) if fresh else 0.0,
                               "age_s": now - s.latest.received if s.latest else float("inf"),
                               "wanted": any(st.wanted_until > now for (c, _), st in
                                             self._streams.items() if c == camera),
                               "source": f"{self.kind} {self.address}", "error": self._error}
        return out

    def world(self, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any] | None:
        """A simulator's world snapshot; None where the source has no world."""
        return None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    # ------------------------------------------------------------ for the sources
    def _set_cameras(self, names: list[str], intrinsics: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self._cameras, self._intrinsics = list(names), dict(intrinsics)
            self._lock.notify_all()

    def _set_error(self, text: str) -> None:
        if text != self._error:
            self._log(text or f"{self.kind} {self.address}: connected")
        self._error = text
        with self._lock:
            self._lock.notify_all()

    def _pose_of(self, camera: str, stamp: float) -> np.ndarray | None:
        """T_base_camera when the frame was taken (``stamp``): the mount of a camera with a
        known name at the arm's joints then."""
        mount = MOUNTS.get(camera)
        if mount is None:
            return None
        # a camera on the base does not move with the arm: known without the joints
        q = ([0.0] * 7 if mount.link in (ROOT_LINK, ARM_BASE_LINK) else
             self._arm.at(stamp) if self._arm is not None else None)
        return mount.optical_in_arm_base(q) if q is not None else None

    def _keep(self, frame: Frame) -> None:
        with self._lock:
            s = self._streams.setdefault((frame.camera, frame.stream), _Stream())
            s.latest = frame
            s.arrivals.append(frame.received)
            self._lock.notify_all()
        self._on_frame(frame)


def epoch_stamp(header: dict[str, Any], now: float) -> float:
    """The frame's timestamp as epoch seconds. A RealSense server may stamp frames with the
    camera's hardware clock (milliseconds since the device started), not the epoch; a stamp
    that far from ``now`` is not taken as one (ROS would show 1970): the arrival time is,
    and the device's own stamp is kept as ``device_timestamp``."""
    stamp = header.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) \
            and abs(stamp - now) <= EPOCH_SKEW_S:
        return float(stamp)
    if stamp is not None:
        header["device_timestamp"] = stamp
    return now


def normalized(intrinsics: dict[str, Any]) -> dict[str, Any]:
    """Intrinsics with the names the node and the SDK use (cx/cy), read from RealSense's
    ppx/ppy (what the TidyBot server and tidybot-sim send) where a server gives those."""
    out = dict(intrinsics)
    for theirs, ours in (("ppx", "cx"), ("ppy", "cy")):
        if theirs in out:
            out.setdefault(ours, out[theirs])
    return out


def camera_ids(cameras: list[dict[str, Any]]) -> dict[str, str]:
    """Camera name -> device id from ``get_state``'s ``cameras``, described with the TidyBot
    client's names (``device_id``, ``name``, ``serial``) or its stand-ins' (``serial_number``,
    ``streams``, ``width``...): named by ``name``, else the device id; a camera with no id at
    all is passed over."""
    ids: dict[str, str] = {}
    for c in cameras:
        device = next((c[k] for k in ("device_id", "serial_number", "serial")
                       if isinstance(c, dict) and c.get(k) not in (None, "")), None)
        if device is not None:
            ids.setdefault(str(c.get("name") or device), str(device))
    return ids


class CameraServerSource(FrameStore):
    """A camera server at ``address`` (``ws://host:port`` or ``ws+unix:///path``), streamed
    at ``rate_hz`` while wanted, by one client thread that reconnects every RECONNECT_S
    while the server is away."""

    kind = "camera server"

    def __init__(self, address: str, rate_hz: float, arm: ArmTrack | None = None,
                 on_frame: Callable[[Frame], None] = lambda frame: None,
                 log: Callable[[str], None] = lambda line: None) -> None:
        super().__init__(address, arm, on_frame, log)
        self.rate_hz = rate_hz
        self._names: dict[str, str] = {}             # device_id -> camera name
        self._connected = False
        self.simulated = False          # the server is tidybot-sim's (it has a world)
        self._calls: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cameras", daemon=True)
        self._thread.start()

    def world(self, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any] | None:
        """The simulator's world snapshot (``get_world``); None from a real server (not
        asked) or on error."""
        if not self.simulated:
            return None
        reply = self._call("get_world", timeout_s)
        return reply.get("data") if isinstance(reply, dict) and "data" in reply else None

    def close(self) -> None:
        super().close()
        self._thread.join(timeout=CONNECT_TIMEOUT_S + 2)

    def _call(self, action: str, timeout_s: float) -> dict[str, Any] | None:
        """A request answered in the client thread (which owns the connection)."""
        if not self._thread.is_alive():
            return None
        box: queue.Queue = queue.Queue(maxsize=1)
        self._calls.put((action, box, time.monotonic() + timeout_s))
        try:
            return box.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _connect(self):
        from websockets.sync.client import connect, unix_connect   # noqa: PLC0415 - on demand
        # pings: a server that vanished without closing (power, Wi-Fi) is found out in
        # ~2 KEEPALIVE_S, not after TCP's retransmissions (~15 min)
        options = dict(open_timeout=CONNECT_TIMEOUT_S, compression=None,
                       max_size=cp.MAX_FRAME_BYTES, ping_interval=KEEPALIVE_S,
                       ping_timeout=KEEPALIVE_S)
        if self.address.startswith("ws+unix://"):
            return unix_connect(self.address[len("ws+unix://"):], "ws://localhost/", **options)
        return connect(self.address, proxy=None, **options)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._connected, self._refused = False, 0.0
            try:
                with self._connect() as conn:
                    self._connected = True
                    self._serve(conn)
            except Exception as exc:  # noqa: BLE001 - unreachable or broken: say why, retry
                self._set_error(f"camera server at {self.address}: connection lost: {exc}"
                                if self._connected else
                                f"camera server at {self.address} is not reachable: {exc}")
            self._stop.wait(RECONNECT_S)

    def _request(self, conn, action: str, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for the message that answers it (cp.answers: by what it
        says, not by its order). Meanwhile frames are kept and other text (a state pushed
        on connect, a subscription's ACK) is handled and passed over. A request unanswered
        within CALL_TIMEOUT_S is TimeoutError: while connecting that drops the connection,
        so a late answer is never taken for another camera's."""
        conn.send(cp.request(action, **fields))
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            reply = self._receive(conn, max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise TimeoutError(f"no answer to {action} within {CALL_TIMEOUT_S:g}s")
            if reply and cp.answers(reply, action):
                return reply

    def _receive(self, conn, timeout_s: float) -> dict[str, Any] | None:
        """Handle what arrives within ``timeout_s``: frames are kept ({}), a text message
        is returned (a refused subscription noted first); None when nothing came."""
        try:
            message = conn.recv(timeout=timeout_s)
        except TimeoutError:
            return None
        if isinstance(message, bytes):
            self._frame_message(message)
            return {}
        reply = json.loads(message)
        if not isinstance(reply, dict):
            return {}
        error = cp.error_of(reply)
        if error and cp.answers(reply, "subscribe"):
            self._refused = time.monotonic()   # no frames come: nobody waits for them now,
            self._set_error(f"camera server at {self.address}: {error}")  # asked again
        return reply

    def _serve(self, conn) -> None:
        reply = self._request(conn, "get_state")
        if not isinstance(reply.get("data"), dict):
            raise ValueError(f"get_state was refused: {cp.error_of(reply) or reply}")
        state = reply["data"]
        ids = camera_ids(state.get("cameras") or [])
        self.simulated = bool(state.get("simulator"))
        intrinsics = {}
        for name, device in ids.items():       # one at a time: each answer is that camera's
            reply = self._request(conn, "get_intrinsics", stream="color", device_id=device)
            if cp.error_of(reply):              # never a camera without intrinsics: retried
                raise ValueError(f"get_intrinsics of {name} was refused: {cp.error_of(reply)}")
            intrinsics[name] = normalized(reply.get("data") or reply.get("intrinsics") or {})
        self._names = {v: k for k, v in ids.items()}
        self._set_cameras(list(ids), intrinsics)
        self._set_error(str(state.get("error", "")))
        subscribed: dict[str, frozenset[str]] = {}
        while not self._stop.is_set():
            if self._refused and time.monotonic() - self._refused > REFUSED_S:
                self._refused, subscribed = 0.0, {}      # ask again (the server may recover)
            for camera, device in ids.items():
                wanted = frozenset(self.wanted(camera))
                if wanted != subscribed.get(camera, frozenset()):
                    if subscribed.get(camera):
                        conn.send(cp.request("unsubscribe", device_id=device,
                                             streams=sorted(subscribed[camera])))
                    if wanted:
                        conn.send(cp.request("subscribe", device_id=device, streams=sorted(wanted),
                                             fps=self.rate_hz, quality=85))
                    subscribed[camera] = wanted
            while not self._calls.empty():
                action, box, deadline = self._calls.get_nowait()
                if time.monotonic() > deadline:
                    continue                    # its caller gave up
                try:
                    box.put(self._request(conn, action))
                except TimeoutError:
                    box.put(None)
            self._receive(conn, 0.1)

    def _frame_message(self, message: bytes) -> None:
        try:
            header, data = cp.unpack_frame(message)
        except cp.FrameError as exc:
            self._log(f"camera server at {self.address}: dropped a frame: {exc}")
            return
        camera = self._names.get(str(header["camera_id"]), str(header["camera_id"]))
        # optional in frame headers: else the colour stream's (depth is aligned to it)
        header["intrinsics"] = normalized(header.get("intrinsics") or self.intrinsics(camera))
        stamp = header["timestamp"] = epoch_stamp(header, time.time())
        self._keep(Frame(camera, header["stream"], header, data, time.monotonic(),
                         self._pose_of(camera, stamp)))
        self._refused = 0.0
        if self._error.startswith(f"camera server at {self.address}"):
            self._set_error("")
