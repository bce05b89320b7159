"""Publish / subscribe delivery (reference §3, §4, §5.2, §5.3)."""

import time

import AMPS
import pytest

from support import Collector, varied_payload

N = 10_000
SENTINEL = b'{"sentinel":true}'


@pytest.mark.hard_timeout(240)
@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_10k_in_order_byte_identical(server, make_client):
    sub = make_client()
    pub = make_client()
    col = Collector("sub")
    sub.subscribe(col, "conf.bulk", timeout=5000)
    expected = [varied_payload(i) for i in range(N)]
    for p in expected:
        pub.publish("conf.bulk", p)
    pub.flush(30000)
    pub.publish("conf.bulk", SENTINEL)
    got = col.wait_data(SENTINEL, timeout=60)
    datas = [g.data for g in got]
    assert datas[-1] == SENTINEL
    datas = datas[:-1]
    if datas != expected:
        assert len(datas) == len(expected), f"received {len(datas)} of {len(expected)} messages"
        first = next(i for i, (a, b) in enumerate(zip(datas, expected)) if a != b)
        raise AssertionError(f"message #{first} differs:\n expected {expected[first][:200]!r}\n got      {datas[first][:200]!r}")
    assert all(g.topic == "conf.bulk" for g in got)
    assert all(g.command in ("p", "publish") for g in got)


def test_empty_and_non_json_payloads_pass_through(make_client):
    """The broker does not parse payloads for plain pub/sub; empty data delivers ''."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.raw", timeout=5000)
    payloads = [b"", b"plain text", b"}{", b" leading space", b"trailing\n", b"\xe2\x82\xac uni", b"[1,2,3]"]
    for p in payloads:
        pub.publish("conf.raw", p)
    pub.publish("conf.raw", SENTINEL)
    got = col.wait_data(SENTINEL, timeout=10)
    assert [g.data for g in got] == payloads + [SENTINEL]


def test_topic_is_exact_match(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.exact", timeout=5000)
    for t in ["conf.exact2", "conf.exac", "CONF.EXACT", "xconf.exact", "conf.exact"]:
        pub.publish(t, t)
    pub.publish("conf.exact", SENTINEL)
    got = col.wait_data(SENTINEL, timeout=10)
    assert [g.data for g in got] == [b"conf.exact", SENTINEL]


def test_utf8_topic(make_client):
    """The client sends raw UTF-8 in headers (§1.2); topics with non-ASCII work end to end."""
    sub, pub = make_client(), make_client()
    col = Collector()
    topic = "prix.€.日本"
    sub.subscribe(col, topic, timeout=5000)
    pub.publish(topic, b'{"x":1}')
    pub.publish(topic, SENTINEL)
    got = col.wait_data(SENTINEL, timeout=10)
    assert [g.data for g in got] == [b'{"x":1}', SENTINEL]
    assert got[0].topic == topic


def test_two_subscriptions_one_connection_both_delivered(make_client):
    sub, pub = make_client(), make_client()
    a, b = Collector("A"), Collector("B")
    sub.subscribe(a, "conf.fan", sub_id="subA", timeout=5000)
    sub.subscribe(b, "conf.fan", sub_id="subB", timeout=5000)
    pub.publish("conf.fan", b'{"n":1}')
    pub.publish("conf.fan", SENTINEL)
    ga = a.wait_data(SENTINEL, timeout=10)
    gb = b.wait_data(SENTINEL, timeout=10)
    assert [g.data for g in ga] == [b'{"n":1}', SENTINEL]
    assert [g.data for g in gb] == [b'{"n":1}', SENTINEL]
    assert ga[0].sub_id == "subA" and gb[0].sub_id == "subB"
    # one frame listing both subscriptions (§5.3)
    for g in ga + gb:
        assert set(g.sub_ids.split(",")) == {"subA", "subB"}, f"sids on the delivered frame: {g.sub_ids!r}"


def test_two_subscriptions_one_connection_single_frame_raw(raw):
    """Raw check of §5.3: one `p` frame per connection with `sids` listing every matching sub."""
    s = raw()
    s.logon("raw-fan-sub")
    s.subscribe("conf.rawfan", "s1")
    s.subscribe("conf.rawfan", "s2")
    p = raw()
    p.logon("raw-fan-pub")
    p.publish("conf.rawfan", b'{"v":1}')
    p.flush()
    fr, before = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert not [f for f in before if f.c in ("p", "publish")]
    assert fr.c == "p", f"deliveries should use c=p: {fr!r}"
    assert sorted(fr.sids()) == ["s1", "s2"], fr
    assert fr.data == b'{"v":1}'
    assert fr.get("t") == "conf.rawfan"
    # nothing else: flush on the subscriber connection must come back with no second copy
    _, extra = s.flush()
    assert not [f for f in extra if f.c in ("p", "publish")], f"duplicate delivery frames: {extra!r}"


def test_two_connections_same_topic(make_client):
    s1, s2, pub = make_client(), make_client(), make_client()
    c1, c2 = Collector("c1"), Collector("c2")
    s1.subscribe(c1, "conf.two", timeout=5000)
    s2.subscribe(c2, "conf.two", timeout=5000)
    for i in range(100):
        pub.publish("conf.two", f'{{"i":{i}}}')
    pub.publish("conf.two", SENTINEL)
    want = [f'{{"i":{i}}}'.encode() for i in range(100)] + [SENTINEL]
    assert [g.data for g in c1.wait_data(SENTINEL, 10)] == want
    assert [g.data for g in c2.wait_data(SENTINEL, 10)] == want


def test_publisher_receives_own_message_when_subscribed(make_client):
    c = make_client()
    col = Collector()
    c.subscribe(col, "conf.self", timeout=5000)
    c.publish("conf.self", b'{"me":1}')
    assert col.wait_count(1, 10)[0].data == b'{"me":1}'


def test_correlation_id_passes_through(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.corr", timeout=5000)
    pub.publish("conf.corr", b'{"a":1}', correlation_id="Y29ycmVsYXRpb24=")
    pub.publish("conf.corr", b'{"a":2}')
    got = col.wait_count(2, 10)
    assert got[0].correlation_id == "Y29ycmVsYXRpb24="
    assert got[1].correlation_id == "", "correlation id must not leak into the next message"


def test_publish_with_processed_ack_raw(raw):
    """A publish that asks for a processed ack (Command with ack) gets one (§5.2)."""
    p = raw()
    p.logon("raw-ackpub")
    p.send({"c": "p", "t": "conf.ackpub", "cid": "pub1", "a": "processed"}, b'{"id":9}')
    ack = p.read_ack("pub1")
    assert ack.get("status") == "success", ack


def test_js_style_publish_and_long_keys_raw(raw):
    """`"c":"publish"` (JS spelling) and long key names (topic, cmd_id, ack_type) are accepted (§16.4)."""
    s = raw()
    s.logon("raw-long-sub")
    s.send({"cmd": "subscribe", "topic": "conf.long", "cmd_id": "S1", "ack_type": "processed", "sub_id": "L"})
    ack = s.read_ack("S1")
    assert ack.get("status") == "success", ack
    p = raw()
    p.logon("raw-long-pub")
    p.send({"c": "publish", "t": "conf.long"}, b'{"js":1}')
    p.send({"cmd": "p", "topic": "conf.long"}, b'{"js":2}')
    fr1, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    fr2, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert (fr1.data, fr2.data) == (b'{"js":1}', b'{"js":2}')
    assert fr1.sids() == ["L"]


def test_header_with_raw_control_chars_and_utf8_accepted_raw(raw):
    """§1.2: client headers carry raw control characters / UTF-8 inside strings; server must parse leniently."""
    s = raw()
    s.logon("raw-lenient")
    # subscribe on a plain topic, with a correlation id containing a raw tab on the publish
    s.subscribe("conf.lenient", "z")
    s.send(b'{"c":"p","t":"conf.lenient","x":"a\tb\nc\xc3\xa9"}', b'{"ok":1}')
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.data == b'{"ok":1}'
    assert fr.get("x") == "a\tb\nc\u00e9", f"correlation id not passed through intact: {fr!r}"


def test_timestamp_option_adds_ts(make_client):
    """Subscribe option `timestamp` (sent by the client as "o":"timestamp") makes deliveries carry `ts`
    in ISO-8601 basic form (§2, §5.3); without it there is no `ts`."""
    import re

    sub, pub = make_client(), make_client()
    with_ts, without = [], []

    def h_ts(m):
        with_ts.append(str(m.get_timestamp() or ""))

    def h_plain(m):
        without.append(str(m.get_timestamp() or ""))

    sub.subscribe(h_ts, "conf.ts", options="timestamp", sub_id="T", timeout=5000)
    sub2 = make_client()
    sub2.subscribe(h_plain, "conf.ts", sub_id="N", timeout=5000)
    pub.publish("conf.ts", b'{"t":1}')
    pub.flush(5000)
    sub.flush(5000)
    sub2.flush(5000)
    deadline = time.monotonic() + 5
    while (not with_ts or not without) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert with_ts and without, (with_ts, without)
    assert re.fullmatch(r"\d{8}T\d{6}(\.\d{1,9})?Z?", with_ts[0]), f"ts {with_ts[0]!r}"
    assert without[0] == "", f"ts sent without the timestamp option: {without[0]!r}"


def test_publish_with_expiration_is_delivered(make_client):
    """`e` (expiration, sent quoted: "e":"30") on a plain topic does not stop delivery."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.exp", timeout=5000)
    pub.publish("conf.exp", b'{"e":1}', expiration=30)
    assert col.wait_count(1, 10)[0].data == b'{"e":1}'


def test_subscribe_without_sub_id_uses_cid_raw(raw):
    """A subscribe with no sub_id is identified by its cid (what the client itself assumes, §3)."""
    s = raw()
    s.logon("raw-nosubid")
    s.send({"c": "subscribe", "t": "conf.nosid", "cid": "c77", "a": "processed"})
    ack = s.read_ack("c77")
    assert ack.get("status") == "success", ack
    p = raw()
    p.logon("raw-nosubid-pub")
    p.publish("conf.nosid", b"x")
    fr, _ = s.read_until(lambda f: f.c in ("p", "publish"), timeout=5)
    assert fr.sids() == ["c77"], fr


def test_thousand_topics_one_connection_raw(raw):
    s = raw()
    s.logon("raw-thousand")
    n = 1000
    blob = b"".join(
        __import__("rawamps").encode_frame({"c": "subscribe", "t": f"conf.k.{i}", "cid": f"k{i}", "a": "processed",
                                            "sub_id": f"k{i}"}) for i in range(n))
    s.send_bytes(blob)
    acks = 0
    while acks < n:
        fr = s.read_frame(10)
        if fr.c == "ack":
            assert fr.get("status") == "success", fr
            acks += 1
    p = raw()
    p.logon("raw-thousand-pub")
    p.send_bytes(b"".join(__import__("rawamps").encode_frame({"c": "p", "t": f"conf.k.{i}"}, str(i).encode())
                          for i in range(n)))
    got = []
    while len(got) < n:
        fr = s.read_frame(10)
        if fr.c in ("p", "publish"):
            got.append((fr.sids(), fr.data))
    assert got == [([f"k{i}"], str(i).encode()) for i in range(n)]
