"""The TidyBot camera server's WebSocket protocol (DESIGN §11.2, §12.1), both ends.

Text messages are JSON requests in two dialects (REAL-SERVERS.md §4): the TidyBot camera
client's ``{"action": ...}`` and its stand-ins' ``{"type": N}`` (TYPES). Which one the real
server speaks is unknown, so the node's requests carry both. Replies may echo ``action`` or
carry a reply ``type``, or neither (payload in ``data``), and a server may push its state
unasked on connect: ``answers`` tells what a reply answers from what it says, never from
its order. Frames are binary: a 4-byte big-endian header length, a JSON header
(``camera_id`` — older servers ``device_id`` —, ``stream`` or ``stream_type``,
``timestamp``, ``width``, ``height``, ``format`` jpeg|png, optional ``intrinsics``), then
the encoded image: colour JPEG, depth 16-bit PNG in millimetres (0: no reading).
"""
from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np

DEFAULT_PORT = 5580
STREAMS = ("color", "depth")
MAX_FRAME_BYTES = 16 * 1024 * 1024      # a 1280×720 16-bit PNG is ~2 MB: room, not a flood
MAX_SIDE = 4096                         # pixels: what a frame header may claim


class FrameError(ValueError):
    """A binary message that is not a frame of this protocol."""


def pack_frame(header: dict[str, Any], image: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + image


def unpack_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, encoded image); the header's names normalised to ``camera_id`` and
    ``stream`` whichever the server used."""
    if len(data) < 4:
        raise FrameError("frame shorter than its 4-byte header length")
    (n,) = struct.unpack(">I", data[:4])
    if n > len(data) - 4:
        raise FrameError(f"frame header length {n} exceeds the message ({len(data)} bytes)")
    try:
        header = json.loads(data[4:4 + n])
    except ValueError as exc:
        raise FrameError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("frame header is not a JSON object")
    header.setdefault("camera_id", header.get("device_id"))
    header.setdefault("stream", header.get("stream_type"))
    if header["camera_id"] is None or header["stream"] not in STREAMS:
        raise FrameError(f"frame header lacks camera_id or a stream of {STREAMS}: {header}")
    width, height, stamp = header.get("width"), header.get("height"), header.get("timestamp")
    if not all(isinstance(v, int) and 0 < v <= MAX_SIDE for v in (width, height)):
        raise FrameError(f"frame header's width and height must be whole numbers 1..{MAX_SIDE}, "
                         f"got {width!r}, {height!r}")
    if stamp is not None and not isinstance(stamp, (int, float)):
        raise FrameError(f"frame header's timestamp must be a number, got {stamp!r}")
    return header, data[4 + n:]


# ------------------------------------------------------------------------ text messages
# the ``type`` dialect's numbers: requests, and the reply type each is answered with
TYPES = {"get_state": 1, "subscribe": 3, "unsubscribe": 4, "get_intrinsics": 7}
STATE, ACK, ERROR, INTRINSICS = 2, 5, 6, 8
REPLY_TYPES = {"get_state": STATE, "subscribe": ACK, "unsubscribe": ACK,
               "get_intrinsics": INTRINSICS}
ACTIONS = {number: action for action, number in TYPES.items()}
# streams a RealSense server may be asked intrinsics of (newer clients ask the infrared ones)
INTRINSICS_STREAMS = STREAMS + ("infrared_left", "infrared_right")


def request(action: str, **fields: Any) -> str:
    """A request in both dialects: ``action`` and, where the type dialect has it, ``type``."""
    msg = {"action": action, **fields}
    if action in TYPES:
        msg["type"] = TYPES[action]
    return json.dumps(msg)


def error_of(reply: dict[str, Any]) -> str:
    """Why ``reply`` refuses its request ("" when it does not): an ``error``, or an ACK
    with ``success`` false and its ``message``."""
    if reply.get("error"):
        return str(reply["error"])
    if reply.get("type") == ERROR or reply.get("success") is False:
        return str(reply.get("message") or "refused")
    return ""


def answers(reply: dict[str, Any], action: str) -> bool:
    """Whether ``reply`` answers a request for ``action``, judged by what it says: its
    echoed ``action``, else its reply ``type``, else its content (a state has
    ``data.cameras``, intrinsics have ``fx``). A refusal that names no request answers
    whatever was asked. A state pushed unasked answers a ``get_state`` and nothing else."""
    echoed = reply.get("action")
    if echoed in TYPES or echoed == "get_world":
        return echoed == action
    if error_of(reply):
        return True
    kind = reply.get("type")
    if isinstance(kind, int) and kind in REPLY_TYPES.values():
        return kind == REPLY_TYPES.get(action)
    data = reply.get("data")
    if action == "get_state":
        return isinstance(data, dict) and isinstance(data.get("cameras"), list)
    if action == "get_intrinsics":
        return any(isinstance(k, dict) and "fx" in k for k in (data, reply.get("intrinsics")))
    return False


# ------------------------------------------------------------------------------- codecs
def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image                                   # noqa: PLC0415 - on demand
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, "JPEG", quality=int(quality))
    return out.getvalue()


def encode_depth_png(depth_m: np.ndarray) -> bytes:
    """Metres (0: no reading) as a 16-bit PNG of millimetres."""
    from PIL import Image                                   # noqa: PLC0415
    mm = np.clip(np.rint(np.nan_to_num(depth_m) * 1000.0), 0, 65535).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(mm).save(out, "PNG", compress_level=1)
    return out.getvalue()


def _opened(data: bytes, size: tuple[int, int]):
    """The image in ``data``, its size checked against the header's before any decoding
    (a small file can claim a huge image)."""
    from PIL import Image                                   # noqa: PLC0415 - on demand
    im = Image.open(io.BytesIO(data))
    if im.size != size:
        im.close()
        raise FrameError(f"image is {im.size[0]}x{im.size[1]}, its header says "
                         f"{size[0]}x{size[1]}")
    return im


def decode_color(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A JPEG or PNG colour image of ``size`` (width, height) as (H, W, 3) uint8 RGB."""
    with _opened(data, size) as im:
        return np.asarray(im.convert("RGB"))


def decode_depth(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """A 16-bit PNG depth image of ``size`` (width, height) as (H, W) uint16 millimetres."""
    with _opened(data, size) as im:
        depth = np.asarray(im)
    if depth.ndim != 2:
        raise FrameError(f"depth image has {depth.ndim} dimensions, not 2")
    return depth.astype(np.uint16, copy=False)
