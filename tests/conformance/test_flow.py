"""Framing edge cases and flow control: split/batched frames, large messages, slow consumers."""

import socket
import struct
import threading
import time

import AMPS
import pytest

import rawamps
from rawamps import encode_frame
from support import Collector

SENTINEL = b'{"sentinel":true}'


def test_frame_dribbled_byte_by_byte(raw):
    """TCP gives no message boundaries: a frame arriving one byte at a time must still parse."""
    r = raw()
    r.logon("raw-dribble")
    r.subscribe("conf.dribble", "D")
    frame = encode_frame({"c": "p", "t": "conf.dribble"}, b'{"slow":"bytes \xe2\x82\xac"}')
    for i in range(len(frame)):
        r.send_bytes(frame[i : i + 1])
        time.sleep(0.002)
    fr, _ = r.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.data == b'{"slow":"bytes \xe2\x82\xac"}'


def test_many_frames_in_one_write(raw):
    """Clients batch writes: 500 publishes + a flush in one send() are all processed, in order."""
    r = raw()
    r.logon("raw-batch")
    r.subscribe("conf.batch", "B")
    blob = b"".join(encode_frame({"c": "p", "t": "conf.batch"}, f'{{"i":{i}}}'.encode()) for i in range(500))
    blob += encode_frame({"c": "flush", "cid": "fb", "a": "processed"})
    r.send_bytes(blob)
    ack, before = r.read_until(lambda f: f.c == "ack" and f.get("cid") == "fb", timeout=10)
    got = [f.data for f in before if f.c in ("p", "publish")]
    assert got == [f'{{"i":{i}}}'.encode() for i in range(500)]


@pytest.mark.parametrize("size", [1 << 20, 8 << 20])
def test_large_message(make_client, size):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.large", timeout=5000)
    body = b'{"blob":"' + (b"0123456789abcdef" * (size // 16)) + b'"}'
    pub.publish("conf.large", body)
    pub.publish("conf.large", SENTINEL)
    got = col.wait_data(SENTINEL, 30)
    assert len(got) == 2 and got[0].data == body, f"large message corrupted: got {len(got[0].data)} bytes"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


@pytest.mark.hard_timeout(180)
@pytest.mark.server_toml("[limits]\nmessage_disk_limit = 1048576")
def test_slow_consumer_does_not_stall_others(server, raw, make_client):
    """A subscriber that stops reading must not block the publisher or other subscribers, nor grow the
    server without bound: the server disconnects it (AMPS: 'slow client') and says so in the log."""
    slow = raw()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.logon("raw-slow-consumer")
    slow.subscribe("conf.slow", "S")
    # from here on `slow` never reads

    fast_client, pub = make_client(), make_client()
    fast = Collector("fast")
    fast_client.subscribe(fast, "conf.slow", timeout=5000)
    payload = b'{"pad":"' + b"x" * (64 * 1024) + b'"}'
    n = 1600  # ~100 MiB through the server, more than any sane per-client buffer
    rss_before = _rss_kib(server.proc.pid)
    t0 = time.monotonic()
    # pace the publisher to the fast consumer (8 MiB ahead at most) so only the stalled one falls behind
    for i in range(n):
        pub.publish("conf.slow", payload)
        if i % 128 == 127:
            fast.wait_count(i + 1 - 128 if i >= 128 else 0, 30)
    pub.publish("conf.slow", SENTINEL)
    got = fast.wait_data(SENTINEL, 90)
    took = time.monotonic() - t0
    assert len(got) == n + 1, f"fast subscriber got {len(got)} of {n + 1} while a slow one was attached"
    rss_after = _rss_kib(server.proc.pid)
    server.wait_for_log(r"slow", 10)
    # the slow connection is closed by the server (drain what the kernel buffered, then EOF)
    try:
        slow.read_until_closed(20)
    except rawamps.FrameTimeout as e:
        raise AssertionError(f"slow consumer still connected: {e}") from None
    assert rss_after - rss_before < 512 * 1024, (
        f"server RSS grew by {(rss_after - rss_before) // 1024} MiB buffering for a slow consumer")
    pub.flush(5000)


def test_pipelined_logon_subscribe_publish_raw(raw):
    """Commands sent back-to-back without waiting for acks (as the JS client and batching do)."""
    r = raw()
    blob = (encode_frame({"c": "logon", "cid": "l1", "client_name": "raw-pipelined", "a": "processed"})
            + encode_frame({"c": "subscribe", "t": "conf.pipe", "cid": "s1", "a": "processed", "sub_id": "P"})
            + encode_frame({"c": "p", "t": "conf.pipe"}, b'{"p":1}')
            + encode_frame({"c": "flush", "cid": "f1", "a": "processed"}))
    r.send_bytes(blob)
    seen = []
    while not (seen and seen[-1] == ("ack", "f1")):
        fr = r.read_frame(5)
        seen.append((fr.c, fr.get("cid") or fr.data.decode()))
    assert seen == [("ack", "l1"), ("ack", "s1"), ("p", '{"p":1}'), ("ack", "f1")], seen


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_many_connections_fanout(server, raw):
    n = 200
    subs = []
    for i in range(n):
        r = raw()
        r.logon(f"raw-many-{i}")
        r.subscribe("conf.many", "m")
        subs.append(r)
    p = raw()
    p.logon("raw-many-pub")
    p.publish("conf.many", b'{"all":1}')
    for i, r in enumerate(subs):
        fr, _ = r.read_until(lambda f: f.c in ("p", "publish"), timeout=10)
        assert fr.data == b'{"all":1}' and fr.sids() == ["m"], (i, fr)
