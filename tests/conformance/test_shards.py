"""Cross-shard routing: connections are spread over shards; delivery and ordering must not care."""

import threading

import pytest

from support import Collector

SENTINEL = b'{"sentinel":true}'


@pytest.mark.hard_timeout(180)
@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_many_publishers_many_subscribers_per_publisher_order(server, make_client):
    n_pub, n_sub, per_pub = 3, 4, 2000
    subs = [make_client() for _ in range(n_sub)]
    pubs = [make_client() for _ in range(n_pub)]
    cols = [Collector(f"sub{i}") for i in range(n_sub)]
    for s, col in zip(subs, cols):
        s.subscribe(col, "conf.shards", timeout=5000)

    def run(pi):
        for k in range(per_pub):
            pubs[pi].publish("conf.shards", f'{{"p":{pi},"k":{k}}}')
        pubs[pi].flush(30000)

    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_pub)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
        assert not t.is_alive(), "publisher thread hung"
    pubs[0].publish("conf.shards", SENTINEL)
    for col in cols:
        got = col.wait_data(SENTINEL, 60)
        datas = [g.data for g in got if g.data != SENTINEL]
        assert len(datas) == n_pub * per_pub, f"{col.name}: {len(datas)} of {n_pub * per_pub}"
        for pi in range(n_pub):
            mine = [d for d in datas if d.startswith(f'{{"p":{pi},'.encode())]
            assert mine == [f'{{"p":{pi},"k":{k}}}'.encode() for k in range(per_pub)], \
                f"{col.name}: publisher {pi}'s messages lost or reordered"


@pytest.mark.parametrize("server", [2], indirect=True, ids=["shards2"])
def test_subscriptions_on_all_connections_see_each_publish_once(server, make_client):
    """With 2 shards, 6 connections each subscribed twice (literal + regex) get each message exactly once per sub."""
    conns = [make_client() for _ in range(6)]
    lits = [Collector(f"lit{i}") for i in range(6)]
    rxs = [Collector(f"rx{i}") for i in range(6)]
    for c, lc, rc in zip(conns, lits, rxs):
        c.subscribe(lc, "conf.xs.a", sub_id="lit", timeout=5000)
        c.subscribe(rc, "^conf\\.xs\\.", sub_id="rx", timeout=5000)
    pub = make_client()
    for i in range(200):
        pub.publish("conf.xs.a", f"{i}")
    pub.publish("conf.xs.a", SENTINEL)
    want = [f"{i}".encode() for i in range(200)] + [SENTINEL]
    for col in lits + rxs:
        assert [g.data for g in col.wait_data(SENTINEL, 20)] == want, col.name


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_publisher_order_preserved_across_topics(server, make_client):
    """One publisher, several topics, one subscriber connection: the subscriber sees the publisher's
    order (what a trading app relies on, e.g. an order on one topic then its cancel on another)."""
    sub, pub = make_client(), make_client()
    got = Collector("multi-topic")
    for k in range(3):
        sub.subscribe(got, f"conf.xt.t{k}", sub_id=f"t{k}", timeout=5000)
    for i in range(300):
        pub.publish(f"conf.xt.t{i % 3}", f"{i}")
    pub.publish("conf.xt.t0", SENTINEL)
    seq = [int(g.data) for g in got.wait_data(SENTINEL, 20) if g.data != SENTINEL]
    assert sorted(seq) == list(range(300)), f"lost/duplicated: {len(seq)} messages"
    assert seq == list(range(300)), f"publisher order broken across topics; first 20 received: {seq[:20]}"
