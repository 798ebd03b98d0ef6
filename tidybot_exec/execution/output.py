"""Bounded capture of a child's output: complete lines for feedback, head+tail for the result.

Whatever the child prints, memory stays bounded: the result keeps the first and last
``max_bytes / 2`` bytes of each stream, and live feedback carries at most a budget per
message (what does not fit is counted and said, never silently lost).
"""
from __future__ import annotations

import codecs
import threading
from collections import deque

MAX_PARTIAL = 64 * 1024     # a "line" longer than this is passed on without its newline


class HeadTail:
    """The first and last ``limit // 2`` bytes of a stream, and how much was in between."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail_len - len(self.tail[0]) >= self.half:
                self.tail_len -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + self.half

    def text(self) -> str:
        tail = b"".join(self.tail)
        if not self.truncated:
            return (bytes(self.head) + tail).decode("utf-8", errors="replace")
        tail = tail[-self.half:]
        omitted = self.total - len(self.head) - len(tail)
        return (bytes(self.head).decode("utf-8", errors="replace")
                + f"\n[... {omitted} bytes omitted ...]\n"
                + tail.decode("utf-8", errors="replace"))

    def last(self, n: int) -> str:
        """The last ``n`` bytes (for history records)."""
        data = (bytes(self.head) + b"".join(self.tail)) if not self.truncated else b"".join(self.tail)
        return data[-n:].decode("utf-8", errors="replace")


class LineSplitter:
    """Turns chunks of bytes into complete decoded lines (UTF-8, split characters kept)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> str:
        """Return the complete lines now available ("" if none)."""
        text = self._partial + self._decoder.decode(data)
        cut = text.rfind("\n") + 1
        if cut == 0 and len(text) > MAX_PARTIAL:
            cut = len(text)
        self._partial = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return rest


class FeedbackQueue:
    """Lines waiting to go out as feedback, per stream, within a budget of UTF-8 bytes per
    message. A message carries whole lines while they fit; a line longer than a whole message
    is cut at a character boundary. From the first text that does not fit until the message
    goes out, the stream's text is counted, not kept, so no line goes out past a gap."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._lock = threading.Lock()
        self._pending: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._size = {"stdout": 0, "stderr": 0}          # UTF-8 bytes pending
        self._skipped = {"stdout": 0, "stderr": 0}       # UTF-8 bytes counted, not kept
        self._order: list[str] = []      # streams in the order their pending text began

    def put(self, stream: str, text: str) -> None:
        data = text.encode()
        with self._lock:
            if stream not in self._order:
                self._order.append(stream)
            room = self.budget - self._size[stream]
            if self._skipped[stream] or len(data) > room:
                keep = 0 if self._skipped[stream] else _fitting(data, room, room == self.budget)
                self._skipped[stream] += len(data) - keep
                data = data[:keep]
            if data:
                self._pending[stream].append(data.decode())
                self._size[stream] += len(data)

    def drain(self) -> list[tuple[str, str]]:
        """(stream, text) pairs to publish now, one per stream that has something, the
        stream whose text came first first."""
        out = []
        with self._lock:
            order, self._order = self._order, []
            for stream in order:
                text = "".join(self._pending[stream])
                if self._skipped[stream]:
                    text += ("" if text.endswith("\n") or not text else "\n") + (
                        f"[tidybot] {self._skipped[stream]} bytes of {stream} not sent as "
                        f"live feedback (too fast); the result has the head and tail\n")
                if text:
                    out.append((stream, text))
                self._pending[stream], self._size[stream], self._skipped[stream] = [], 0, 0
        return out


def _fitting(data: bytes, room: int, cut_line: bool) -> int:
    """How much of UTF-8 ``data`` goes in ``room`` bytes: its whole lines that fit, or, when
    ``cut_line`` (the message is empty, so its first line can never fit whole), up to the
    last character boundary that fits."""
    lines = data.rfind(b"\n", 0, room) + 1
    if lines or not cut_line:
        return lines
    while room > 0 and data[room] & 0xC0 == 0x80:     # a continuation byte: inside a character
        room -= 1
    return room
