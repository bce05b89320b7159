"""Shared helpers for conformance tests (message collection with timeouts, deadlines)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Got:
    """A copy of the interesting fields of a delivered AMPS.Message (the object itself is reused)."""
    command: str
    topic: str
    data: bytes
    sub_id: str
    sub_ids: str
    correlation_id: str
    bookmark: str

    def __repr__(self) -> str:
        d = self.data if len(self.data) <= 80 else self.data[:80] + f"...({len(self.data)} bytes)".encode()
        return f"Got({self.command!r}, t={self.topic!r}, sids={self.sub_ids!r}, data={d!r})"

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def _s(v) -> str:
    return "" if v is None else str(v)


class Collector:
    """A message handler that copies every message and lets the test wait on conditions."""

    def __init__(self, name: str = "collector"):
        self.name = name
        self.items: list[Got] = []
        self.cond = threading.Condition()
        self.errors: list[BaseException] = []

    def __call__(self, m) -> None:
        try:
            g = Got(
                command=_s(m.get_command()),
                topic=_s(m.get_topic()),
                data=bytes(m.get_data_raw() or b""),
                sub_id=_s(m.get_sub_id()),
                sub_ids=_s(m.get_sub_ids()),
                correlation_id=_s(m.get_correlation_id()),
                bookmark=_s(m.get_bookmark()),
            )
        except BaseException as e:  # never let an exception escape into the C receive thread
            with self.cond:
                self.errors.append(e)
                self.cond.notify_all()
            return
        with self.cond:
            self.items.append(g)
            self.cond.notify_all()

    # --- waiting
    def wait_for(self, pred, timeout: float, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: timed out after {timeout}s waiting for {what}; "
                        f"have {len(self.items)} messages; last: {self.items[-3:]!r}"
                    )
                self.cond.wait(remaining)
        assert not self.errors, f"{self.name}: handler errors {self.errors!r}"

    def wait_count(self, n: int, timeout: float) -> list[Got]:
        self.wait_for(lambda items: len(items) >= n, timeout, f"{n} messages")
        return self.snapshot()

    def wait_data(self, data: bytes | str, timeout: float) -> list[Got]:
        """Wait until a message with this payload arrived; return everything received so far."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.wait_for(lambda items: any(g.data == data for g in items), timeout, f"payload {data!r}")
        return self.snapshot()

    def snapshot(self) -> list[Got]:
        with self.cond:
            return list(self.items)

    def datas(self) -> list[bytes]:
        return [g.data for g in self.snapshot()]

    def publishes(self) -> list[Got]:
        return [g for g in self.snapshot() if g.command in ("p", "publish")]


def run_with_deadline(fn, seconds: float, what: str = "call"):
    """Run fn() on a daemon thread; raise AssertionError if it has not returned within `seconds`
    (i.e. the call hung). Returns fn's result or re-raises its exception."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise AssertionError(f"{what} did not return within {seconds}s (hung)")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def varied_payload(i: int) -> bytes:
    """Deterministic, varied JSON payloads: UTF-8, quotes, backslashes, sizes 20 B .. ~64 KiB."""
    kind = i % 8
    if kind == 0:
        obj = {"i": i, "px": 101.25, "qty": i * 3}
    elif kind == 1:
        obj = {"i": i, "name": "Zürich € 日本語 🚀 ταχύων"}
    elif kind == 2:
        obj = {"i": i, "q": 'he said "buy" \\ then "sell" \\\\ C:\\path\\x'}
    elif kind == 3:
        obj = {"i": i, "nested": {"a": [1, 2, {"b": "}{"}], "c": None, "d": True}}
    elif kind == 4:
        obj = {"i": i, "blob": "x" * (i % 997)}
    elif kind == 5:
        obj = {"i": i, "ctl": "tab\tnl\ncr\r", "slash": "/a/b"}
    elif kind == 6:
        obj = {"i": i, "big": "abcdefghij" * (6400 if i % 1000 == 6 else 10)}
    else:
        obj = {"i": i, "s": "{\"c\":\"p\",\"t\":\"fake-header-in-payload\"}"}
    # ensure_ascii=False: raw UTF-8 on the wire, as real apps send it
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":") if i % 2 else (", ", ": ")).encode()
