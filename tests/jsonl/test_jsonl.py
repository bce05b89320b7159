"""JSON Lines over HTTP on the running binary, driven with curl the way scripts use it.

Binary-protocol clients (the raw AMPS client) sit on the other side where it matters: messages
published over HTTP reach AMPS subscribers, messages published over AMPS reach HTTP streams and
SOW queries, and the HTTP errors are the same reasons the binary protocol gives.
"""

from __future__ import annotations

import json
import time

SUBSCRIBE_TICKS = ("/subscribe", "-G", "--data-urlencode", "topic=ticks")


def wait_until(what: str, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def ndjson(*values) -> str:
    return "".join(json.dumps(value) + "\n" for value in values)


# --------------------------------------------------------------------------------- publish

def test_publish_answers_one_status_line_per_message_line(server, raw):
    subscriber = raw("amps-subscriber")
    subscriber.subscribe("ticks", "s1")
    statuses = server.publish("ticks", '{"n":1}\n\nnot json\n  {"n": 2}  \r\n[1,2]\n')
    assert [status["line"] for status in statuses] == [1, 3, 4, 5]
    assert statuses[0] == {"line": 1, "status": "success"}
    assert statuses[1]["status"] == "failure"
    assert statuses[1]["reason"].startswith("not valid JSON"), statuses[1]
    assert statuses[2] == {"line": 4, "status": "success"}
    assert statuses[3] == {"line": 5, "status": "success"}
    # The binary-protocol subscriber gets exactly the published lines, trimmed, in order.
    got = [subscriber.read_until(lambda frame: frame.c == "p")[0].data for _ in range(3)]
    assert got == [b'{"n":1}', b'{"n": 2}', b"[1,2]"]


def test_publish_reports_the_data_planes_own_refusals(server, raw):
    statuses = server.publish("orders", ndjson({"id": 1, "qty": 1}, {"qty": 2}, {"id": 3, "qty": 3}))
    assert [status["status"] for status in statuses] == ["success", "failure", "success"]
    # The same message sent over the binary protocol is refused with the same reason.
    conn = raw("amps-publisher")
    cid = conn.next_cid()
    conn.publish("orders", b'{"qty":2}', cid=cid, a="processed")
    ack = conn.read_ack(cid)
    assert ack.get("status") == "failure"
    assert statuses[1]["reason"] == ack.get("reason") == "bad sow key"


def test_publish_needs_a_topic_and_refuses_unknown_parameters(server):
    reply = server.curl("/publish", data=b'{"a":1}\n')
    assert reply.status == 400
    assert "topic" in reply.error()
    reply = server.curl("/publish?topic=t&tpoic=x", data=b'{"a":1}\n')
    assert reply.status == 400
    assert "tpoic" in reply.error()


# ------------------------------------------------------------------------------------- sow

def test_sow_returns_one_record_per_line_with_filter_top_n_and_orderby(server, raw):
    statuses = server.publish("orders", ndjson(*({"id": i, "qty": q} for i, q in
                                                   [(1, 5), (2, 1), (3, 9), (4, 7), (5, 3)])))
    assert all(status["status"] == "success" for status in statuses), statuses
    # An update over HTTP replaces the record; one over AMPS is seen by HTTP queries too.
    server.publish("orders", ndjson({"id": 2, "qty": 8}))
    conn = raw("amps-publisher")
    cid = conn.next_cid()
    conn.publish("orders", b'{"id":6,"qty":6,"via":"amps"}', cid=cid, a="processed")
    assert conn.read_ack(cid).get("status") == "success"

    records = server.sow({"topic": "orders", "filter": "/qty > 5", "top_n": 3,
                          "orderby": "/qty DESC"}).lines()
    assert [(r["id"], r["qty"]) for r in records] == [(3, 9), (2, 8), (4, 7)]
    everything = server.sow({"topic": "orders"}).lines()
    assert sorted(r["id"] for r in everything) == [1, 2, 3, 4, 5, 6]
    assert {"id": 6, "qty": 6, "via": "amps"} in everything
    assert server.sow({"topic": "orders", "filter": "/qty > 100"}).lines() == []


def test_sow_errors_are_the_binary_protocols(server, raw):
    conn = raw("amps-querier")
    for query, reason in [
        ({"topic": "orders", "filter": "/qty >"}, "bad filter"),
        ({"topic": "orders", "orderby": "qty DOWN"}, "invalid order by"),
        ({"topic": "not-a-sow-topic"}, "not supported"),
    ]:
        reply = server.sow(query)
        assert reply.status == 400, (query, reply.body)
        assert reply.error() == reason, query
        # The same query over the binary protocol fails with the same reason.
        cid = conn.next_cid()
        header = {"c": "sow", "t": query["topic"], "cid": cid, "query_id": cid, "a": "processed"}
        header.update({key: value for key, value in query.items() if key != "topic"})
        conn.send(header)
        ack = conn.read_ack(cid)
        assert (ack.get("status"), ack.get("reason")) == ("failure", reason), query


def test_sow_refuses_a_body_it_cannot_read(server):
    for body, needle in [(b"not json", "JSON object"), (b'{"topic":"orders","limit":1}', "limit"),
                         (b'{"filter":"/a = 1"}', "topic")]:
        reply = server.curl("/sow", data=body)
        assert reply.status == 400, body
        assert needle in reply.error(), reply.error()


# ------------------------------------------------------------------------------- subscribe

def open_subscription(server, stream, *filter_args: str):
    """Opens `curl -N` on /subscribe?topic=ticks and waits until the server acknowledged it.

    curl shows nothing of a response before its first body byte (its -i output waits for the
    body too), so the server's log line for the opened stream is the signal.
    """
    opened = server.log_text().count("JSON Lines subscription stream opened")
    ticks = stream(*SUBSCRIBE_TICKS, *filter_args)
    wait_until("the subscription stream opened", lambda: server.log_text().count(
        "JSON Lines subscription stream opened") > opened)
    return ticks


def test_subscribe_answers_a_chunked_ndjson_stream(server):
    # curl gives up after a second (exit 28) but has saved the response head by then.
    reply = server.curl("/subscribe", "-G", "--data-urlencode", "topic=ticks", timeout=1)
    assert reply.exit_code == 28, reply
    assert reply.status == 200
    assert reply.content_type == "application/x-ndjson"
    assert reply.headers["transfer-encoding"] == "chunked"


def test_subscribe_streams_messages_until_the_client_goes_away(server, raw, stream):
    publisher = raw("amps-publisher")
    baseline = server.connections_open()
    ticks = open_subscription(server, stream, "--data-urlencode", "filter=/n > 1")
    assert server.connections_open() == baseline + 1

    publisher.publish("ticks", b'{"n":1}')
    publisher.publish("ticks", b'{"n":2}')
    publisher.publish("ticks", b'{\n  "n": 3,\n  "s": "a b"\n}')  # pretty-printed
    server.publish("ticks", ndjson({"n": 4}))
    assert ticks.read_line() == b'{"n":2}'
    assert ticks.read_line() == b'{"n":3,"s":"a b"}'  # made one line, key order kept
    assert ticks.read_line() == b'{"n": 4}'

    ticks.close()
    wait_until("the stream's loopback AMPS connection closed",
               lambda: server.connections_open() == baseline)
    wait_until("the server logged why the stream closed",
               lambda: "the HTTP client went away" in server.log_text())


def test_subscribe_errors_come_before_the_stream(server):
    reply = server.curl("/subscribe", "-G", "--data-urlencode", "topic=ticks",
                        "--data-urlencode", "filter=/n ===")
    assert reply.status == 400
    assert reply.json() == {"error": "bad filter"}
    reply = server.curl("/subscribe?filter=%2Fn+%3E+1")
    assert reply.status == 400
    assert "topic" in reply.error()


def test_stopping_the_server_ends_open_streams_cleanly(server, stream):
    ticks = open_subscription(server, stream)
    server.stopped_by_test = True
    assert server.stop() == 0
    assert ticks.read_line() is None
    code, stderr = ticks.wait()
    assert code == 0, f"curl saw an incomplete stream: {stderr}"


# ---------------------------------------------------------------------------------- bounds

def test_a_body_over_the_limit_is_refused_naming_the_limit(server):
    reply = server.curl("/publish?topic=t", data=b"{}\n" * (3 << 20))  # 9 MiB
    assert reply.status == 413, reply
    assert "8388608 bytes" in reply.error()
    reply = server.sow({"topic": "orders", "filter": "/a = '" + "x" * (70 << 10) + "'"})
    assert reply.status == 413
    assert "65536 bytes" in reply.error()


def test_a_line_over_the_limit_is_refused_and_the_others_published(server):
    long_line = json.dumps({"pad": "x" * (1 << 20)})
    statuses = server.publish("t", f'{{"a":1}}\n{long_line}\n{{"a":2}}\n')
    assert [status["status"] for status in statuses] == ["success", "failure", "success"]
    assert "limit of 1048576 bytes" in statuses[1]["reason"]


def test_index_and_unknown_routes(server):
    index = server.curl("/")
    assert index.status == 200
    assert "POST /sow" in index.json()["endpoints"]
    assert server.curl("/nowhere").status == 404
    reply = server.curl("/publish?topic=t")  # GET
    assert reply.status == 405
    assert "endpoints" in reply.json()


def test_many_lines_get_their_statuses_in_order(server):
    count = 20_000
    statuses = server.publish("bulk", "".join(f'{{"i":{i}}}\n' for i in range(count)))
    assert len(statuses) == count
    assert [status["line"] for status in statuses] == list(range(1, count + 1))
    assert all(status["status"] == "success" for status in statuses)

