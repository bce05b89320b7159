"""Regex topic subscriptions (reference §2 `t`, §11, §15 last paragraph)."""

import AMPS
import pytest

from support import Collector, run_with_deadline

SENTINEL = b'{"sentinel":true}'


@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_regex_subscription_matches_topics(server, make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, r"^orders\..*", timeout=5000)
    pub.publish("orders.us", b'{"r":"us"}')
    pub.publish("trades", b'{"r":"trades"}')
    pub.publish("orders.eu", b'{"r":"eu"}')
    pub.publish("xorders.us", b'{"r":"x"}')
    pub.publish("orders", b'{"r":"bare"}')
    pub.publish("orders.end", SENTINEL)
    pub.flush(5000)
    col.wait_count(3, 10)
    sub.flush(5000)
    # set comparison: cross-topic ordering is checked by test_shards.test_publisher_order_preserved_across_topics
    got = sorted((g.topic, g.data) for g in col.snapshot())
    assert got == sorted([
        ("orders.us", b'{"r":"us"}'),
        ("orders.eu", b'{"r":"eu"}'),
        ("orders.end", SENTINEL),
    ]), "deliveries must carry the concrete topic, and only matching topics"


def test_regex_is_unanchored_search(make_client):
    """AMPS topic regexes are PCRE searches: 'ord' matches 'orders' and 'xord' (no implicit anchors)."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "ord.*s", timeout=5000)
    pub.publish("orders", b"1")
    pub.publish("xordxs", b"2")
    pub.publish("nomatch", b"3")
    pub.publish("ords", SENTINEL)
    got = col.wait_data(SENTINEL, 10)
    assert [g.data for g in got] == [b"1", b"2", SENTINEL]


def test_regex_and_literal_on_one_connection_one_frame(make_client):
    sub, pub = make_client(), make_client()
    lit, rx = Collector("lit"), Collector("rx")
    sub.subscribe(lit, "fx.eurusd", sub_id="lit", timeout=5000)
    sub.subscribe(rx, "^fx\\.", sub_id="rx", timeout=5000)
    pub.publish("fx.eurusd", b'{"px":1.1}')
    pub.publish("fx.usdjpy", b'{"px":150}')
    got_rx = rx.wait_count(2, 10)
    got_lit = lit.wait_count(1, 10)
    assert [g.data for g in got_rx] == [b'{"px":1.1}', b'{"px":150}']
    assert [g.data for g in got_lit] == [b'{"px":1.1}']
    assert set(got_lit[0].sub_ids.split(",")) == {"lit", "rx"}


def test_bad_regex_raises_bad_regex_topic(make_client):
    c = make_client()
    with pytest.raises(AMPS.BadRegexTopicException):
        run_with_deadline(lambda: c.subscribe(lambda m: None, "orders.(", timeout=5000), 8, "bad-regex subscribe")
    # the connection survives a rejected subscription
    c.flush(5000)


def test_non_regex_topic_option_forces_literal(make_client):
    """§15: option `non_regex_topic` makes a topic with regex characters literal."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "px.(a|b)", options="non_regex_topic", timeout=5000)
    pub.publish("px.a", b"regex-would-match")
    pub.publish("px.(a|b)", b"literal")
    pub.publish("px.(a|b)", SENTINEL)
    got = col.wait_data(SENTINEL, 10)
    assert [g.data for g in got] == [b"literal", SENTINEL]


def test_non_regex_topic_option_accepts_unbalanced(make_client):
    """A literal topic that would be a bad regex is fine with `non_regex_topic`."""
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "odd.(", options="non_regex_topic", timeout=5000)
    pub.publish("odd.(", b"x")
    assert [g.data for g in col.wait_count(1, 10)] == [b"x"]
