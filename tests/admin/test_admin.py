"""The admin API of the running binary: health, the /amps/instance tree, Prometheus /metrics.

Traffic is sent with the raw AMPS client so the counters have something to count; every check
reads the answer over real HTTP from the real process.
"""

from __future__ import annotations

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
    label other than `shard` (and `version` on tachyon_build_info).
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
            assert kind in ("counter", "gauge"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        series, value = line.rsplit(" ", 1)
        value = float(value)
        assert not math.isnan(value), line
        name, _, labels = series.partition("{")
        assert name == current and name in types, f"{line!r} is outside its family's block"
        if types[name] == "counter":
            assert name.endswith("_total") and value >= 0, line
        pairs = {}
        if labels:
            assert labels.endswith("}"), line
            for pair in labels[:-1].split(","):
                match = LABEL.fullmatch(pair)
                assert match, line
                pairs[match.group(1)] = match.group(2)
        allowed = {"version"} if name == "tachyon_build_info" else {"shard"}
        assert set(pairs) <= allowed, f"{line!r}: unbounded or unknown label"
        key = (name, frozenset(pairs.items()))
        assert key not in samples, f"duplicate series {series}"
        samples[key] = value
    assert helps == set(types), "every family has HELP and TYPE"
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
