"""unsubscribe / replace / pause / resume (reference §3, §5.3, §5.7)."""

import time

import AMPS
import pytest

from support import Collector

SENTINEL = b'{"sentinel":true}'


def test_unsubscribe_single_id(make_client):
    sub, pub = make_client(), make_client()
    a, b = Collector("A"), Collector("B")
    sub.subscribe(a, "conf.unsub", sub_id="A", timeout=5000)
    sub.subscribe(b, "conf.unsub", sub_id="B", timeout=5000)
    pub.publish("conf.unsub", b"1")
    a.wait_count(1, 10)
    b.wait_count(1, 10)
    sub.unsubscribe("A")
    sub.flush(5000)
    pub.publish("conf.unsub", b"2")
    pub.publish("conf.unsub", SENTINEL)
    assert [g.data for g in b.wait_data(SENTINEL, 10)] == [b"1", b"2", SENTINEL]
    assert [g.data for g in a.snapshot()] == [b"1"]


def test_unsubscribe_all(make_client):
    sub, pub = make_client(), make_client()
    a, b, s = Collector("A"), Collector("B"), Collector("sentinel")
    sub.subscribe(a, "conf.unsuball.a", sub_id="A", timeout=5000)
    sub.subscribe(b, "conf.unsuball.b", sub_id="B", timeout=5000)
    sub.unsubscribe()  # sends sub_id "all"
    sub.subscribe(s, "conf.unsuball.s", sub_id="S", timeout=5000)
    pub.publish("conf.unsuball.a", b"a")
    pub.publish("conf.unsuball.b", b"b")
    pub.publish("conf.unsuball.s", SENTINEL)
    s.wait_data(SENTINEL, 10)
    assert a.snapshot() == [] and b.snapshot() == []


def test_unsubscribe_stops_frames_on_the_wire_raw(raw):
    """The Python client drops deliveries for unknown ids locally; check the server really stops sending."""
    s = raw()
    s.logon("raw-unsub")
    s.subscribe("conf.rawunsub", "U1")
    s.subscribe("conf.rawunsub", "U2")
    s.send({"c": "unsubscribe", "cid": "un1", "sub_id": "U1"})
    s.flush()  # unsubscribe has no ack; the flush ack orders it before the publish below
    p = raw()
    p.logon("raw-unsub-pub")
    p.publish("conf.rawunsub", b'{"k":1}')
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.sids() == ["U2"], fr
    s.send({"c": "unsubscribe", "cid": "un2", "sub_id": "all"})
    s.flush()
    p.publish("conf.rawunsub", b'{"k":2}')
    p.flush()
    _, frames = s.flush()
    assert not [f for f in frames if f.c in ("p", "publish")], f"delivered after unsubscribe all: {frames!r}"


def test_unsubscribe_unknown_id_is_harmless(make_client):
    c = make_client()
    col = Collector()
    c.subscribe(col, "conf.unk", sub_id="real", timeout=5000)
    c.unsubscribe("no-such-sub")
    c.unsubscribe("no-such-sub")  # MessageStream.close() does this twice (§3 notes)
    c.flush(5000)
    c.publish("conf.unk", b"x")
    assert col.wait_count(1, 10)[0].data == b"x"


def test_replace_changes_topic(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.rep.alpha", sub_id="R", timeout=5000)
    pub.publish("conf.rep.alpha", b"alpha-1")
    col.wait_count(1, 10)
    sub.subscribe(col, "conf.rep.beta", sub_id="R", options="replace", timeout=5000)
    pub.publish("conf.rep.alpha", b"alpha-2")
    pub.publish("conf.rep.beta", b"beta-1")
    pub.publish("conf.rep.beta", SENTINEL)
    got = col.wait_data(SENTINEL, 10)
    assert [g.data for g in got] == [b"alpha-1", b"beta-1", SENTINEL]
    assert all(g.sub_id == "R" for g in got)


def test_replace_keeps_single_subscription_raw(raw):
    """After replace there is still exactly one subscription for the id: one delivery, sids = [R]."""
    s = raw()
    s.logon("raw-replace")
    s.subscribe("conf.rrep", "R")
    ack = s.subscribe("conf.rrep", "R", o="replace")
    assert ack.get("status") == "success", ack
    p = raw()
    p.logon("raw-replace-pub")
    p.publish("conf.rrep", b"one")
    p.flush()
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.sids() == ["R"] and fr.data == b"one", fr
    _, extra = s.flush()
    assert not [f for f in extra if f.c in ("p", "publish")], f"duplicate delivery after replace: {extra!r}"


def _pause(client, sub_id, handler):
    client.execute_async(AMPS.Command("subscribe").set_sub_id(sub_id).set_options("pause").set_timeout(5000), handler)


def _resume(client, sub_id, handler):
    client.execute_async(AMPS.Command("subscribe").set_sub_id(sub_id).set_options("resume").set_timeout(5000), handler)


def test_pause_and_resume(make_client):
    sub, pub = make_client(), make_client()
    col, marker = Collector("paused-sub"), Collector("marker")
    sub.subscribe(col, "conf.pause", sub_id="P", timeout=5000)
    sub.subscribe(marker, "conf.pause.marker", sub_id="M", timeout=5000)
    pub.publish("conf.pause", b"before")
    col.wait_count(1, 10)

    _pause(sub, "P", col)
    for i in range(5):
        pub.publish("conf.pause", f"during-{i}")
    pub.publish("conf.pause.marker", b"m1")  # same subscriber connection: ordered after the above
    marker.wait_count(1, 10)
    assert [g.data for g in col.snapshot()] == [b"before"], "delivered while paused"

    _resume(sub, "P", col)
    pub.publish("conf.pause", b"after")
    got = [g.data for g in col.wait_data(b"after", 10)]
    during = [f"during-{i}".encode() for i in range(5)]
    # Without a transaction log the messages published while paused may be dropped; if the
    # server does replay them they must all come, in order, before newer messages.
    assert got in ([b"before", b"after"], [b"before"] + during + [b"after"]), got


def test_unsubscribe_comma_list_raw(raw):
    """§5.7: unsubscribe's sub_id may be a comma list."""
    s = raw()
    s.logon("raw-unsub-list")
    for sid in ("a", "b", "c"):
        s.subscribe("conf.unsublist", sid)
    s.send({"c": "unsubscribe", "cid": "ul", "sub_id": "a,b"})
    s.flush()
    p = raw()
    p.logon("raw-unsub-list-pub")
    p.publish("conf.unsublist", b"x")
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.sids() == ["c"], fr


def test_hundred_subscriptions_one_frame_raw(raw):
    s = raw()
    s.logon("raw-hundred")
    ids = [f"h{i}" for i in range(100)]
    for sid in ids:
        s.subscribe("conf.hundred", sid)
    p = raw()
    p.logon("raw-hundred-pub")
    p.publish("conf.hundred", b"x")
    p.flush()
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert sorted(fr.sids()) == sorted(ids), fr
    _, extra = s.flush()
    assert not [f for f in extra if f.c in ("p", "publish")], "more than one delivery frame"


def test_message_stream_subscribe_close_and_resubscribe(make_client):
    """Iterator-style subscribe (MessageStream), close() (sends unsubscribe twice), then the same
    sub_id can be used again."""
    sub, pub = make_client(), make_client()
    stream = sub.subscribe("conf.stream", sub_id="ms", timeout=5000)
    stream.timeout(500)
    for i in range(3):
        pub.publish("conf.stream", f"{i}")
    got = []
    deadline = time.monotonic() + 10
    for m in stream:
        if m is None:
            assert time.monotonic() < deadline, f"stream produced only {got}"
            continue
        got.append(m.get_data())
        if len(got) == 3:
            break
    assert got == ["0", "1", "2"]
    stream.close()
    sub.flush(5000)
    col = Collector()
    sub.subscribe(col, "conf.stream", sub_id="ms", timeout=5000)
    pub.publish("conf.stream", b"again")
    assert [g.data for g in col.wait_count(1, 10)] == [b"again"]


def test_resubscribe_same_id_after_unsubscribe(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    for round_ in range(5):
        sub.subscribe(col, "conf.resub", sub_id="again", timeout=5000)
        pub.publish("conf.resub", f"{round_}")
        col.wait_count(round_ + 1, 10)
        sub.unsubscribe("again")
        sub.flush(5000)
    assert [g.data for g in col.snapshot()] == [b"0", b"1", b"2", b"3", b"4"]


def test_unsubscribe_with_processed_ack_raw(raw):
    """The JS client asks for a processed ack on unsubscribe (§14)."""
    s = raw()
    s.logon("raw-unsub-ack")
    s.subscribe("conf.unsuback", "u")
    s.send({"c": "unsubscribe", "cid": "ua", "sub_id": "u", "a": "processed"})
    ack = s.read_ack("ua")
    assert ack.get("status") in (None, "success"), ack
