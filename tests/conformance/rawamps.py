"""Raw-socket AMPS helper for the conformance suite.

Speaks the "amps" protocol with JSON headers exactly as described in
shared/reference/amps-protocol.md §1: every frame is a 4-byte big-endian length
followed by a compact JSON header immediately followed by the payload bytes.

Used for the tests the real Python client cannot express (commands before logon,
garbage frames, silent heartbeat peers, checking the exact bytes the server emits).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 5.0


class RawError(AssertionError):
    """Protocol-level violation by the server (bad framing, non-compact header...)."""


class FrameTimeout(AssertionError):
    """No (complete) frame arrived within the deadline."""


def encode_header(header: dict) -> bytes:
    """Compact JSON, raw UTF-8, like the C client emits (§1.2)."""
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_frame(header, data: bytes = b"") -> bytes:
    """header: dict (encoded compactly) or bytes (sent verbatim)."""
    hb = header if isinstance(header, (bytes, bytearray)) else encode_header(header)
    if isinstance(data, str):
        data = data.encode("utf-8")
    body = bytes(hb) + bytes(data)
    return struct.pack(">I", len(body)) + body


def split_header(body: bytes) -> tuple[bytes, bytes]:
    """Split a frame body into (header bytes incl. braces, payload).

    Scans like the client: skip to the first '{', then find the matching '}'
    respecting JSON strings/escapes (the header has no nested objects, §1.1).
    """
    start = body.find(b"{")
    if start < 0:
        raise RawError(f"frame without JSON header: {body[:200]!r}")
    if start != 0:
        raise RawError(f"server frame has {start} bytes before the header: {body[:200]!r}")
    i = start + 1
    in_str = False
    n = len(body)
    while i < n:
        ch = body[i]
        if in_str:
            if ch == 0x5C:  # backslash
                i += 2
                continue
            if ch == 0x22:
                in_str = False
        else:
            if ch == 0x22:
                in_str = True
            elif ch == 0x7B or ch == 0x5B:
                raise RawError(f"nested object/array in server header: {body[:300]!r}")
            elif ch == 0x7D:
                return body[start : i + 1], body[i + 1 :]
        i += 1
    raise RawError(f"unterminated header: {body[:300]!r}")


def check_compact(hb: bytes) -> None:
    """§1.1: the C client hangs or disconnects on whitespace in headers and drops \\uXXXX."""
    in_str = False
    i = 0
    while i < len(hb):
        ch = hb[i]
        if in_str:
            if ch == 0x5C:
                if hb[i + 1 : i + 2] == b"u":
                    raise RawError(f"\\uXXXX escape in server header (client drops it): {hb!r}")
                i += 2
                continue
            if ch == 0x22:
                in_str = False
        else:
            if ch == 0x22:
                in_str = True
            elif ch in b" \t\r\n":
                raise RawError(f"whitespace outside strings in server header: {hb!r}")
        i += 1


@dataclass
class Frame:
    header: dict
    data: bytes
    raw_header: bytes
    received_at: float = field(default_factory=time.monotonic)

    @property
    def c(self) -> str | None:
        return self.header.get("c")

    def get(self, key, default=None):
        return self.header.get(key, default)

    def sids(self) -> list[str]:
        v = self.header.get("sids")
        if v is None:
            return []
        return [s for s in str(v).split(",") if s]

    def __repr__(self) -> str:  # short, byte-precise for failure messages
        return f"Frame({self.raw_header!r} + {self.data[:120]!r}{'...' if len(self.data) > 120 else ''})"


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


class RawConn:
    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT, strict: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.strict = strict
        self.eof = False
        self.frames: list[Frame] = []  # every frame ever read, for diagnostics
        self._cid = 0

    # ---------------------------------------------------------------- sending
    def next_cid(self) -> str:
        self._cid += 1
        return f"raw{self._cid}"

    def send(self, header, data: bytes = b"") -> None:
        self.sock.sendall(encode_frame(header, data))

    def send_bytes(self, b: bytes) -> None:
        self.sock.sendall(b)

    # -------------------------------------------------------------- receiving
    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout("timed out waiting for data")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise FrameTimeout("timed out waiting for data") from None
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            raise Closed("connection reset by server") from None
        if not chunk:
            self.eof = True
            raise Closed("EOF")
        self.buf += chunk

    def read_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Read one frame. Raises FrameTimeout or Closed."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 4:
            if self.eof:
                raise Closed("EOF")
            self._fill(deadline)
        (n,) = struct.unpack(">I", self.buf[:4])
        if n > (1 << 30):
            raise RawError(f"server sent frame length {n} (> 1 GiB, client treats as corruption)")
        while len(self.buf) < 4 + n:
            if self.eof:
                raise Closed("EOF mid-frame")
            self._fill(deadline)
        body = bytes(self.buf[4 : 4 + n])
        del self.buf[: 4 + n]
        hb, data = split_header(body)
        if self.strict:
            check_compact(hb)
        try:
            header = json.loads(hb.decode("utf-8"), strict=False)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RawError(f"unparseable server header {hb!r}: {e}") from None
        fr = Frame(header, data, hb)
        self.frames.append(fr)
        return fr

    def read_until(self, pred, timeout: float = DEFAULT_TIMEOUT) -> tuple[Frame, list[Frame]]:
        """Read frames until pred(frame) is true. Returns (matching frame, frames before it)."""
        deadline = time.monotonic() + timeout
        skipped: list[Frame] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout(f"no matching frame within {timeout}s; got {skipped!r}")
            try:
                fr = self.read_frame(remaining)
            except FrameTimeout:
                raise FrameTimeout(f"no matching frame within {timeout}s; got {skipped!r}") from None
            if pred(fr):
                return fr, skipped
            skipped.append(fr)

    def read_ack(self, cid: str, ack_type: str = "processed", timeout: float = DEFAULT_TIMEOUT) -> Frame:
        fr, _ = self.read_until(
            lambda f: f.c == "ack" and str(f.get("cid")) == cid and f.get("a") == ack_type, timeout
        )
        return fr

    def read_until_closed(self, timeout: float) -> tuple[list[Frame], float]:
        """Read (and collect) frames until the server closes. Returns (frames, seconds waited).

        Raises FrameTimeout if the connection is still open after `timeout`.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        got: list[Frame] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout(f"connection still open after {timeout}s; frames: {got!r}")
            try:
                got.append(self.read_frame(remaining))
            except Closed:
                return got, time.monotonic() - t0
            except FrameTimeout:
                raise FrameTimeout(f"connection still open after {timeout}s; frames: {got!r}") from None
            except RawError:
                # garbage from the server is itself a failure; surface it
                raise

    def is_open(self, probe_timeout: float = 0.2) -> bool:
        """True if no EOF is visible within probe_timeout (frames read meanwhile are kept)."""
        try:
            self.read_frame(probe_timeout)
            return True
        except FrameTimeout:
            return True
        except Closed:
            return False

    # ---------------------------------------------------------------- helpers
    def logon(self, name: str = "raw-client", timeout: float = DEFAULT_TIMEOUT, **extra) -> Frame:
        cid = self.next_cid()
        hdr = {"c": "logon", "cid": cid, "client_name": name, "mt": "json", "a": "processed",
               "version": "5.3.5.14.c6e65cc.784022:python"}
        hdr.update(extra)
        self.send(hdr)
        return self.read_ack(cid, timeout=timeout)

    def subscribe(self, topic, sub_id: str, timeout: float = DEFAULT_TIMEOUT, **extra) -> Frame:
        cid = self.next_cid()
        hdr = {"c": "subscribe", "cid": cid, "a": "processed", "sub_id": sub_id}
        if topic is not None:
            hdr["t"] = topic
        hdr.update(extra)
        self.send(hdr)
        return self.read_ack(cid, timeout=timeout)

    def publish(self, topic: str, data, **extra) -> None:
        hdr = {"c": "p", "t": topic}
        hdr.update(extra)
        self.send(hdr, data)

    def flush(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[Frame, list[Frame]]:
        """Send flush and return (ack, frames received before the ack)."""
        cid = self.next_cid()
        self.send({"c": "flush", "cid": cid, "a": "processed"})
        return self.read_until(
            lambda f: f.c == "ack" and str(f.get("cid")) == cid and f.get("a") == "processed", timeout
        )

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
