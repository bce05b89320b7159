"""Heartbeats (reference §12)."""

import time

import AMPS
import pytest

import rawamps
from support import Collector


def test_heartbeating_client_stays_connected(make_client):
    disconnected = []
    c = make_client(heartbeat=(1, 2))
    c.set_disconnect_handler(lambda client: disconnected.append(time.monotonic()))
    time.sleep(4.0)  # twice the client's read timeout; only server heartbeats keep it alive
    assert not disconnected, "client gave up: no heartbeat/traffic from the server within 2 s"
    col = Collector()
    c.subscribe(col, "conf.hb", timeout=5000)
    c.publish("conf.hb", b'{"alive":1}')
    c.flush(5000)
    assert col.wait_count(1, 5)[0].data == b'{"alive":1}'


def test_server_sends_heartbeats_raw(raw):
    r = raw()
    r.logon("raw-hb-send")
    r.send({"c": "heartbeat", "o": "start,1"})
    t0 = time.monotonic()
    got = []
    while time.monotonic() - t0 < 3.5:
        fr = r.read_frame(3)
        if fr.c == "heartbeat":
            got.append(time.monotonic() - t0)
            assert fr.raw_header == b'{"c":"heartbeat"}', f"heartbeat frame {fr!r}"
            assert fr.data == b""
            r.send({"c": "heartbeat", "o": "beat"})
    assert len(got) >= 2, f"expected a heartbeat about every 1 s over 3.5 s, got them at {got}"
    assert r.is_open(0.2)


def test_silent_client_is_disconnected_raw(server, raw):
    r = raw()
    r.logon("raw-hb-silent")
    r.send({"c": "heartbeat", "o": "start,1"})
    frames, waited = r.read_until_closed(timeout=6.0)
    hbs = [f for f in frames if f.c == "heartbeat"]
    assert hbs, f"server closed the silent client without ever sending a heartbeat; frames {frames!r}"
    assert all(f.raw_header == b'{"c":"heartbeat"}' for f in hbs), hbs
    assert waited >= 1.0, f"closed after {waited:.2f}s: earlier than one heartbeat interval"


def test_client_answering_beats_is_kept_raw(raw):
    """Answering every server heartbeat with a beat counts as traffic: no disconnect after 5 s."""
    r = raw()
    r.logon("raw-hb-answer")
    r.send({"c": "heartbeat", "o": "start,1"})
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5.0:
        try:
            fr = r.read_frame(0.5)
        except rawamps.FrameTimeout:
            continue
        if fr.c == "heartbeat":
            r.send({"c": "heartbeat", "o": "beat"})
    ack, _ = r.flush(timeout=3)
    assert ack.c == "ack"


def test_beat_is_not_answered_with_heartbeat_raw(raw):
    """§12: never answer a beat with a heartbeat immediately (that ping-pongs)."""
    r = raw()
    r.logon("raw-hb-pingpong")
    r.send({"c": "heartbeat", "o": "start,2"})
    time.sleep(0.1)
    n_before = len([f for f in r.frames if f.c == "heartbeat"])
    for _ in range(20):
        r.send({"c": "heartbeat", "o": "beat"})
    t0 = time.monotonic()
    hbs = 0
    while time.monotonic() - t0 < 1.0:
        try:
            fr = r.read_frame(0.2)
        except rawamps.FrameTimeout:
            continue
        if fr.c == "heartbeat":
            hbs += 1
    assert hbs <= 1, f"server answered 20 beats with {hbs} heartbeats within 1 s (interval is 2 s)"


def test_js_style_heartbeat_with_cid_raw(raw):
    """§12/§14: the JS client sends heartbeat start with a cid and a=received, and beats with a cid."""
    r = raw()
    r.logon("raw-hb-js")
    r.send({"c": "heartbeat", "a": "received", "o": "start,1", "cid": "auto1"})
    fr, before = r.read_until(lambda f: f.c == "heartbeat", timeout=3)
    failures = [f for f in before if f.c == "ack" and f.get("status") == "failure"]
    assert not failures, failures
    r.send({"c": "heartbeat", "o": "beat", "cid": "auto5"})
    ack, before = r.flush(timeout=3)
    assert not [f for f in before if f.c == "ack" and f.get("status") == "failure"], before
