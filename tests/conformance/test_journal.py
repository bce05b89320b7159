"""Transaction log: guaranteed publishing (persisted acks, dedup, logon bookmark), bookmark
subscriptions (replay, seam, filters, ranges, resume from a bookmark store), name rules, restart
and I/O failure, all driven by the real AMPS Python client (and raw frames where the client
hides what the server sent)."""

from __future__ import annotations

import json
import threading
import time

import AMPS
import pytest

from conftest import Server, unique_name
from support import Collector, run_with_deadline

JOURNAL_TOML = """
[journal]
topics = ["orders", "^trades\\\\..*"]
segment_size_bytes = 4194304
"""

pytestmark = pytest.mark.server_toml(JOURNAL_TOML)


def ids(collector: Collector) -> list[int]:
    return [json.loads(g.data)["i"] for g in collector.publishes()]


def sequence_of(bookmark: str) -> int:
    publisher, sequence, _ = bookmark.split("|")
    assert int(publisher) != 0, bookmark
    return int(sequence)


def ha_client(name: str, uri: str) -> AMPS.HAClient:
    client = AMPS.HAClient(name)
    chooser = AMPS.DefaultServerChooser()
    chooser.add(uri)
    client.set_server_chooser(chooser)
    client.connect_and_logon()
    return client


def stable_port() -> int:
    """A free port below the ephemeral range: a client reconnecting to a port inside that range
    while no server listens can connect to itself (TCP simultaneous open) and keep the port."""
    import random
    import socket

    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


def first_server(workdir, extra_toml: str = JOURNAL_TOML) -> Server:
    server = Server(workdir, 1, extra_toml)
    server.port = stable_port()
    server.start()
    return server


def restart(workdir, port: int, extra_toml: str = JOURNAL_TOML) -> Server:
    """A new server on the same data and port. A reconnecting client can briefly hold the port
    (a loopback connect to a port in the ephemeral range may connect to itself), so retry."""
    deadline = time.monotonic() + 15
    while True:
        server = Server(workdir, 1, extra_toml)
        server.port = port
        try:
            server.start()
            return server
        except RuntimeError as error:
            if "in use" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def publish_ids(client, topic: str, numbers) -> None:
    for i in numbers:
        client.publish(topic, json.dumps({"i": i}))


# --------------------------------------------------------------------------- guaranteed publishing
@pytest.mark.parametrize("server", [1, 2], indirect=True)
def test_publish_store_drains_and_logon_reports_the_last_persisted_sequence(server, raw):
    name = unique_name("ha-pub")
    client = ha_client(name, server.uri)
    sequences = [client.publish("orders", json.dumps({"i": i})) for i in range(300)]
    run_with_deadline(lambda: client.publish_flush(10000), 15, "publish_flush")
    assert client.get_unpersisted_count() == 0
    client.disconnect()

    again = raw()
    ack = again.logon(name)
    assert ack.get("status") == "success"
    publisher, last, _ = str(ack.get("bm")).split("|")
    assert int(publisher) != 0
    assert int(last) == sequences[-1], (ack, sequences[-1])


@pytest.mark.parametrize("server", [1, 2], indirect=True)
def test_a_resent_sequence_is_acked_but_not_delivered_twice(server, raw, make_client):
    sub = make_client()
    got = Collector("sub")
    sub.subscribe(got, "orders", timeout=5000)
    publisher = raw()
    publisher.logon(unique_name("raw-pub"))
    for attempt in range(2):
        publisher.publish("orders", b'{"i":7}', a="persisted", s=41)
        ack, _ = publisher.read_until(lambda f: f.c == "ack" and f.get("a") == "persisted", 5)
        assert ack.get("status") == "success" and int(ack.get("s")) == 41, ack
    publisher.publish("orders", b'{"i":8}', a="persisted", s=42)
    publisher.read_until(lambda f: f.c == "ack" and f.get("a") == "persisted" and int(f.get("s")) == 42, 5)
    got.wait_count(2, 5)
    time.sleep(0.2)
    assert ids(got) == [7, 8], "the re-sent s=41 must not be delivered again"
    assert all(g.bookmark for g in got.publishes()), "journaled deliveries carry bm"


def test_unjournaled_topics_ack_persisted_too(server):
    client = ha_client(unique_name("ha-plain"), server.uri)
    publish_ids(client, "not-journaled", range(50))
    run_with_deadline(lambda: client.publish_flush(10000), 15, "publish_flush")
    assert client.get_unpersisted_count() == 0
    client.disconnect()


# --------------------------------------------------------------------------- bookmark subscriptions
@pytest.mark.parametrize("server", [1, 2], indirect=True)
def test_bookmark_subscribe_from_epoch_from_a_bookmark_and_from_now(server, make_client):
    pub = make_client()
    publish_ids(pub, "orders", range(10))
    pub.flush(5000)
    sub = make_client()
    everything = Collector("epoch")
    sub.bookmark_subscribe(everything, "orders", AMPS.Client.Bookmarks.EPOCH, timeout=5000)
    everything.wait_count(10, 10)
    assert ids(everything) == list(range(10))
    bookmarks = [g.bookmark for g in everything.publishes()]
    sequences = [sequence_of(b) for b in bookmarks]
    assert sequences == sorted(sequences) and len(set(sequences)) == 10

    after_fourth = Collector("after")
    sub.bookmark_subscribe(after_fourth, "orders", bookmarks[3], timeout=5000)
    now = Collector("now")
    sub.bookmark_subscribe(now, "orders", AMPS.Client.Bookmarks.NOW, timeout=5000)
    publish_ids(pub, "orders", [10, 11])
    after_fourth.wait_count(8, 10)
    now.wait_count(2, 10)
    everything.wait_count(12, 10)
    time.sleep(0.2)
    assert ids(after_fourth) == list(range(4, 12))
    assert ids(now) == [10, 11]
    assert ids(everything) == list(range(12))


@pytest.mark.parametrize("server", [1, 2], indirect=True)
def test_replay_hands_over_to_live_with_no_gap_and_no_duplicate(server, make_client):
    pub = make_client()
    total = 4000
    started = threading.Event()

    def publish():
        for i in range(total):
            pub.publish("orders", json.dumps({"i": i, "pad": "x" * 200}))
            if i == total // 4:
                started.set()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    assert started.wait(10)
    sub = make_client()
    got = Collector("seam")
    sub.bookmark_subscribe(got, "orders", "0", timeout=10000)
    thread.join(30)
    pub.flush(10000)
    got.wait_count(total, 30)
    time.sleep(0.3)
    assert ids(got) == list(range(total))


def test_bookmark_subscription_with_filter_and_a_regex_topic(server, make_client):
    pub = make_client()
    for i in range(20):
        pub.publish("trades.eu" if i % 2 else "trades.us", json.dumps({"i": i}))
    pub.flush(5000)
    sub = make_client()
    got = Collector("filtered")
    sub.bookmark_subscribe(got, "^trades\\..*", "0", filter="/i >= 10", timeout=5000)
    got.wait_count(10, 10)
    time.sleep(0.2)
    assert ids(got) == list(range(10, 20))
    assert {g.topic for g in got.publishes()} == {"trades.eu", "trades.us"}


def test_a_range_replays_its_span_then_completes(server, make_client, raw):
    pub = make_client()
    publish_ids(pub, "orders", range(10))
    pub.flush(5000)
    sub = make_client()
    everything = Collector("all")
    sub.bookmark_subscribe(everything, "orders", "0", timeout=5000)
    everything.wait_count(10, 10)
    marks = [g.bookmark for g in everything.publishes()]

    conn = raw()
    conn.logon(unique_name("raw-range"))
    cid = conn.next_cid()
    conn.send({"c": "subscribe", "cid": cid, "t": "orders", "sub_id": "r1", "a": "processed,completed",
               "bookmark": f"[{marks[2]}:{marks[5]}]"})
    completed, before = conn.read_until(lambda f: f.c == "ack" and f.get("a") == "completed", 10)
    replayed = [json.loads(f.data)["i"] for f in before if f.c == "p"]
    assert replayed == [2, 3, 4, 5], before
    assert completed.get("status") == "success"
    publish_ids(pub, "orders", [99])
    pub.flush(5000)
    with pytest.raises(Exception):
        frame = conn.read_frame(0.5)
        assert frame.c != "p", f"a completed range got a live message: {frame!r}"
        raise TimeoutError


def test_bad_bookmarks_and_unjournaled_topics_are_refused(server, make_client):
    sub = make_client()
    with pytest.raises(AMPS.InvalidBookmarkException):
        sub.bookmark_subscribe(Collector(), "orders", "12|x|", timeout=5000)
    with pytest.raises(AMPS.InvalidBookmarkException):
        sub.bookmark_subscribe(Collector(), "orders", "77|999999|", timeout=5000)
    with pytest.raises(AMPS.AMPSException) as refused:
        sub.bookmark_subscribe(Collector(), "quotes", "0", timeout=5000)
    assert "not supported" in str(refused.value)
    server.wait_for_log(r"not in the transaction log")


def test_recent_resumes_after_the_last_discarded_message_across_a_restart(tmp_path):
    workdir = tmp_path / "recent"
    workdir.mkdir()
    first = first_server(workdir)
    second = None
    sub = None
    try:
        pub = AMPS.Client(unique_name("recent-pub"))
        pub.connect(first.uri)
        pub.logon(5000)
        publish_ids(pub, "orders", range(10))
        pub.flush(5000)
        pub.disconnect()

        store = AMPS.MemoryBookmarkStore()
        sub = AMPS.HAClient(unique_name("recent-sub"))
        sub.set_bookmark_store(store)
        chooser = AMPS.DefaultServerChooser()
        chooser.add(first.uri)
        sub.set_server_chooser(chooser)
        sub.connect_and_logon()
        got = Collector("recent")

        def handler(message):
            got(message)
            store.discard_message(message)  # processed: the store's resume point moves on

        sub.bookmark_subscribe(handler, "orders", AMPS.Client.Bookmarks.MOST_RECENT, sub_id="durable1",
                               timeout=5000)
        got.wait_count(10, 10)
        rc, _ = first.stop()
        assert rc == 0
        second = restart(workdir, first.port)
        pub = AMPS.Client(unique_name("recent-pub2"))
        pub.connect(second.uri)
        pub.logon(5000)
        # The HAClient reconnects and re-subscribes from its store's most recent bookmark.
        second.wait_for_log(r"bookmark (replay caught up|subscription)", timeout=20)
        publish_ids(pub, "orders", [10, 11, 12])
        pub.flush(5000)
        got.wait_count(13, 20)
        time.sleep(0.3)
        assert ids(got) == list(range(13)), "nothing twice, nothing missing across the restart"
        pub.disconnect()
    finally:
        if sub is not None:
            sub.disconnect()
        if first.alive():
            first.stop()
        if second is not None and second.alive():
            rc, _ = second.stop()
            assert rc == 0


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("server", [1, 2], indirect=True)
def test_a_name_in_use_by_another_user_is_refused_and_the_same_user_replaces(server):
    name = unique_name("owner")
    first = AMPS.Client(name)
    first.connect(server.uri_with_credentials("alice", "pw"))
    first.logon(5000)
    intruder = AMPS.Client(name)
    intruder.connect(server.uri_with_credentials("mallory", "pw"))
    with pytest.raises(AMPS.NameInUseException):
        intruder.logon(5000)
    successor = AMPS.Client(name)
    successor.connect(server.uri_with_credentials("alice", "pw"))
    successor.logon(5000)
    server.wait_for_log(r"newer connection logged on with the same client name")
    successor.publish("orders", json.dumps({"i": 1}))
    successor.flush(5000)
    successor.disconnect()
    for client in (first, intruder):
        try:
            client.disconnect()
        except Exception:
            pass


# --------------------------------------------------------------------------- restart and failure
def test_messages_survive_a_restart_and_resent_ones_are_not_duplicated(tmp_path):
    workdir = tmp_path / "restart"
    workdir.mkdir()
    first = first_server(workdir)
    name = unique_name("ha-restart")
    client = ha_client(name, first.uri)
    second = None
    try:
        publish_ids(client, "orders", range(100))
        run_with_deadline(lambda: client.publish_flush(10000), 15, "publish_flush")
        rc, _ = first.stop()
        assert rc == 0
        second = restart(workdir, first.port)
        publish_ids(client, "orders", range(100, 150))  # after the HAClient reconnects
        run_with_deadline(lambda: client.publish_flush(20000), 25, "publish_flush after restart")
        reader = AMPS.Client(unique_name("reader"))
        reader.connect(second.uri)
        reader.logon(5000)
        got = Collector("replay")
        reader.bookmark_subscribe(got, "orders", "0", timeout=5000)
        got.wait_count(150, 20)
        time.sleep(0.3)
        assert ids(got) == list(range(150))
        reader.disconnect()
        second.wait_for_log(r"transaction log recovered.*records=100")
    finally:
        client.disconnect()
        if first.alive():
            first.stop()
        if second is not None and second.alive():
            assert second.stop()[0] == 0


@pytest.mark.server_toml(JOURNAL_TOML + 'fault_injection = { operation = "sync", after_groups = 3 }\n')
def test_a_failed_sync_fails_waiting_publishers_and_refuses_later_ones(server, raw):
    failures: list[str] = []
    client = AMPS.HAClient(unique_name("ha-fault"))
    client.set_failed_write_handler(lambda message, reason: failures.append(str(reason)))
    chooser = AMPS.DefaultServerChooser()
    chooser.add(server.uri)
    client.set_server_chooser(chooser)
    client.connect_and_logon()
    try:
        for i in range(10):
            client.publish("orders", json.dumps({"i": i}))
            time.sleep(0.02)  # one write group each
        server.wait_for_log(r"transaction log failed", timeout=10)
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert failures, "a publisher waiting on the failed write must hear about it"
        assert client.get_unpersisted_count() == 0 or failures
    finally:
        client.disconnect()
    conn = raw()
    conn.logon(unique_name("after-fault"))
    cid = conn.next_cid()
    conn.send({"c": "p", "cid": cid, "t": "orders", "a": "processed,persisted", "s": 5}, b'{"i":1}')
    ack, _ = conn.read_until(lambda f: f.c == "ack" and f.get("a") == "processed", 5)
    assert ack.get("status") == "failure" and ack.get("reason") == "tx store failure", ack
    persisted, _ = conn.read_until(lambda f: f.c == "ack" and f.get("a") == "persisted", 5)
    assert persisted.get("status") == "failure", persisted


@pytest.mark.server_toml(JOURNAL_TOML + "persisted_ack_interval_ms = 300\n")
def test_persisted_acks_are_conflated_over_the_configured_interval(server, raw):
    conn = raw()
    conn.logon(unique_name("conflated"))
    for s in range(1, 101):
        conn.publish("orders", b'{"i":1}', a="persisted", s=s)
        if s % 10 == 0:
            time.sleep(0.01)  # several write groups
    acks = []
    deadline = time.monotonic() + 5
    while (not acks or int(acks[-1].get("s")) < 100) and time.monotonic() < deadline:
        frame = conn.read_frame(5)
        if frame.c == "ack" and frame.get("a") == "persisted":
            acks.append(frame)
    assert acks and int(acks[-1].get("s")) == 100, acks
    assert all(a.get("status") == "success" for a in acks)
    sequences = [int(a.get("s")) for a in acks]
    assert sequences == sorted(sequences)
    assert len(acks) <= 3, f"100 publishes over ~0.1 s must conflate into few acks: {sequences}"


def test_a_range_that_ends_beyond_the_log_goes_live_until_its_end(server, make_client, raw):
    pub = make_client()
    publish_ids(pub, "orders", range(3))
    pub.flush(5000)
    sub = make_client()
    everything = Collector("all")
    sub.bookmark_subscribe(everything, "orders", "0", timeout=5000)
    everything.wait_count(3, 10)
    first = everything.publishes()[0].bookmark
    publisher, sequence, _ = first.split("|")
    end = f"{publisher}|{int(sequence) + 4}|"  # the fifth message, not yet published

    conn = raw()
    conn.logon(unique_name("raw-live-range"))
    cid = conn.next_cid()
    conn.send({"c": "subscribe", "cid": cid, "t": "orders", "sub_id": "r2", "a": "processed,completed",
               "bookmark": f"[{first}:{end}]"})
    conn.read_ack(cid, "processed", timeout=5)
    time.sleep(0.3)
    publish_ids(pub, "orders", range(3, 8))
    pub.flush(5000)
    completed, before = conn.read_until(lambda f: f.c == "ack" and f.get("a") == "completed", 10)
    got = [json.loads(f.data)["i"] for f in before if f.c == "p"]
    assert got == [0, 1, 2, 3, 4], (before, completed)
    assert completed.get("bm", "").endswith(f"|{int(sequence) + 4}|"), completed
    publish_ids(pub, "orders", [99])
    pub.flush(5000)
    with pytest.raises(Exception):
        frame = conn.read_frame(0.5)
        assert frame.c != "p", f"a completed range got a live message: {frame!r}"
        raise TimeoutError
