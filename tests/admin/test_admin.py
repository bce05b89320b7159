"""The admin API of the running binary: health, the /amps/instance tree, Prometheus /metrics.

Traffic is sent with the raw AMPS client so the counters have something to count; every check
reads the answer over real HTTP from the real process.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import subprocess
import time

from conftest import BIN

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> tuple[dict, dict]:
    """Strict reading of Prometheus text format 0.0.4 as we emit it.

    Returns ({(name, frozenset(labels)): value}, {family: type}). Fails on a sample before its
    HELP/TYPE, a family split in two, a duplicate series, a counter not named *_total, or any
    label other than `shard` (and `version` on tachyon_build_info, `le` on histogram buckets).
    A histogram's buckets must be cumulative, end in `+Inf`, and agree with its `_count`.
    """
    assert text.endswith("\n"), "the exposition must end with a newline"
    helps, types, samples, finished = set(), {}, {}, set()
    current = None
    for line in text.splitlines():
        assert line, "blank line in the exposition"
        if line.startswith("# HELP "):
            name, help_text = line[len("# HELP "):].split(" ", 1)
            assert METRIC_NAME.match(name) and help_text, line
            assert name not in helps and name not in finished, f"family {name} declared twice"
            helps.add(name)
            if current:
                finished.add(current)
            current = name
            continue
        if line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            assert name in helps and name not in types, line
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        series, value = line.rsplit(" ", 1)
        value = float(value)
        assert not math.isnan(value), line
        name, _, labels = series.partition("{")
        family_name = name
        if current and types.get(current) == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                if name == current + suffix:
                    family_name = current
        assert family_name == current and family_name in types, f"{line!r} is outside its family's block"
        if types[family_name] == "counter":
            assert name.endswith("_total") and value >= 0, line
        pairs = {}
        if labels:
            assert labels.endswith("}"), line
            for pair in labels[:-1].split(","):
                match = LABEL.fullmatch(pair)
                assert match, line
                pairs[match.group(1)] = match.group(2)
        allowed = {"version"} if name == "tachyon_build_info" else {"le"} if name.endswith("_bucket") else {"shard"}
        assert set(pairs) <= allowed, f"{line!r}: unbounded or unknown label"
        key = (name, frozenset(pairs.items()))
        assert key not in samples, f"duplicate series {series}"
        samples[key] = value
    assert helps == set(types), "every family has HELP and TYPE"
    for family, kind in types.items():
        if kind != "histogram":
            continue
        buckets = [(labels, value) for (name, labels), value in samples.items() if name == family + "_bucket"]
        bounds = [(float(dict(labels)["le"]), value) for labels, value in buckets]
        assert bounds and bounds[-1][0] == math.inf, f"{family}: buckets must end in +Inf"
        assert [b for b, _ in bounds] == sorted(b for b, _ in bounds), f"{family}: bucket bounds out of order"
        counts = [value for _, value in bounds]
        assert counts == sorted(counts), f"{family}: buckets are not cumulative: {counts}"
        assert samples[(family + "_count", frozenset())] == counts[-1], f"{family}: _count differs from +Inf"
        assert samples[(family + "_sum", frozenset())] >= 0
    return samples, types


def total(samples: dict, name: str) -> float:
    return sum(value for (metric, _), value in samples.items() if metric == name)


def test_health_is_ready(server):
    reply = server.get("/health")
    assert reply.status == 200, reply.body
    assert reply.json() == {"status": "ready", "live": True, "reasons": []}
    assert server.get("/health/live").json() == {"live": True}


def test_instance_tree_describes_the_running_instance(server):
    instance = server.get("/amps/instance").json()
    version = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert instance["version"] == version
    assert isinstance(instance["uptime_seconds"], int) and instance["uptime_seconds"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", instance["started_at"])
    assert "placement:" in instance["placement"] and "control plane" in instance["placement"]
    assert [p["id"] for p in instance["processors"]] == list(range(server.shards))
    assert instance["transports"][0]["address"] == f"{server.host}:{server.port}"
    assert instance["journal"]["enabled"] is True and instance["journal"]["failed"] is False
    assert instance["config"]["transport"]["amps_tcp"] == f"{server.host}:{server.port}"
    assert instance["config"]["admin"]["address"] == f"{server.host}:{server.admin_port}"
    assert instance["config"]["runtime"]["shards"] == server.shards
    assert instance["admin"]["address"] == f"{server.host}:{server.admin_port}"
    assert instance["memory"]["resident_bytes"] > 0
    assert instance["memory"]["threads"] >= server.shards + 2


def test_subtrees_and_unknown_paths(server):
    processors = server.get("/amps/instance/processors").json()
    assert len(processors) == server.shards
    assert isinstance(server.get("/amps/instance/processors/0/frames_in").json(), int)
    assert set(server.get("/amps/instance/journal").json()) >= {"failed", "last_sequence", "durable_up_to"}
    missing = server.get("/amps/instance/no_such_thing")
    assert missing.status == 404
    assert "processors" in missing.json()["children"]
    assert server.get("/no/such/endpoint").status == 404
    wrong = server.request("POST", "/health")
    assert wrong.status == 405 and wrong.json()["error"] == "method not allowed"


def test_metrics_parse_and_count_real_traffic(server, raw):
    before, _ = parse_exposition(server.get("/metrics").body)
    conn = raw()
    conn.logon("admin-test")
    published = 20
    for index in range(published):
        conn.publish("orders", f'{{"id":{index}}}')
        conn.publish("journaled", f'{{"id":{index}}}')
    conn.flush()

    deadline = time.monotonic() + 5
    while True:
        reply = server.get("/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples, types = parse_exposition(reply.body)
        counted = total(samples, "tachyon_messages_published_total") - total(before, "tachyon_messages_published_total")
        durable = total(samples, "tachyon_journal_durable_sequence")
        if (counted >= 2 * published and durable >= published) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == 2 * published
    assert durable >= published
    assert total(samples, "tachyon_journal_last_sequence") >= published
    assert total(samples, "tachyon_frames_in_total") - total(before, "tachyon_frames_in_total") >= 2 * published + 2
    assert total(samples, "tachyon_connections_open") >= 1
    assert total(samples, "tachyon_connections_accepted_total") >= 1
    assert types["tachyon_connections_open"] == "gauge"
    assert types["tachyon_bytes_in_total"] == "counter"
    shards = {dict(labels)["shard"] for (name, labels) in samples if name == "tachyon_frames_in_total"}
    assert shards == {str(shard) for shard in range(server.shards)}
    assert samples[("tachyon_shards", frozenset())] == server.shards
    assert samples[("tachyon_journal_failed", frozenset())] == 0
    assert samples[("tachyon_memory_resident_bytes", frozenset())] > 0

    # The tree reads the same counters.
    totals = server.get("/amps/instance/totals").json()
    assert totals["messages_published"] >= 2 * published


def test_admin_runs_on_its_own_thread_off_the_shard_cores(server):
    tasks = f"/proc/{server.proc.pid}/task"
    admin = [task for task in os.listdir(tasks) if open(f"{tasks}/{task}/comm").read().strip() == "tachyon-admin"]
    assert len(admin) == 1, "exactly one admin thread"
    match = re.search(r"control plane: core (\d+)", server.get("/amps/instance/placement").json())
    if match:
        status = open(f"{tasks}/{admin[0]}/status").read()
        allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", status).group(1)
        assert allowed == match.group(1), "the admin thread is pinned to the control-plane core"


def wait_for(check, timeout: float = 5.0, what: str = "condition"):
    """Polls `check` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def client_named(server, name: str) -> dict | None:
    clients = server.get("/amps/instance/clients").json()
    found = [client for client in clients.values() if client["name"] == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_clients_subscriptions_topics_and_sow_in_the_tree(server, raw):
    watcher = raw()
    watcher.logon("tree-watcher")
    watcher.subscribe("orders", "s1", filter="/id > 5")
    feeder = raw()
    feeder.logon("tree-feeder")
    for index in range(20):
        feeder.publish("orders", f'{{"id":{index},"pad":"{"x" * 50}"}}')
    for index in range(3):
        feeder.publish("positions", f'{{"id":{index},"qty":{index * 10}}}')
    feeder.flush()

    def settled():
        tree = server.get("/amps/instance").json()
        sow = tree["sow"].get("positions")
        watching = client_named(server, "tree-watcher")
        if watching and watching["messages_out"] >= 14 and sow and sow["records"] == 3:
            return tree
        return None

    tree = wait_for(settled, what="deliveries and the SOW size to show in the tree")
    watching = client_named(server, "tree-watcher")
    feeding = client_named(server, "tree-feeder")
    # Per client: who, where, and bytes/messages in and out.
    assert watching["messages_out"] == 14, "ids 6..19 pass the filter"
    assert watching["logged_on"] is True and watching["peer"].startswith("127.0.0.1:")
    assert watching["subscriptions"] == [
        {"sub_id": "s1", "topic": "orders", "filter": "/id > 5", "bookmark": None, "paused": False}
    ]
    assert feeding["messages_in"] == 23
    assert feeding["frames_in"] >= 25  # logon + 23 publishes + flush
    assert feeding["bytes_in"] > 20 * 50
    assert watching["bytes_out"] > 14 * 50
    assert feeding["subscriptions"] == []
    for client in (watching, feeding):
        assert isinstance(client["queue_depth_bytes"], int) and client["queue_depth_bytes"] >= 0
        assert client["spooled_bytes"] == 0
        assert re.fullmatch(r"\d+\.\d+\.\d+", client["id"])
        assert server.get(f"/amps/instance/clients/{client['id']}/name").json() == client["name"]
    # The flat subscription list and the topics.
    assert {"client": watching["id"], "client_name": "tree-watcher", "sub_id": "s1", "topic": "orders",
            "filter": "/id > 5", "bookmark": None, "paused": False} in tree["subscriptions"]
    orders = tree["topics"]["orders"]
    assert orders["messages_in"] == 20 and orders["deliveries"] == 14 and orders["subscriptions"] == 1
    assert orders["bytes_in"] > 20 * 50 and orders["sow"] is None
    positions = server.get("/amps/instance/topics/positions").json()
    assert positions["messages_in"] == 3
    assert positions["sow"]["records"] == 3 and positions["sow"]["bytes_used"] > 0
    assert server.get("/amps/instance/sow/positions/records").json() == 3


def test_latency_histograms_and_journal_throughput(server, raw):
    conn = raw()
    conn.logon("latency-test")
    conn.subscribe("journaled", "j1")
    published = 30
    for index in range(published):
        conn.publish("orders", f'{{"id":{index}}}')
        conn.publish("journaled", f'{{"id":{index}}}')
    conn.flush()

    def routed():
        samples, types = parse_exposition(server.get("/metrics").body)
        count = samples[("tachyon_route_latency_seconds_count", frozenset())]
        written = samples[("tachyon_journal_records_written_total", frozenset())]
        return (samples, types) if count >= 2 * published and written >= published else None

    samples, types = wait_for(routed, what="route latency and journal writes to be counted")
    assert types["tachyon_route_latency_seconds"] == "histogram"
    assert types["tachyon_journal_write_latency_seconds"] == "histogram"
    # Routing on loopback takes well under a second, and a journal write under the top bucket.
    under_a_second = samples[("tachyon_route_latency_seconds_bucket", frozenset({("le", "1.048576")}))]
    assert under_a_second == samples[("tachyon_route_latency_seconds_count", frozenset())]
    assert samples[("tachyon_journal_write_latency_seconds_count", frozenset())] >= 1
    assert samples[("tachyon_journal_writes_total", frozenset())] >= 1
    assert samples[("tachyon_journal_bytes_written_total", frozenset())] >= published * 4096 / 4096
    assert samples[("tachyon_clients", frozenset())] >= 1
    assert samples[("tachyon_subscriptions", frozenset())] >= 1
    # The tree gives the same histograms with quantile bounds.
    route = server.get("/amps/instance/latency/route").json()
    assert route["count"] >= 2 * published
    assert isinstance(route["p50_us_at_most"], int) and route["p50_us_at_most"] <= route["p99_us_at_most"]
    assert sum(route["bucket_counts"]) == route["count"]
    journal = server.get("/amps/instance/journal").json()
    assert journal["records_written"] >= published and journal["writes"] >= 1
    assert journal["write_latency"]["count"] == journal["writes"]


def test_disconnect_action_closes_the_named_client(server, raw):
    victim = raw()
    victim.logon("disconnect-me")
    bystander = raw()
    bystander.logon("stays-connected")
    wait_for(lambda: client_named(server, "disconnect-me"), what="the client to be listed")

    assert server.get("/amps/administrator/clients/disconnect-me/disconnect").status == 405
    reply = server.request("POST", "/amps/administrator/clients/disconnect-me/disconnect")
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["status"] == "disconnected" and answer["name"] == "disconnect-me"
    # The client sees its connection end; the other client does not.
    frames, _ = victim.read_until_closed(5)
    assert client_named(server, "disconnect-me") is None
    assert client_named(server, "stays-connected") is not None
    bystander.publish("orders", '{"id":1}')
    bystander.flush()
    # The log names the client and says an operator asked.
    line = wait_for(
        lambda: next((l for l in server.log_text().splitlines() if "disconnect-me" in l and "operator" in l), None),
        what="the disconnect log line",
    )
    assert "disconnecting" in line
    # By connection id too; an unknown client is a 404 that lists who is connected.
    by_id = client_named(server, "stays-connected")["id"]
    assert server.request("POST", f"/amps/administrator/clients/{by_id}/disconnect").json()["status"] == "disconnected"
    missing = server.request("POST", "/amps/administrator/clients/nobody/disconnect")
    assert missing.status == 404 and missing.json()["client"] == "nobody"
    assert isinstance(missing.json()["clients"], list)


def test_rotate_log_action(server, raw):
    before = server.log_path.read_text()
    assert "listening" in before
    reply = server.request("POST", "/amps/administrator/logging/rotate")
    assert reply.status == 200, reply.body
    assert reply.json()["status"] == "rotated"
    # The old file is compressed in the background ([logging] compress defaults to true).
    rotated = wait_for(lambda: sorted(server.workdir.glob("tachyon.log.*[0-9].gz")), what="a rotated log file")
    assert len(rotated) == 1 and rotated[0].stat().st_size > 0
    assert "listening" in gzip.decompress(rotated[0].read_bytes()).decode()
    # The new file starts after the rotation and gets the lines that follow.
    wait_for(lambda: "log file rotated (admin API)" in server.log_path.read_text(), what="the rotation line")
    conn = raw()
    conn.logon("after-rotation")
    wait_for(lambda: "after-rotation" in server.log_path.read_text(), what="a client line in the new file")
    assert "listening" not in server.log_path.read_text()


def test_actions_sent_by_a_web_page_from_another_origin_are_refused(server, raw):
    conn = raw()
    conn.logon("csrf-target")
    wait_for(lambda: client_named(server, "csrf-target"), what="the client to be listed")
    path = "/amps/administrator/clients/csrf-target/disconnect"
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = server.request("POST", path, headers=headers)
        assert refused.status == 403, (headers, refused.body)
        assert "another origin" in refused.json()["error"]
        assert server.request("POST", "/amps/administrator/logging/rotate", headers=headers).status == 403
    assert client_named(server, "csrf-target") is not None, "a refused action changed nothing"
    # The admin API's own origin (its dashboard) is allowed.
    own = server.request("POST", path, headers={"Origin": server.admin, "Sec-Fetch-Site": "same-origin"})
    assert own.status == 200, own.body
