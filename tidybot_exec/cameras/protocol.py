"""The TidyBot camera server's WebSocket protocol (DESIGN §11.2), both ends.

Text messages are JSON requests ``{"action": ...}`` answered ``{"action": ..., "data": ...}``
(or ``"error"``); frames are binary: a 4-byte big-endian header length, a JSON header
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


def request(action: str, **fields: Any) -> str:
    return json.dumps({"action": action, **fields})


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
