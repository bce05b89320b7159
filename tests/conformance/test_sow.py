"""State of the World (reference §5.4–5.6, §7, §8, §11): queries, atomic query-and-subscribe,
oof, sow_delete, delta publish/subscribe, key failures, expiration, persistence across restart."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import AMPS
import pytest

import rawamps
from conftest import BIN, Server
from support import run_with_deadline

SOW_TOML = """
[sow]
snapshot_interval_seconds = 1

[[sow.topics]]
topic = "sow.orders"
key_fields = ["/id"]

[[sow.topics]]
topic = "sow.live"
key_fields = ["/id"]

[[sow.topics]]
topic = "sow.persist"
key_fields = ["/id"]
durability = "persistent"

[[sow.topics]]
topic = "sow.expiring"
key_fields = ["/id"]
expiration_seconds = 1
"""

pytestmark = pytest.mark.server_toml(SOW_TOML)


class Recorder:
    """Copies command, data, reason and key of every message (the Message object is reused)."""

    def __init__(self):
        self.items: list[tuple[str, bytes, str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, m) -> None:
        item = (
            str(m.get_command() or ""),
            bytes(m.get_data_raw() or b""),
            str(m.get_reason() or ""),
            str(m.get_sow_key() or ""),
        )
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def wait(self, pred, timeout: float, what: str) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; have {self.items[-5:]!r}")
                self.cond.wait(left)
            return list(self.items)

    def of(self, command: str) -> list:
        with self.cond:
            return [item for item in self.items if item[0] == command]


def records(client, topic: str, **kwargs) -> list[dict]:
    """Runs a sow() query through the iterator and returns the records' JSON, in order."""

    def run():
        out = []
        for m in client.sow(topic, timeout=10000, **kwargs):
            if m.get_command() == "sow":
                out.append(json.loads(m.get_data()))
        return out

    return run_with_deadline(run, 30, f"sow({topic!r})")


def publish_all(client, topic: str, docs) -> None:
    for doc in docs:
        client.publish(topic, json.dumps(doc))
    client.flush(10000)


# --------------------------------------------------------------------------- queries
@pytest.mark.hard_timeout(240)
@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_sow_iterator_over_10k_records_with_batching_ends_cleanly(server, make_client):
    pub, query = make_client(), make_client()
    publish_all(pub, "sow.orders", ({"id": i, "qty": i % 100} for i in range(10_000)))
    pub.publish("sow.orders", json.dumps({"id": 5, "qty": 1000}))  # an update, not an insert

    def run():
        commands, ids, batches = [], set(), set()
        for m in query.sow("sow.orders", batch_size=100, timeout=20000):
            commands.append(m.get_command())
            if m.get_command() == "sow":
                ids.add(json.loads(m.get_data())["id"])
                assert m.get_sow_key(), "every record carries its key"
        return commands, ids

    commands, ids = run_with_deadline(run, 60, "sow() over 10,000 records")
    assert commands[0] == "group_begin" and commands[-1] == "group_end", (commands[:2], commands[-2:])
    assert commands.count("sow") == 10_000
    assert ids == set(range(10_000))
    assert records(query, "sow.orders", filter="/id = 5") == [{"id": 5, "qty": 1000}]


def test_top_n_orderby_and_filter(make_client):
    c = make_client()
    publish_all(c, "sow.orders", ({"id": i, "qty": i, "sym": "IBM" if i % 2 else "MSFT"} for i in range(20)))
    top = records(c, "sow.orders", top_n=5, order_by="/qty DESC")
    assert [r["qty"] for r in top] == [19, 18, 17, 16, 15]
    ascending = records(c, "sow.orders", order_by="/qty", filter="/sym = 'IBM' AND /qty > 10")
    assert [r["qty"] for r in ascending] == [11, 13, 15, 17, 19]
    assert records(c, "sow.orders", filter="/qty > 100") == []


def test_query_stats_ack_counts_and_empty_result(raw):
    r = raw()
    r.logon("raw-sow-stats")
    for i in range(4):
        r.publish("sow.orders", json.dumps({"id": i, "qty": i}).encode())
    r.flush()
    r.send({"c": "sow", "t": "sow.orders", "cid": "q1", "a": "processed,completed,stats", "query_id": "q1",
            "batch_size": 3, "filter": "/qty >= 1", "top_n": 2})
    last, frames = r.read_until(lambda f: f.c == "ack" and f.get("a") == "stats", timeout=5)
    frames.append(last)
    kinds = [(f.c, f.get("a")) for f in frames]
    assert kinds[0] == ("ack", "processed") and kinds[1] == ("group_begin", None), kinds
    assert kinds[-3:] == [("group_end", None), ("ack", "completed"), ("ack", "stats")], kinds
    stats = frames[-1]
    assert (int(stats.get("records_returned")), int(stats.get("matches"))) == (2, 3), stats
    r.send({"c": "sow", "t": "sow.orders", "cid": "q2", "a": "processed,completed", "query_id": "q2",
            "filter": "/qty > 99"})
    last, frames = r.read_until(lambda f: f.c == "ack" and f.get("a") == "completed", timeout=5)
    frames.append(last)
    assert [f.c for f in frames] == ["ack", "group_begin", "group_end", "ack"], frames


def test_query_on_a_topic_that_is_not_a_sow_topic_fails(raw):
    r = raw()
    r.logon("raw-not-sow")
    r.send({"c": "sow", "t": "plain.topic", "cid": "q1", "a": "processed,completed", "query_id": "q1"})
    ack = r.read_ack("q1", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "not supported"), ack


# --------------------------------------------------------------------------- sow_and_subscribe
@pytest.mark.hard_timeout(180)
@pytest.mark.parametrize("server", [1, 2], indirect=True, ids=["shards1", "shards2"])
def test_sow_and_subscribe_sees_every_update_exactly_once(server, make_client):
    pub, sub = make_client(), make_client()
    keys, rounds = 40, 150
    started = threading.Event()

    def publisher():
        for value in range(rounds):
            for key in range(keys):
                pub.publish("sow.live", json.dumps({"id": key, "v": value}))
            if value == 20:
                started.set()
        pub.flush(30000)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    assert started.wait(30)
    rec = Recorder()
    sub.sow_and_subscribe(rec, "sow.live", batch_size=10, timeout=10000)
    thread.join(60)
    assert not thread.is_alive()
    pub.publish("sow.live", json.dumps({"id": "end", "v": 0}))
    rec.wait(lambda items: any(b'"end"' in item[1] for item in items), 30, "the end marker")
    seen: dict[int, list[int]] = {}
    snapshot_phase = True
    for command, data, _, _ in rec.items:
        if command == "group_end":
            snapshot_phase = False
            continue
        if command not in ("sow", "p", "publish"):
            continue
        assert (command == "sow") == snapshot_phase, f"{command} outside its phase"
        doc = json.loads(data)
        if doc["id"] == "end":
            continue
        seen.setdefault(doc["id"], []).append(doc["v"])
    assert sorted(seen) == list(range(keys))
    for key, values in seen.items():
        first = values[0]
        assert values == list(range(first, rounds)), f"key {key}: {values[:5]}...{values[-5:]} (lost or duplicated)"


def test_oof_on_update_out_of_filter_and_on_delete(make_client):
    pub, sub, admin = make_client(), make_client(), make_client()
    publish_all(pub, "sow.orders", [{"id": 1, "qty": 10}, {"id": 2, "qty": 9}, {"id": 3, "qty": 1}])
    rec = Recorder()
    sub.sow_and_subscribe(rec, "sow.orders", filter="/qty > 5", oof_enabled=True, timeout=5000)
    rec.wait(lambda items: any(item[0] == "group_end" for item in items), 5, "group_end")
    assert sorted(json.loads(item[1])["id"] for item in rec.of("sow")) == [1, 2]
    pub.publish("sow.orders", json.dumps({"id": 1, "qty": 2}))  # leaves the filter
    pub.publish("sow.orders", json.dumps({"id": 3, "qty": 2}))  # never matched: nothing
    oofs = rec.wait(lambda items: any(item[0] == "oof" for item in items), 5, "oof match")
    oof = [item for item in oofs if item[0] == "oof"][0]
    assert oof[2] == "match" and json.loads(oof[1]) == {"id": 1, "qty": 2}, oof
    admin.sow_delete("sow.orders", "/id = 2", 5000)
    rec.wait(lambda items: any(item[0] == "oof" and item[2] == "deleted" for item in items), 5, "oof deleted")
    deleted = [item for item in rec.of("oof") if item[2] == "deleted"][0]
    assert json.loads(deleted[1]) == {"id": 2, "qty": 9}
    assert deleted[3], "oof carries the record's key"
    assert len(rec.of("oof")) == 2


def test_oof_on_expiration(make_client):
    pub, sub = make_client(), make_client()
    rec = Recorder()
    sub.sow_and_subscribe(rec, "sow.expiring", oof_enabled=True, timeout=5000)
    pub.publish("sow.expiring", json.dumps({"id": 1, "v": "short-lived"}))
    rec.wait(lambda items: any(item[0] == "oof" for item in items), 10, "oof expired")
    assert rec.of("oof")[0][2] == "expired"
    assert records(pub, "sow.expiring") == []


# --------------------------------------------------------------------------- sow_delete
def test_sow_delete_by_filter_keys_and_data_returns_counts(make_client):
    c = make_client()
    publish_all(c, "sow.orders", ({"id": i, "qty": i} for i in range(10)))
    m = c.sow_delete("sow.orders", "/qty < 3", 5000)
    assert (m.get_ack_type(), m.get_status()) == ("stats", "success"), m
    assert int(m.get_matches()) == 3 and int(m.get_sow_deleted()) == 3
    keys = {}
    for msg in c.sow("sow.orders", timeout=5000):
        if msg.get_command() == "sow":
            keys[json.loads(msg.get_data())["id"]] = msg.get_sow_key()
    m = c.sow_delete_by_keys("sow.orders", f"{keys[3]},{keys[4]},nosuchkey", 5000)
    assert int(m.get_matches()) == 2 and int(m.get_sow_deleted()) == 2
    m = c.sow_delete_by_data("sow.orders", json.dumps({"id": 7, "qty": 999}), 5000)
    assert int(m.get_sow_deleted()) == 1
    m = c.sow_delete("sow.orders", "/qty > 1000", 5000)
    assert int(m.get_sow_deleted()) == 0
    assert sorted(r["id"] for r in records(c, "sow.orders")) == [5, 6, 8, 9]


# --------------------------------------------------------------------------- delta
def test_delta_publish_merges_into_the_stored_record(make_client):
    pub, sub = make_client(), make_client()
    rec = Recorder()
    sub.subscribe(rec, "sow.orders", timeout=5000)
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 1, "b": 2}))
    pub.delta_publish("sow.orders", json.dumps({"id": 1, "b": 3, "c": 4}))
    pub.flush(5000)
    assert records(pub, "sow.orders") == [{"id": 1, "a": 1, "b": 3, "c": 4}]
    got = rec.wait(lambda items: len(items) >= 2, 5, "two deliveries")
    assert json.loads(got[1][1]) == {"id": 1, "a": 1, "b": 3, "c": 4}, "subscribers get the merged record"
    assert got[0][3] and got[0][3] == got[1][3], "deliveries from a SOW topic carry the key"


def test_delta_subscribe_gets_only_changed_and_key_fields(make_client):
    pub, sub = make_client(), make_client()
    rec = Recorder()
    sub.delta_subscribe(rec, "sow.orders", timeout=5000)
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 1, "b": 2}))
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 1, "b": 5}))
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 1, "b": 5}))  # no change
    pub.publish("sow.orders", json.dumps({"id": 2, "z": 0}))
    got = rec.wait(lambda items: any(b'"z"' in item[1] for item in items), 5, "the last publish")
    datas = [json.loads(item[1]) for item in got]
    assert datas == [{"id": 1, "a": 1, "b": 2}, {"id": 1, "b": 5}, {"id": 1}, {"id": 2, "z": 0}], datas


def test_sow_and_delta_subscribe_honours_no_empties(make_client):
    pub, sub = make_client(), make_client()
    publish_all(pub, "sow.orders", [{"id": 1, "a": 1, "b": 2}])
    rec = Recorder()
    sub.sow_and_delta_subscribe(rec, "sow.orders", send_empties=False, timeout=5000)
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 1, "b": 2}))  # no change: suppressed
    pub.publish("sow.orders", json.dumps({"id": 1, "a": 7, "b": 2}))
    got = rec.wait(lambda items: any(item[0] == "publish" for item in items), 5, "the delta")
    time.sleep(0.2)
    assert [json.loads(item[1]) for item in rec.of("sow")] == [{"id": 1, "a": 1, "b": 2}]
    assert [json.loads(item[1]) for item in rec.of("publish")] == [{"id": 1, "a": 7}], got


# --------------------------------------------------------------------------- failures
def test_publish_without_key_field_fails_with_bad_sow_key(make_client, raw, server):
    c = make_client()
    command = AMPS.Command("publish").set_topic("sow.orders").set_data('{"qty":1}').add_ack_type("processed")
    with pytest.raises(AMPS.BadSowKeyException):
        run_with_deadline(lambda: c.execute_async(command, lambda m: None), 6, "publish with a processed ack")
    r = raw()
    r.logon("raw-bad-key")
    r.send({"c": "p", "t": "sow.orders", "cid": "k1", "a": "processed"}, b'{"qty":1}')
    ack = r.read_ack("k1", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "bad sow key"), ack
    r.send({"c": "p", "t": "sow.orders", "cid": "k2", "a": "processed"}, b'{"id":1,"pad":"' + b"x" * (1 << 20) + b'"}')
    ack = r.read_ack("k2", timeout=5)
    assert (ack.get("status"), ack.get("reason")) == ("failure", "sow store failed"), ack
    r.send({"c": "p", "t": "sow.orders", "cid": "k3", "a": "processed", "k": "explicit-1"}, b'{"qty":2}')
    assert r.read_ack("k3", timeout=5).get("status") == "success"
    log = server.wait_for_log(r"missing|no value for key field /id", timeout=5)
    assert log


# --------------------------------------------------------------------------- persistence
@pytest.mark.hard_timeout(120)
def test_persistent_topic_survives_a_clean_restart(tmp_path):
    workdir = tmp_path / "persist"
    workdir.mkdir()
    first = Server(workdir, 1, SOW_TOML)
    first.start()
    try:
        c = AMPS.Client("persist-writer")
        c.connect(first.uri)
        c.logon(5000)
        publish_all(c, "sow.persist", ({"id": i, "v": f"value-{i}"} for i in range(100)))
        c.delta_publish("sow.persist", json.dumps({"id": 3, "extra": True}))
        c.sow_delete("sow.persist", "/id >= 90", 5000)
        c.publish("sow.orders", json.dumps({"id": 1}))  # transient: gone after restart
        c.flush(5000)
        c.disconnect()
    finally:
        rc, _ = first.stop()
    assert rc == 0, first.log_text()[-3000:]
    dump = subprocess.run([str(BIN), "sow", "dump", str(first.data_dir), "--topic", "sow.persist"],
                          capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0, dump.stderr
    assert "90 records" in dump.stdout and '"extra":true' in dump.stdout, dump.stdout[:2000]

    second = Server(workdir, 1, SOW_TOML)
    second.start()
    try:
        c = AMPS.Client("persist-reader")
        c.connect(second.uri)
        c.logon(5000)
        got = records(c, "sow.persist", order_by="/id")
        assert [r["id"] for r in got] == list(range(90))
        assert got[3] == {"id": 3, "v": "value-3", "extra": True}
        assert records(c, "sow.orders") == []
        c.disconnect()
    finally:
        rc, _ = second.stop()
    assert rc == 0
