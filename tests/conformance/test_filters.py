"""Content filters on subscribe (reference §15). Expected results follow the documented semantics:
missing field / empty string = NULL, comparisons with NULL are false, arrays match if any element does,
integer / integer stays integer, LIKE is an unanchored case-sensitive PCRE search."""

import json

import AMPS
import pytest

from support import Collector, run_with_deadline

SENTINEL = b'{"sentinel":true}'

MESSAGES = [
    {"id": 0, "qty": 1, "px": 10.5, "sym": "IBM", "side": "buy", "tags": ["a", "b"]},
    {"id": 1, "qty": 6, "px": 99.0, "sym": "MSFT", "side": "sell", "tags": ["c"]},
    {"id": 2, "qty": 10, "px": 100, "sym": "ibm", "side": "buy", "nested": {"lvl": 3}},
    {"id": 3, "qty": 7, "sym": "AAPL", "side": "", "px": -5},
    {"id": 4, "sym": "GOOG", "qty": 0, "flag": True},
    {"id": 5, "qty": 5, "sym": "O'Neil", "side": "sell"},
]

CASES = [
    ("/qty > 5", [1, 2, 3]),
    ("/qty >= 5 AND /side = 'sell'", [1, 5]),
    ("/sym = 'IBM' OR /sym == 'MSFT'", [0, 1]),
    ("/sym IN ('IBM', 'AAPL')", [0, 3]),
    ("/id IN (0, 2)", [0, 2]),
    ("/qty BETWEEN 5 AND 7", [1, 3, 5]),
    ("/sym LIKE '^[A-Z]+$'", [0, 1, 3, 4]),
    ("/sym LIKE 'B'", [0]),
    ("/side IS NULL", [3, 4]),
    ("/side IS NOT NULL", [0, 1, 2, 5]),
    ("/side != 'buy'", [1, 5]),
    ("NOT (/side = 'buy')", [1, 5]),
    ("/nested/lvl = 3", [2]),
    ("/tags = 'b'", [0]),
    ("/qty * 2 > 11", [1, 2, 3]),
    ("/qty / 4 = 1", [1, 3, 5]),
    ("/px < 0", [3]),
    ("/sym BEGINS WITH ('MS', 'AA')", [1, 3]),
    ("/sym ENDS WITH ('OG')", [4]),
    ("/sym = 'O\\'Neil'", [5]),
    ("/missing = NULL OR /missing != 5", []),
    ("/qty > 5 AND /missing IS NULL", [1, 2, 3]),
    ("/qty > 5\nAND\t/side = 'sell'", [1]),  # raw newline/tab travel unescaped in the header (§1.2)
]


@pytest.mark.parametrize("flt,expected", CASES, ids=[c[0].replace("\n", "\\n").replace("\t", "\\t") for c in CASES])
def test_filter(make_client, flt, expected):
    sub, pub = make_client(), make_client()
    col, end = Collector("filtered"), Collector("end")
    sub.subscribe(col, "conf.flt", filter=flt, sub_id="F", timeout=5000)
    sub.subscribe(end, "conf.flt.end", sub_id="E", timeout=5000)
    for m in MESSAGES:
        pub.publish("conf.flt", json.dumps(m))
    pub.publish("conf.flt.end", SENTINEL)  # same publisher, same subscriber connection: ordered after
    end.wait_count(1, 10)
    sub.flush(5000)
    got = [json.loads(g.data)["id"] for g in col.snapshot()]
    assert got == expected, f"filter {flt!r}: got ids {got}, expected {expected}"


def test_bad_filter_raises(make_client):
    c = make_client()
    with pytest.raises(AMPS.BadFilterException):
        run_with_deadline(lambda: c.subscribe(lambda m: None, "conf.flt", filter="/qty >>> 5", timeout=5000), 8,
                          "bad filter subscribe")
    c.flush(5000)


def test_replace_changes_filter(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.rf", filter="/qty > 5", sub_id="R", timeout=5000)
    pub.publish("conf.rf", b'{"qty":10,"n":1}')
    pub.publish("conf.rf", b'{"qty":1,"n":2}')
    pub.flush(5000)  # both evaluated under the first filter before the replace is sent
    col.wait_count(1, 10)
    sub.subscribe(col, "conf.rf", filter="/qty < 5", sub_id="R", options="replace", timeout=5000)
    pub.publish("conf.rf", b'{"qty":10,"n":3}')
    pub.publish("conf.rf", b'{"qty":1,"n":4}')
    pub.publish("conf.rf", b'{"qty":0,"n":5}')
    got = col.wait_count(3, 10)
    pub.flush(5000)
    sub.flush(5000)
    assert [json.loads(g.data)["n"] for g in col.snapshot()] == [1, 4, 5]


def test_filter_on_non_json_payload_does_not_match_or_break(make_client):
    sub, pub = make_client(), make_client()
    col = Collector()
    sub.subscribe(col, "conf.fbad", filter="/qty > 5", timeout=5000)
    pub.publish("conf.fbad", b"not json at all")
    pub.publish("conf.fbad", b'{"qty":')
    pub.publish("conf.fbad", b'{"qty":9}')
    assert [g.data for g in col.wait_count(1, 10)] == [b'{"qty":9}']


@pytest.mark.parametrize("server", [2], indirect=True, ids=["shards2"])
def test_filter_across_shards(server, make_client):
    subs = [make_client() for _ in range(4)]
    pub = make_client()
    cols = [Collector(f"s{i}") for i in range(4)]
    for s, c in zip(subs, cols):
        s.subscribe(c, "conf.fx", filter="/qty > 5", timeout=5000)
    for q in range(12):
        pub.publish("conf.fx", json.dumps({"qty": q}))
    for c in cols:
        got = [json.loads(g.data)["qty"] for g in c.wait_count(6, 10)]
        assert got == [6, 7, 8, 9, 10, 11], (c.name, got)
