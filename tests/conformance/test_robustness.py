"""Malformed / hostile input from one client must only affect that client."""

import random
import re
import struct
import threading
import time

import AMPS
import pytest

import rawamps
from support import Collector

SENTINEL = b'{"sentinel":true}'
CLOSE_WITHIN = 5.0


def _assert_closed(r: rawamps.RawConn, what: str):
    try:
        r.read_until_closed(CLOSE_WITHIN)
    except rawamps.FrameTimeout as e:
        raise AssertionError(f"{what}: connection not closed within {CLOSE_WITHIN}s ({e})") from None


def _garbage_bytes(n=256, seed=1234) -> bytes:
    b = bytearray(random.Random(seed).randbytes(n))
    return bytes(x if x != ord("{") else ord("x") for x in b)


def test_oversized_frame_closes_connection_and_is_logged(server, raw, make_client):
    r = raw()
    r.logon("raw-huge")
    r.send_bytes(struct.pack(">I", 0x80000000) + b'{"c":"p","t":"x"}' + b"A" * 4096)
    _assert_closed(r, "2 GiB length prefix")
    server.wait_for_log(r"(too large|too big|exceed|oversize|max(imum)?[ _-]?(frame|message)[ _-]?(size|len))", 5)
    # the server is still fine for others
    c = make_client()
    c.flush(5000)


def test_oversized_frame_before_logon_closes(server, raw):
    r = raw()
    r.send_bytes(struct.pack(">I", 0xFFFFFFF0))
    _assert_closed(r, "4 GiB length prefix before logon")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_garbage_bytes(), id="random-bytes"),
        pytest.param(b'{"c":"subscribe","t":"x","cid":"1"', id="unterminated-header"),
        pytest.param(b'{"c":}', id="bad-json"),
        pytest.param(b"\x00\x00\x00\x00", id="nul-bytes"),
    ],
)
def test_garbage_frame_closes_only_that_client(server, raw, make_client, body):
    sub, pub = make_client(), make_client()
    col = Collector("steady")
    sub.subscribe(col, "conf.steady", timeout=5000)

    stop = threading.Event()
    sent = [0]
    errors = []

    def publisher():
        try:
            while not stop.is_set():
                pub.publish("conf.steady", f'{{"n":{sent[0]}}}')
                sent[0] += 1
                time.sleep(0.001)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=publisher, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        # after logon
        bad = raw()
        bad.logon("raw-garbage")
        bad.send_bytes(struct.pack(">I", len(body)) + body)
        _assert_closed(bad, f"garbage frame {body[:40]!r} after logon")
        # before logon
        bad2 = raw()
        bad2.send_bytes(struct.pack(">I", len(body)) + body)
        _assert_closed(bad2, f"garbage frame {body[:40]!r} before logon")
        # truncated frame, then the peer vanishes
        bad3 = raw()
        bad3.logon("raw-truncated")
        bad3.send_bytes(struct.pack(">I", 1000) + b'{"c":"p","t":"conf.steady"}abc')
        bad3.close()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(5)
    assert not errors, errors
    pub.publish("conf.steady", SENTINEL)
    got = col.wait_data(SENTINEL, 15)
    datas = [g.data for g in got]
    want = [f'{{"n":{i}}}'.encode() for i in range(sent[0])] + [SENTINEL]
    if datas != want:
        missing = len(want) - len(datas)
        raise AssertionError(f"steady subscriber lost/reordered messages: got {len(datas)}, want {len(want)} "
                             f"(missing {missing}); first diff at "
                             f"{next((i for i, (a, b) in enumerate(zip(datas, want)) if a != b), None)}")
    # the good clients are still connected and usable
    sub.flush(5000)
    pub.flush(5000)


def test_abrupt_disconnects_do_not_hurt_server(server, raw, make_client):
    """Many clients that subscribe and then vanish (RST / half frame) leave the server healthy."""
    for i in range(30):
        r = raw()
        r.logon(f"raw-vanish-{i}")
        r.subscribe("conf.vanish", f"v{i}")
        if i % 2:
            r.send_bytes(struct.pack(">I", 50) + b'{"c":"p"')
        r.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_LINGER, struct.pack("ii", 1, 0))
        r.close()  # RST
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.vanish", timeout=5000)
    for i in range(100):
        pub.publish("conf.vanish", f"{i}")
    pub.publish("conf.vanish", SENTINEL)
    assert len(col.wait_data(SENTINEL, 10)) == 101
