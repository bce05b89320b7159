"""flush (reference §5.8)."""

import pytest

from support import Collector, run_with_deadline


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_flush_returns(server, make_client):
    c = make_client()
    run_with_deadline(lambda: c.flush(5000), 8, "flush on an idle connection")


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_flush_after_publishes_orders_after_them(server, make_client):
    """flush is acked only after everything the connection sent before it was processed: once the
    publisher's flush returns, a subscriber on another connection then flushing its own connection
    must already have every message (the broker has routed them)."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.flush", timeout=5000)
    for i in range(2000):
        pub.publish("conf.flush", f'{{"i":{i}}}')
    run_with_deadline(lambda: pub.flush(20000), 25, "flush after 2000 publishes")
    run_with_deadline(lambda: sub.flush(5000), 8, "subscriber flush")
    # deliveries may still be in the subscriber's socket buffer / client thread, so allow a short wait
    got = col.wait_count(2000, 10)
    assert [g.data for g in got] == [f'{{"i":{i}}}'.encode() for i in range(2000)]


def test_flush_ack_raw_follows_earlier_deliveries(raw):
    """On one connection the flush ack comes after deliveries triggered by earlier commands of that connection."""
    r = raw()
    r.logon("raw-flush")
    r.subscribe("conf.rflush", "F")
    for i in range(50):
        r.publish("conf.rflush", f'{{"i":{i}}}'.encode())
    ack, before = r.flush(timeout=10)
    assert ack.get("status") in (None, "success"), ack
    delivered = [f.data for f in before if f.c in ("p", "publish")]
    assert delivered == [f'{{"i":{i}}}'.encode() for i in range(50)], (
        f"own-connection deliveries must precede the flush ack; got {len(delivered)} before it"
    )


def test_many_flushes_pipelined_raw(raw):
    r = raw()
    r.logon("raw-flushes")
    cids = [f"fl{i}" for i in range(200)]
    for cid in cids:
        r.send({"c": "flush", "cid": cid, "a": "processed"})
    seen = []
    while len(seen) < len(cids):
        fr = r.read_frame(10)
        if fr.c == "ack":
            seen.append(str(fr.get("cid")))
    assert seen == cids, "flush acks must come back, once each, in command order"
